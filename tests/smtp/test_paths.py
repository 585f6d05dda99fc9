"""The submission server reads ``<local@domain>`` paths without aiosmtpd's general parser;
whatever that shortcut accepts, it must read exactly as aiosmtpd's parser does."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.smtp.server import _LimitedSMTP

_PROBE = _LimitedSMTP.__new__(_LimitedSMTP)  # _getaddr reads only class settings
_WORDS = st.sampled_from(["a", "Zed", "x-y", "b.c", "o'k", "q+tag", "", "é", "1", "{|}~"])
_NOISE = st.sampled_from(["<", ">", "@", ".", " ", '"', "\\", "(c)", ",", ":", "[1.2.3.4]",
                          "\t"])
_TAILS = st.sampled_from(["", " SIZE=100", " BODY=8BITMIME SMTPUTF8", "  x", ">"])


@st.composite
def _paths(draw: st.DrawFn) -> str:
    value = f"<{draw(_WORDS)}@{draw(_WORDS)}>{draw(_TAILS)}"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(_NOISE) + value[at:]
    return value


@settings(max_examples=1000, deadline=None)
@given(_paths())
def test_the_path_shortcut_agrees_with_aiosmtpd(arg: str) -> None:
    assert _PROBE._getaddr(arg) == SMTP._getaddr(_PROBE, arg)


def test_the_common_paths_take_the_shortcut() -> None:
    for arg, expected in (("<a@b.c>", ("a@b.c", "")),
                          ("<x.y+z@h.example> SIZE=12", ("x.y+z@h.example", "SIZE=12"))):
        assert _PROBE._getaddr(arg) == expected == SMTP._getaddr(_PROBE, arg)
    for arg in ("<a@b> (comment) SIZE=1", "<a@[1.2.3.4]>", '<"a b"@c>', "a@b", "<>"):
        assert _PROBE._getaddr(arg) == SMTP._getaddr(_PROBE, arg)
