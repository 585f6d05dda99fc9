"""Trace headers added on top of a message; the submitted bytes below them stay untouched."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime


def received_header(by: str, via: str, when: datetime, extra: str = "") -> bytes:
    """An RFC 5321 §4.4 style ``Received:`` line (CRLF-terminated)."""
    clause = f"; {extra}" if extra else ""
    return (f"Received: by {by} with {via}{clause};\r\n\t{format_datetime(when)}\r\n"
            ).encode("ascii")


def split_headers(message: bytes) -> bytes:
    """The header block of a message (for delivery status notifications)."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]
