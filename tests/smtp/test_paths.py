"""The submission server reads ``<local@domain>`` paths with one regular expression and
anything else with the standard library's parser; whatever it reads, it must read exactly as
aiosmtpd (the server it replaced, still installed as the benchmark's baseline) did."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.smtp.protocol import parse_path

_AIOSMTPD = SMTP.__new__(SMTP)  # _getaddr reads only class settings
_WORDS = st.sampled_from(["a", "Zed", "x-y", "b.c", "o'k", "q+tag", "", "é", "1", "{|}~"])
_NOISE = st.sampled_from(["<", ">", "@", ".", " ", '"', "\\", "(c)", ",", ":", "[1.2.3.4]",
                          "\t"])
_TAILS = st.sampled_from(["", " SIZE=100", " BODY=8BITMIME SMTPUTF8", "  x", ">"])


def aiosmtpd(arg: str) -> tuple[str | None, str]:
    address, rest = _AIOSMTPD._getaddr(arg)
    return address, rest or ""


@st.composite
def _paths(draw: st.DrawFn) -> str:
    value = f"<{draw(_WORDS)}@{draw(_WORDS)}>{draw(_TAILS)}"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(_NOISE) + value[at:]
    return value


@settings(max_examples=1000, deadline=None)
@given(_paths())
def test_paths_are_read_as_aiosmtpd_read_them(arg: str) -> None:
    assert parse_path(arg) == aiosmtpd(arg)


def test_the_common_and_the_unusual_paths() -> None:
    for arg, expected in (("<a@b.c>", ("a@b.c", "")),
                          ("<x.y+z@h.example> SIZE=12", ("x.y+z@h.example", "SIZE=12")),
                          ('<"a b"@c>', ('"a b"@c', "")),  # a quoted local part keeps quotes
                          ("<@relay.example:a@b>", ("a@b", "")),  # a source route is dropped
                          ("<>", ("<>", "")), ("", ("", ""))):
        assert parse_path(arg) == expected == aiosmtpd(arg)
    for arg in ("<a@b> (comment) SIZE=1", "<a@[1.2.3.4]>", "a@b", "<a@b", "<\udcff>", "@"):
        assert parse_path(arg) == aiosmtpd(arg)
