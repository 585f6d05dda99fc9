"""Reading and adding headers without touching the submitted bytes below them."""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime
from typing import NamedTuple

from crypto.address import DOMAIN, AddressError, normalise
from mailnode.mime.address import parse_addresses
from mailnode.mime.headers import field_pattern, fields, text

# Header fields a mail client could read as this node's verdict on the sender. The legacy
# X-Mailnode-Verified-Sender was written by older nodes; nobody may bring one in.
_CLAIM_FIELD = re.compile(rb"^(authentication-results|x-mailnode-verified-sender)[ \t]*:",
                          re.IGNORECASE | re.MULTILINE)
_FIELD_END = re.compile(rb"\n(?![ \t])")  # a line break not followed by a continuation
_HEADER_END = re.compile(rb"\n\r?\n")  # a line end, then the empty line before the body
_COMMENT = re.compile(rb"\((?:[^()\\]|\\.)*\)", re.DOTALL)  # innermost (comment)
_ID_PREFIX = 1024  # the authserv-id opens the field; no need to look further for it


def received_header(by: str, via: str, when: datetime, extra: str = "") -> bytes:
    """An RFC 5321 §4.4 style ``Received:`` line (CRLF-terminated)."""
    clause = f"; {extra}" if extra else ""
    return (f"Received: by {by} with {via}{clause};\r\n\t{format_datetime(when)}\r\n"
            ).encode("ascii")


def header_end(message: bytes) -> int:
    """Where the header block ends: just after its last line's line break (CRLF or a bare
    LF); the whole message when no empty line follows it, 0 when it has no header at all."""
    if message.startswith((b"\r\n", b"\n")):
        return 0
    end = _HEADER_END.search(message)
    return len(message) if end is None else end.start() + 1


_FROM = field_pattern(("From",))


def authors(message: bytes, end: int | None = None) -> list[str] | None:
    """The ``From:`` addresses in canonical form, or None if there is no usable From.

    Used on both ends: submission only lets users write as themselves, and a receiving
    node only believes a From that matches the key that signed the envelope. The parsers
    are mailnode.mime's: linear and bounded whatever the header holds (the stdlib's
    recursed on nested comments). ``end``: ``header_end(message)``, when known.
    """
    values, _ = fields(message, 0, header_end(message) if end is None else end, _FROM)
    addresses = [a for _, value in values for a in parse_addresses(text(value))[0]
                 if a.host is not None]  # group start/end markers carry no host
    if not addresses:
        return None
    try:
        return [normalise(f"{a.mailbox or ''}@{a.host}") for a in addresses]
    except AddressError:
        return None


class Vetted(NamedTuple):
    """What ``vet`` found, with the header end of the message it returns (the DSN headers
    of a queued copy are cut there: no third search)."""

    authors: list[str] | None
    message: bytes  # without forged claims in our name
    header_end: int  # ``header_end(message)``


def vet(message: bytes, server_id: str) -> Vetted:
    """What the node checks in a message before filing or queueing it, as one job for a
    worker thread (both are linear but a hostile header block may be the whole message):
    its ``authors`` and the message without forged claims in our name (``strip_claims``),
    with the header block found once for all three."""
    end = header_end(message)
    stripped = strip_claims(message, server_id, end)
    return Vetted(authors(message, end), stripped,
                  end if stripped is message else header_end(stripped))


def authserv_id(node_key: bytes) -> str:
    """This node's RFC 8601 authserv-id: the 16 hex digits ``mailnode status`` shows as the
    node id, under the reserved ``.invalid`` domain mailnode addresses use. Stable for the
    life of the node key, distinct per node."""
    return f"{node_key.hex()[:16]}.{DOMAIN}"


def authentication_results(server_id: str, sender: str, how: str) -> bytes:
    """The node's verdict on the sender (RFC 8601), CRLF-terminated, to prepend.

    ``mailnode`` is not an IANA-registered method; it means: this node verified that the
    From address belongs to whoever sent the message (a signature by the address's key, or
    the logged-in user). ``how`` is a comment saying which.
    """
    return (f"Authentication-Results: {server_id};\r\n\tmailnode=pass ({how}) "
            f"header.from={sender}\r\n").encode("ascii")


def strip_claims(message: bytes, server_id: str, end: int | None = None) -> bytes:
    """``message`` without header fields that claim to be this node's verdict.

    Removes every ``Authentication-Results`` field naming ``server_id`` (RFC 8601 section 5:
    ours can only be genuine if we add it) and every legacy ``X-Mailnode-Verified-Sender``;
    fields of other authserv-ids stay. Works on the raw bytes: everything else, including
    folding and bare-LF line ends, is kept byte for byte. Only regex scans without
    backtracking, so the cost is linear in the header size. ``end``: ``header_end(message)``,
    when known.
    """
    limit = header_end(message) if end is None else end
    if not limit:
        return message  # no header section
    head = message[:limit].lower()
    if b"authentication-results" not in head and b"x-mailnode-verified-sender" not in head:
        return message  # the usual case, decided without the field scan
    ours = server_id.lower().encode("ascii")
    pieces: list[bytes] = []
    kept = 0
    for match in _CLAIM_FIELD.finditer(message, 0, limit):
        if match.start() < kept:
            continue
        stop = _FIELD_END.search(message, match.end(), limit)
        field_end = limit if stop is None else stop.start() + 1
        if match.group(1).lower() == b"authentication-results" and \
                not _names(message[match.end():field_end], ours):
            continue
        pieces.append(message[kept:match.start()])
        kept = field_end
    if not pieces:
        return message
    pieces.append(message[kept:])
    return b"".join(pieces)


def _names(value: bytes, ours: bytes) -> bool:
    """Whether an Authentication-Results value could be read as naming ``ours``: anywhere in
    it, or as its authserv-id once comments, quotes and folding are taken out (erring towards
    removal: dropping another server's field is harmless, keeping a forged one is not)."""
    lowered = value.lower()
    if ours in lowered:
        return True
    head = lowered[:_ID_PREFIX]
    while b"(" in head:  # nested comments, innermost first; bounded by _ID_PREFIX
        shorter = _COMMENT.sub(b"", head)
        if shorter == head:
            break
        head = shorter
    return ours in head.translate(None, b" \t\r\n\"")
