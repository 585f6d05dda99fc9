"""Formatting of response data: strings, literals, flag lists, dates, parenthesised lists."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SYSTEM_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")


_UNQUOTABLE = re.compile(rb"[\r\n\x00\x7f-\xff]")
"""What a quoted string cannot carry (found in C: ENVELOPE renders several per message)."""


class Literal(bytes):
    """Bytes that must go on the wire as a ``{n}`` literal, never quoted."""


def string(value: bytes | str | None) -> bytes:
    """``NIL``, a quoted string when safe, else a literal (CR, LF, NUL or 8-bit content)."""
    if value is None:
        return b"NIL"
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if isinstance(value, Literal) or len(raw) > 1024 or _UNQUOTABLE.search(raw):
        return b"{%d}\r\n" % len(raw) + raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: bytes) -> bytes:
    """Always a literal: message data is sent this way so its bytes stay untouched."""
    return b"{%d}\r\n" % len(value) + value


def flags(values: Iterable[str]) -> bytes:
    """A flag list with system flags first in a stable order, keywords sorted after."""
    present = set(values)
    ordered = [f for f in _SYSTEM_ORDER if f in present]
    ordered += sorted(present - set(_SYSTEM_ORDER))
    return b"(" + " ".join(ordered).encode("ascii", "replace") + b")"


def date_time(value: datetime) -> bytes:
    """IMAP ``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (naive datetimes are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    text = (f'"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
            f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} '
            f'{sign}{minutes // 60:02d}{minutes % 60:02d}"')
    return text.encode("ascii")


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised, space-separated list of already formatted items."""
    return b"(" + b" ".join(items) + b")"
