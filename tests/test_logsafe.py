"""Log escaping: no value from the network can break a log line or reach the terminal raw."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailnode.logsafe import clean


def test_control_characters_are_escaped() -> None:
    assert clean("bob\r\nmailnode: login ok user=root") == \
        "bob\\r\\nmailnode: login ok user=root"
    assert clean("\x1b[31mred") == "\\x1b[31mred"
    assert clean(b"caf\xc3\xa9 \xff") == "café \\xff"


def test_long_values_are_cut() -> None:
    assert clean("x" * 1000, limit=10) == "x" * 10 + "..."


@given(st.one_of(st.text(), st.binary()))
def test_result_is_one_printable_line(value: str | bytes) -> None:
    out = clean(value)
    assert out.isprintable()
    assert len(out) <= 4 * 200 + 3 + 10 * 200
