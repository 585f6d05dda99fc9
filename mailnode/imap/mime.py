"""MIME structure over raw bytes: section extraction stays byte-exact, and ENVELOPE and
BODYSTRUCTURE come from the stdlib ``email`` header parser."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value, getaddresses

from mailnode.imap.responses import plist, string

MAX_DEPTH = 32
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class Entity:
    """One MIME entity: its header (with the blank line), body, and sub-entities."""

    header: bytes
    body: bytes
    fields: Message
    children: list[Entity] = field(default_factory=list)
    encapsulated: Entity | None = None

    @property
    def content_type(self) -> tuple[str, str]:
        maintype, _, subtype = self.fields.get_content_type().partition("/")
        return maintype, subtype


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


def parse(raw: bytes, *, digest: bool = False, depth: int = 0) -> Entity:
    """Build the entity tree; nesting beyond ``MAX_DEPTH`` is treated as opaque data."""
    header, body = split_header(raw)
    fields = BytesHeaderParser(policy=compat32).parsebytes(header)
    if digest and "content-type" not in fields:
        fields.set_default_type("message/rfc822")
    entity = Entity(header, body, fields)
    if depth >= MAX_DEPTH:
        return entity
    maintype, subtype = entity.content_type
    if maintype == "multipart":
        boundary = fields.get_param("boundary")
        if isinstance(boundary, str) and boundary:
            entity.children = [parse(part, digest=subtype == "digest", depth=depth + 1)
                               for part in split_multipart(body, boundary)]
    elif (maintype, subtype) == ("message", "rfc822"):
        entity.encapsulated = parse(body, depth=depth + 1)
    return entity


def split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The parts between boundary delimiters; the CRLF before a delimiter belongs to it."""
    delim = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("utf-8", "surrogateescape"))
                       + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[bytes] = []
    start: int | None = None
    for m in delim.finditer(body):
        if start is not None:
            parts.append(body[start:m.start()])
        if m.group(1):
            return parts
        start = m.end()
    if start is not None:
        parts.append(body[start:])
    return parts


def find_part(root: Entity, parts: tuple[int, ...]) -> Entity | None:
    """Follow a section part path (``1.2``) from the top-level message."""
    node = root
    for index, n in enumerate(parts):
        if index > 0 and node.encapsulated is not None:
            node = node.encapsulated
        if node.children:
            if n > len(node.children):
                return None
            node = node.children[n - 1]
        elif n != 1 or node.content_type[0] == "multipart":
            return None
    return node


def header_fields(header: bytes, names: tuple[str, ...], *, exclude: bool) -> bytes:
    """The header lines whose field name is (or, with ``exclude``, is not) in ``names``."""
    wanted = {n.upper() for n in names}
    out = bytearray()
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out += line
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").upper()
        keep = (name in wanted) != exclude
        if keep:
            out += line
    return bytes(out) + b"\r\n"


def section_bytes(raw: bytes, parts: tuple[int, ...], text: str | None,
                  fields: tuple[str, ...]) -> bytes:
    """The bytes of ``BODY[section]``; a section that does not exist is empty."""
    if not parts and text is None:
        return raw
    root = parse(raw)
    node = find_part(root, parts)
    if node is None:
        return b""
    if text is None:
        return node.body
    if text == "MIME":
        return node.header
    if parts:
        if node.encapsulated is None:
            return b""
        node = node.encapsulated
    if text == "HEADER":
        return node.header
    if text == "TEXT":
        return node.body
    return header_fields(node.header, fields, exclude=text == "HEADER.FIELDS.NOT")


# --- ENVELOPE / BODYSTRUCTURE ----------------------------------------------------------------


def _raw(value: str) -> bytes:
    return re.sub(r"\r?\n(?=[ \t])", "", value).encode("utf-8", "surrogateescape")


def _nvalue(fields: Message, name: str) -> bytes:
    value = fields.get(name)
    return string(None if value is None else _raw(str(value)))


def _addresses(fields: Message, name: str) -> bytes:
    values = fields.get_all(name)
    if not values:
        return b"NIL"
    out = []
    for display, addr in getaddresses([str(v) for v in values]):
        if not display and not addr:
            continue
        mailbox, at, host = addr.rpartition("@")
        if not at:
            mailbox, host = addr, ""
        out.append(plist([string(_raw(display) if display else None), b"NIL",
                          string(_raw(mailbox) if mailbox else None),
                          string(_raw(host) if host else None)]))
    return b"(" + b"".join(out) + b")" if out else b"NIL"


def envelope(entity: Entity) -> bytes:
    """RFC 3501 ENVELOPE; sender and reply-to default to from, as §7.4.2 requires."""
    f = entity.fields
    sender_from = _addresses(f, "from")
    sender = _addresses(f, "sender")
    reply_to = _addresses(f, "reply-to")
    return plist([
        _nvalue(f, "date"), _nvalue(f, "subject"), sender_from,
        sender if sender != b"NIL" else sender_from,
        reply_to if reply_to != b"NIL" else sender_from,
        _addresses(f, "to"), _addresses(f, "cc"), _addresses(f, "bcc"),
        _nvalue(f, "in-reply-to"), _nvalue(f, "message-id"),
    ])


def _params(fields: Message, header: str) -> bytes:
    params = fields.get_params(header=header)
    if not params or len(params) < 2:
        return b"NIL"
    items: list[bytes] = []
    for key, value in params[1:]:
        text = collapse_rfc2231_value(value) if isinstance(value, tuple) else value
        items += [string(key.upper()), string(_raw(str(text)))]
    return plist(items)


def _disposition(fields: Message) -> bytes:
    value = fields.get("content-disposition")
    if value is None:
        return b"NIL"
    kind = str(value).split(";", 1)[0].strip()
    return plist([string(_raw(kind.upper())), _params(fields, "content-disposition")])


def _lines(body: bytes) -> int:
    return body.count(b"\n")


def bodystructure(entity: Entity, *, extended: bool) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY: the MIME tree as RFC 3501 §7.4.2 lays it out."""
    f = entity.fields
    maintype, subtype = entity.content_type
    if maintype == "multipart":
        children = entity.children or [parse(b"\r\n")]
        out = b"(" + b"".join(bodystructure(ch, extended=extended) for ch in children)
        out += b" " + string(subtype.upper())
        if extended:
            out += b" " + b" ".join([_params(f, "content-type"), _disposition(f),
                                     _nvalue(f, "content-language"),
                                     _nvalue(f, "content-location")])
        return out + b")"
    params = _params(f, "content-type")
    if params == b"NIL" and "content-type" not in f and maintype == "text":
        params = plist([b'"CHARSET"', b'"us-ascii"'])
    encoding = str(f.get("content-transfer-encoding", "7BIT")).strip().upper() or "7BIT"
    items = [string(maintype.upper()), string(subtype.upper()), params,
             _nvalue(f, "content-id"), _nvalue(f, "content-description"),
             string(encoding), str(len(entity.body)).encode()]
    if (maintype, subtype) == ("message", "rfc822") and entity.encapsulated is not None:
        items += [envelope(entity.encapsulated),
                  bodystructure(entity.encapsulated, extended=extended),
                  str(_lines(entity.body)).encode()]
    elif maintype == "text":
        items.append(str(_lines(entity.body)).encode())
    if extended:
        items += [_nvalue(f, "content-md5"), _disposition(f), _nvalue(f, "content-language"),
                  _nvalue(f, "content-location")]
    return plist(items)
