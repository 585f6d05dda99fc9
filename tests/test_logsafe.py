"""Log escaping: no value from the network can break a log line or reach the terminal raw."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailnode.logsafe import LOG_FORMAT, LogThrottle, SafeFormatter, clean, held_back

ROOT = Path(__file__).resolve().parent.parent


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


def _render(msg: str, *args: object, exc: bool = False) -> str:
    record = logging.LogRecord("mail.log", logging.WARNING, __file__, 1, msg, args,
                               sys.exc_info() if exc else None)
    return SafeFormatter(LOG_FORMAT).format(record)


def test_formatter_escapes_values_a_call_site_forgot() -> None:
    line = _render("%r unrecognised: %s", ("10.0.0.1", 4),
                   "X\r\n2026-01-01 INFO mailnode.smtp.server: smtp login user=root\x1b[2J")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith("X\\r\\n2026-01-01 INFO mailnode.smtp.server: smtp login "
                         "user=root\\x1b[2J")


def test_formatter_keeps_a_bugs_traceback_readable_but_escaped() -> None:
    try:
        raise ValueError("peer said \x1b[31m\rhello")
    except ValueError:
        out = _render("internal error in %s", "FETCH\nforged", exc=True)
    first, *rest = out.split("\n")
    assert first.endswith("internal error in FETCH\\nforged")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: peer said \\x1b[31m\\rhello"


@given(st.text(), st.text())
def test_every_rendered_message_is_one_printable_line(msg: str, arg: str) -> None:
    line = _render(msg.replace("%", "") + " %s", arg)
    assert line.isprintable()


def test_the_commands_log_handler_escapes_aiosmtpd_lines() -> None:
    """The handler ``mailnode run`` installs: a command line from a client, as aiosmtpd
    logs it at WARNING, arrives as one escaped line."""
    code = ("import logging; from mailnode.cli import _configure_logging; "
            "_configure_logging(False, True); "
            "logging.getLogger('mail.log').warning('%r unrecognised: %s', ('1.2.3.4', 5), "
            "'EVIL\\r\\nfake INFO mailnode: ok\\x1b[0m')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr.count(b"\n") == 1
    assert b"\r" not in proc.stderr and b"\x1b" not in proc.stderr
    assert proc.stderr.rstrip(b"\n").endswith(b"EVIL\\r\\nfake INFO mailnode: ok\\x1b[0m")


def test_log_throttle_holds_back_a_flood_and_reports_it() -> None:
    now = [0.0]
    throttle = LogThrottle(per_minute=3, clock=lambda: now[0])
    decisions = [throttle.allow("203.0.113.5") for _ in range(10)]
    assert decisions == [0, 0, 0] + [None] * 7
    assert throttle.allow("198.51.100.1") == 0  # another address is not held back
    now[0] += 20.0  # one line's worth of rate has come back
    assert throttle.allow("203.0.113.5") == 7
    assert held_back(7) == " (7 similar lines held back)" and held_back(0) == ""
