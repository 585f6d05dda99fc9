"""Reading and adding headers without touching the submitted bytes below them."""

from __future__ import annotations

from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, getaddresses

from crypto.address import AddressError, normalise


def received_header(by: str, via: str, when: datetime, extra: str = "") -> bytes:
    """An RFC 5321 §4.4 style ``Received:`` line (CRLF-terminated)."""
    clause = f"; {extra}" if extra else ""
    return (f"Received: by {by} with {via}{clause};\r\n\t{format_datetime(when)}\r\n"
            ).encode("ascii")


def split_headers(message: bytes) -> bytes:
    """The header block of a message (for delivery status notifications)."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def authors(message: bytes) -> list[str] | None:
    """The ``From:`` addresses in canonical form, or None if there is no usable From.

    Used on both ends: submission only lets users write as themselves, and a receiving
    node only believes a From that matches the key that signed the envelope.
    """
    fields = BytesHeaderParser(policy=compat32).parsebytes(split_headers(message))
    values = [str(v) for v in fields.get_all("From", [])]
    pairs = getaddresses(values)
    if not pairs:
        return None
    try:
        return [normalise(address) for _, address in pairs]
    except AddressError:
        return None
