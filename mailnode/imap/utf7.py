"""Modified UTF-7 (RFC 3501 §5.1.3): how mailbox names with non-ASCII characters travel."""

from __future__ import annotations

import base64


class Utf7Error(ValueError):
    """The name is not valid modified UTF-7."""


def encode(name: str) -> bytes:
    """Encode a mailbox name for the wire."""
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.extend(b"&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def decode(raw: bytes) -> str:
    """Decode a wire mailbox name; raw UTF-8 (sent by some clients) is accepted too."""
    if any(b > 0x7E for b in raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Utf7Error("mailbox name is neither modified UTF-7 nor UTF-8") from exc
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c != 0x26:  # '&'
            out.append(chr(c))
            i += 1
            continue
        end = raw.find(b"-", i + 1)
        if end < 0:
            raise Utf7Error("unterminated shift sequence in mailbox name")
        chunk = raw[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(b",", b"/")
            b64 += b"=" * (-len(b64) % 4)
            try:
                text = base64.b64decode(b64, validate=True).decode("utf-16-be")
            except (ValueError, UnicodeDecodeError) as exc:
                raise Utf7Error("bad modified UTF-7 in mailbox name") from exc
            # Only the one canonical spelling is valid (RFC 3501 5.1.3): printable ASCII is
            # never shifted, and "/", "=" or stray low bits would give a second name for the
            # same mailbox.
            if encode(text) != raw[i:end + 1]:
                raise Utf7Error("bad modified UTF-7 in mailbox name")
            out.append(text)
        i = end + 1
    return "".join(out)


def decode_pattern(raw: bytes) -> str:
    """A LIST/LSUB reference or pattern: one that is not valid modified UTF-7 names no
    mailbox, so it is taken byte for byte (matching nothing a valid name decodes to, except
    by the same characters) instead of failing the command."""
    try:
        return decode(raw)
    except Utf7Error:
        return raw.decode("latin-1")
