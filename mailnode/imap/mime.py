"""ENVELOPE, BODY/BODYSTRUCTURE and ``BODY[section]`` from a stored
:class:`~mailnode.mime.MessageStructure`: rendering and slicing only, no MIME parsing here
(the structure is computed once, by :func:`mailnode.mime.analyse`)."""

from __future__ import annotations

import re

from mailnode.imap.responses import plist, string
from mailnode.mime import Address, Envelope, MessageStructure, Part, analyse
from mailnode.mime.headers import select_fields
from mailnode.mime.model import Params

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_EMPTY_TEXT = b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0'


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """Header (including the empty line that ends it) and body."""
    if raw.startswith(b"\r\n"):
        return b"\r\n", raw[2:]
    if raw.startswith(b"\n"):
        return b"\n", raw[1:]
    m = _HEADER_END.search(raw)
    if m is None:
        return raw, b""
    return raw[:m.end()], raw[m.end():]


# --- section extraction -------------------------------------------------------------------

header_fields = select_fields
"""HEADER.FIELDS and .NOT of a header block (the line walk lives with the stored fields it
must agree with)."""


def find_part(root: Part, parts: tuple[int, ...]) -> Part | None:
    """Follow a section part path (``1.2``) from the top-level message (RFC 3501 §6.4.5:
    a part number inside a message/rfc822 part counts the parts of the message it holds)."""
    node = root
    for index, n in enumerate(parts):
        if index > 0 and node.message is not None:
            node = node.message
        if node.children:
            if not 0 < n <= len(node.children):
                return None
            node = node.children[n - 1]
        elif n != 1 or node.content_type[0] == "multipart":
            return None
    return node


def section_bytes(raw: bytes, structure: MessageStructure | None, parts: tuple[int, ...],
                  text: str | None, fields: tuple[str, ...]) -> bytes:
    """The bytes of ``BODY[section]``, sliced out of ``raw`` by walking the stored tree; a
    section that does not exist is empty."""
    if not parts and text is None:
        return raw
    root = (structure or analyse(raw)).root
    node = find_part(root, parts)
    if node is None:
        return b""
    if text is None:
        return raw[node.body_start:node.end]
    if text == "MIME":
        return raw[node.header_start:node.body_start]
    if parts:
        if node.message is None:
            return b""
        node = node.message
    if text == "HEADER":
        return raw[node.header_start:node.body_start]
    if text == "TEXT":
        return raw[node.body_start:node.end]
    return header_fields(raw[node.header_start:node.body_start], fields,
                         exclude=text == "HEADER.FIELDS.NOT")


# --- ENVELOPE / BODYSTRUCTURE ----------------------------------------------------------------


def _s(value: str | None) -> bytes:
    """A stored value back to its original bytes, as an IMAP nstring."""
    return string(None if value is None else value.encode("utf-8", "surrogateescape"))


def _addresses(addrs: tuple[Address, ...]) -> bytes:
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(plist([_s(a.name), _s(a.adl), _s(a.mailbox), _s(a.host)])
                           for a in addrs) + b")"


def envelope(item: MessageStructure | Part) -> bytes:
    """RFC 3501 ENVELOPE; sender and reply-to default to from, as §7.4.2 requires."""
    part = item.root if isinstance(item, MessageStructure) else item
    if part.envelope is None and part.message is not None:
        part = part.message
    env = part.envelope or Envelope()
    sender = env.sender or env.from_
    reply_to = env.reply_to or env.from_
    return plist([
        _s(env.date), _s(env.subject), _addresses(env.from_), _addresses(sender),
        _addresses(reply_to), _addresses(env.to), _addresses(env.cc), _addresses(env.bcc),
        _s(env.in_reply_to), _s(env.message_id),
    ])


def _params(params: Params) -> bytes:
    if not params:
        return b"NIL"
    items: list[bytes] = []
    for key, value in params:
        items += [_s(key.upper()), _s(value)]
    return plist(items)


def _disposition(part: Part) -> bytes:
    if part.disposition is None:
        return b"NIL"
    kind, params = part.disposition
    return plist([_s(kind.upper()), _params(params)])


def bodystructure(part: Part, extended: bool) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY: the stored tree as RFC 3501 §7.4.2 lays it
    out. Recursion follows the tree, whose depth ``analyse`` bounds."""
    maintype, subtype = part.content_type
    if maintype == "multipart":
        # A multipart needs at least one body (RFC 3501 body-type-mpart): an empty text part
        # stands in when no delimiter was found.
        children = [bodystructure(ch, extended) for ch in part.children] or \
            [_EMPTY_TEXT + (b" NIL NIL NIL NIL)" if extended else b")")]
        out = b"(" + b"".join(children) + b" " + _s(subtype.upper())
        if extended:
            out += b" " + b" ".join([_params(part.params), _disposition(part),
                                     _s(part.language), _s(part.location)])
        return out + b")"
    encoding = (part.encoding or "").upper() or "7BIT"
    items = [_s(maintype.upper()), _s(subtype.upper()), _params(part.params), _s(part.id),
             _s(part.description), _s(encoding), b"%d" % (part.end - part.body_start)]
    if (maintype, subtype) == ("message", "rfc822") and part.message is not None:
        items += [envelope(part.message), bodystructure(part.message, extended),
                  b"%d" % part.lines]
    elif maintype == "text":
        items.append(b"%d" % part.lines)
    if extended:
        items += [_s(part.md5), _disposition(part), _s(part.language), _s(part.location)]
    return plist(items)
