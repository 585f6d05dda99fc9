"""Rendering of FETCH response items for one message."""

from __future__ import annotations

from collections.abc import Iterator

from mailnode.imap import commands as c
from mailnode.imap import mime
from mailnode.imap.handlers import binary
from mailnode.imap.responses import date_time, flags
from mailnode.mime import MessageStructure, analyse
from mailnode.store.api import MessageMeta

STRUCTURE_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})


def section_name(attr: c.FetchAttr) -> bytes:
    """How the item is named in the response (PEEK dropped, partial reduced to its origin)."""
    assert attr.section is not None
    name = f"BODY[{attr.section}]"
    if attr.partial is not None:
        name += f"<{attr.partial[0]}>"
    return name.encode("ascii")


def body_section(raw: bytes, attr: c.FetchAttr,
                 structure: MessageStructure | None = None) -> bytes:
    """The bytes for ``BODY[section]<partial>`` (``structure`` is analysed when absent)."""
    assert attr.section is not None
    s = attr.section
    data = mime.section_bytes(raw, structure, s.parts, s.text, s.fields)
    if attr.partial is not None:
        start, count = attr.partial
        data = data[start:start + count]
    return data


def render(meta: MessageMeta, attrs: tuple[c.FetchAttr, ...], raw: bytes | None,
           structure: MessageStructure | None) -> bytes:
    """The parenthesised item list of one ``* n FETCH (...)`` response."""
    return b"".join(render_chunks(meta, attrs, raw, structure))


def render_chunks(meta: MessageMeta, attrs: tuple[c.FetchAttr, ...], raw: bytes | None,
                  structure: MessageStructure | None) -> Iterator[bytes]:
    """:func:`render` in pieces, a literal's data on its own: the session sends them as they
    come, so a response is never built whole (a FETCH may name a message's body many times).
    ``structure`` is needed for ENVELOPE/BODY/BODYSTRUCTURE; for body sections it is
    analysed (once) from ``raw`` when not given."""
    yield b"("
    decoded: dict[tuple[int, ...], bytes] = {}
    for i, attr in enumerate(attrs):
        if i:
            yield b" "
        name = attr.name
        if name == "FLAGS":
            yield b"FLAGS " + flags(meta.flags)
        elif name == "UID":
            yield b"UID %d" % meta.uid
        elif name == "INTERNALDATE":
            yield b"INTERNALDATE " + date_time(meta.internaldate)
        elif name == "RFC822.SIZE":
            yield b"RFC822.SIZE %d" % meta.size
        elif name in STRUCTURE_ITEMS and attr.section is None:
            assert structure is not None
            if name == "ENVELOPE":
                value = mime.envelope(structure)
            else:
                value = mime.bodystructure(structure.root, extended=name == "BODYSTRUCTURE")
            yield name.encode() + b" " + value
        elif name in binary.ITEMS:
            assert raw is not None
            yield from binary.render(attr, raw, structure, decoded)
        else:
            assert raw is not None
            if name == "RFC822":
                data = raw
            elif name == "RFC822.HEADER":
                data = mime.split_header(raw)[0]
            elif name == "RFC822.TEXT":
                data = mime.split_header(raw)[1]
            else:
                assert attr.section is not None
                if structure is None and attr.section.parts:
                    structure = analyse(raw)
                name = section_name(attr).decode("ascii")
                data = body_section(raw, attr, structure)
            yield name.encode("ascii") + b" {%d}\r\n" % len(data)
            yield data
    yield b")"
