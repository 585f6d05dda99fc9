"""Escaping for values that came from the network before they reach a log line.

A login name or SMTP argument containing CR/LF or terminal escapes could otherwise forge log
lines (and fool fail2ban) or drive the operator's terminal. ``clean`` is what call sites use
for such values; it is cheap, never raises and bounds the length.
"""

from __future__ import annotations

_LIMIT = 200


def clean(value: object, limit: int = _LIMIT) -> str:
    """``value`` as a printable, single-line, length-bounded string (repr-style escapes)."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[:limit * 4]).decode("utf-8", "backslashreplace")
    else:
        text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
