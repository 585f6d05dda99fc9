"""BINARY (RFC 3516): FETCH BINARY[]/BINARY.PEEK[]/BINARY.SIZE[] with the content transfer
encoding undone, and APPEND of binary content sent as a literal8.

Decoding is one linear pass over a part that is already in memory (FETCH loads the message),
and its result is never larger than the part, so a FETCH holds at most one decoded copy of
one part besides the message. Unknown encodings are refused with ``NO [UNKNOWN-CTE]`` before
anything of that message's response is written. Binary parts a client APPENDs are stored
base64-encoded, so BODY[] never sends NUL octets (RFC 3501 forbids them in a literal) while
BINARY[] gives the client its original octets back.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap.errors import CommandNo
from mailnode.imap.mime import find_part
from mailnode.mime import MessageStructure, analyse
from mailnode.mime.model import Part

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader

FETCH_NAMES = frozenset({"BINARY", "BINARY.PEEK", "BINARY.SIZE"})
ITEMS = frozenset({"BINARY", "BINARY.SIZE"})
IDENTITY = frozenset({None, "7bit", "8bit", "binary"})
KNOWN = IDENTITY | {"base64", "quoted-printable"}
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")
_QP_TRAILING = re.compile(rb"[ \t]+(\r?\n)")
_CTE_BASE64 = b"Content-Transfer-Encoding: base64\r\n"
_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*")


def parse_att(r: _Reader, name: str) -> c.FetchAttr:
    """``BINARY[parts]<partial>``, ``BINARY.PEEK[...]`` or ``BINARY.SIZE[parts]``: the section
    is part numbers only (RFC 3516 section-binary)."""
    r.expect(b"[")
    parts: list[int] = []
    while not r.take(b"]"):
        if parts:
            r.expect(b".")
        n = r.number()
        if n == 0:
            raise r.error("Invalid section part")
        parts.append(n)
        if len(parts) > r.limits.max_depth:
            raise r.error("Section too deep")
    partial = None if name == "BINARY.SIZE" else r.partial()
    return c.FetchAttr("BINARY.SIZE" if name == "BINARY.SIZE" else "BINARY",
                       c.Section(tuple(parts)), peek=name == "BINARY.PEEK", partial=partial)


def _encoding(node: Part) -> str | None:
    return None if node.encoding is None else node.encoding.strip().lower()


def check(raw: bytes, structure: MessageStructure | None,
          attrs: tuple[c.FetchAttr, ...]) -> None:
    """Refuse (``NO [UNKNOWN-CTE]``) a BINARY item whose part has an encoding we cannot
    undo. A FETCH naming parts loads the structures first (analysed off the event loop
    where none was stored), so ``structure`` is analysed here only as a last resort."""
    for attr in attrs:
        if attr.name not in ITEMS or attr.section is None or not attr.section.parts:
            continue
        structure = structure or analyse(raw)
        node = find_part(structure.root, attr.section.parts)
        if node is not None and _encoding(node) not in KNOWN:
            raise CommandNo("Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")


def decoded(raw: bytes, structure: MessageStructure | None, parts: tuple[int, ...]) -> bytes:
    """The section's content with its transfer encoding undone (``[]``: the whole message
    as stored; a part that does not exist: empty, as BODY[] answers)."""
    if not parts:
        return raw
    node = find_part((structure or analyse(raw)).root, parts)
    if node is None:
        return b""
    return decode(_encoding(node), raw[node.body_start:node.end])


def decode(encoding: str | None, data: bytes) -> bytes:
    if encoding == "base64":
        return decode_base64(data)
    if encoding == "quoted-printable":
        return decode_qp(data)
    return data


def decode_base64(data: bytes) -> bytes:
    """RFC 2045 6.8: characters outside the alphabet are ignored, ``=`` ends the data; a
    dangling sixth of a group is dropped instead of failing the whole part."""
    end = data.find(b"=")
    clean = _NOT_BASE64.sub(b"", data if end < 0 else data[:end])
    rest = len(clean) % 4
    if rest == 1:
        clean = clean[:-1]
    elif rest:
        clean += b"=" * (4 - rest)
    return binascii.a2b_base64(clean)


def decode_qp(data: bytes) -> bytes:
    """RFC 2045 6.7: whitespace at a line's end dropped, ``=`` at a line's end (after
    optional padding) a soft break, ``=XX`` an octet, other ``=`` sequences left as they
    are. Two linear passes in C (a regex, then binascii), so a large part does not hold up
    the event loop the way a per-line Python loop would."""
    data = data.rstrip(b" \t")
    # rare (encoders escape such spaces), so the regex pass is usually skipped
    if any(ws in data for ws in (b" \n", b"\t\n", b" \r\n", b"\t\r\n")):
        data = _QP_TRAILING.sub(rb"\1", data)
    return binascii.a2b_qp(data)


def render(attr: c.FetchAttr, raw: bytes, structure: MessageStructure | None,
           cache: dict[tuple[int, ...], bytes]) -> Iterator[bytes]:
    """One BINARY item; ``cache`` keeps the last decoded part for the message's other
    items (BINARY.SIZE[1] BINARY[1] decodes once)."""
    assert attr.section is not None
    parts = attr.section.parts
    if parts not in cache:
        cache.clear()
        cache[parts] = decoded(raw, structure, parts)
    data = cache[parts]
    spec = ".".join(str(p) for p in parts)
    if attr.name == "BINARY.SIZE":
        yield b"BINARY.SIZE[%s] %d" % (spec.encode(), len(data))
        return
    name = b"BINARY[%s]" % spec.encode()
    if attr.partial is not None:
        start, count = attr.partial
        data = data[start:start + count]
        name += b"<%d>" % start
    yield name + (b" ~{%d}\r\n" if b"\0" in data else b" {%d}\r\n") % len(data)
    yield data


def for_storage(raw: bytes) -> bytes:
    """A message APPENDed as binary, with each leaf part that holds binary data (labelled
    ``binary``, or holding NUL) re-encoded as base64; other messages are returned as they
    are. Parts are rewritten back to front so earlier offsets stay valid."""
    if b"\0" not in raw and b"binary" not in raw.lower():
        return raw
    leaves = [p for p in _leaves(analyse(raw).root)
              if _encoding(p) in IDENTITY and (_encoding(p) == "binary"
                                                or b"\0" in raw[p.body_start:p.end])]
    out = raw
    for part in sorted(leaves, key=lambda p: p.header_start, reverse=True):
        body = out[part.body_start:part.end]
        encoded = b"\r\n".join(binascii.b2a_base64(body[i:i + 57], newline=False)
                               for i in range(0, len(body), 57))
        header = out[part.header_start:part.body_start]
        header, n = _CTE_FIELD.subn(lambda _: _CTE_BASE64, header, count=1)
        if n == 0 and not header:
            header = _CTE_BASE64 + b"\r\n"
        elif n == 0:  # before the blank line that ends the header
            blank = header.rfind(b"\n", 0, len(header) - 1) + 1
            header = header[:blank] + _CTE_BASE64 + header[blank:]
        out = out[:part.header_start] + header + encoded + out[part.end:]
    return out


def _leaves(part: Part) -> Iterator[Part]:
    """The leaf parts, iteratively (the tree's depth is bounded, but no recursion is
    needed)."""
    stack = [part]
    while stack:
        node = stack.pop()
        if node.children:
            stack.extend(node.children)
        elif node.message is not None:
            stack.append(node.message)
        else:
            yield node
