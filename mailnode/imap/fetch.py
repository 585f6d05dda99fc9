"""Rendering of FETCH response items for one message."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Set
from functools import lru_cache
from operator import itemgetter

from mailnode.imap import commands as c
from mailnode.imap import mime, objects
from mailnode.imap.handlers import binary
from mailnode.imap.responses import date_time, flags
from mailnode.mime import MessageStructure, analyse
from mailnode.store.api import MessageMeta, MessageObjects

STRUCTURE_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})
HEADER_SECTIONS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
_LIST_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})


@lru_cache(maxsize=256)
def section_name(attr: c.FetchAttr) -> bytes:
    """How the item is named in the response (PEEK dropped, partial reduced to its origin);
    made once per distinct item, not once per message of a FETCH."""
    assert attr.section is not None
    name = f"BODY[{attr.section}]"
    if attr.partial is not None:
        name += f"<{attr.partial[0]}>"
    return name.encode("ascii")


_BARE_CR = re.compile(rb"\r(?!\n)")
_FIELD_NAME_CHARS = frozenset(map(chr, range(0x20, 0x7F)))


@lru_cache(maxsize=64)
def _fields_pattern(names: tuple[str, ...]) -> re.Pattern[bytes] | None:
    """Each field line named in ``names``, with its continuation lines, in one C pass over a
    header without bare CRs; the same lines as :func:`mime.header_fields` keeps, whose name
    is what precedes the colon with ASCII whitespace stripped (and, without a colon, the
    whole line). None when a name is empty or not printable ASCII: those go line by line.
    Names with a colon or with whitespace at either end never match a field, so they are
    left out."""
    if any(not n or not _FIELD_NAME_CHARS.issuperset(n) for n in names):
        return None
    usable = [n for n in names if ":" not in n and n == n.strip()]
    if not usable:
        return re.compile(rb"(?!)")  # nothing matches
    alternatives = b"|".join(re.escape(n.encode("ascii")) for n in usable)
    return re.compile(rb"^(?:[\x0b\x0c][ \t\x0b\x0c]*)?(?:" + alternatives
                      + rb")[ \t\x0b\x0c\r]*(?::[^\n]*)?(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*",
                      re.I | re.M)


def header_fields(block: bytes, names: tuple[str, ...]) -> bytes:
    """``HEADER.FIELDS (names)`` of a top-level header block as the store cuts it (where
    :func:`mailnode.mime.analyse` found the first blank line): :func:`mime.header_fields`
    without a Python step per line where the block has no bare CR. Such a block has no
    blank line before its last, so nothing needs cutting off first."""
    pattern = _fields_pattern(names)
    if pattern is None or block.count(b"\r") != block.count(b"\r\n"):
        return mime.header_fields(block, names, exclude=False)
    return b"".join(pattern.findall(block)) + b"\r\n"


def header_section(head: bytes, attr: c.FetchAttr) -> bytes:
    """``BODY[HEADER]``, ``BODY[HEADER.FIELDS (..)]`` or ``.NOT`` with any partial, from a
    message's top-level header block alone (the store cuts it out: no body is read, no
    structure decoded)."""
    s = attr.section
    assert s is not None and not s.parts
    if s.text == "HEADER.FIELDS":
        data = header_fields(head, s.fields)
    elif s.text == "HEADER.FIELDS.NOT":
        data = mime.header_fields(head, s.fields, exclude=True)
    else:
        data = head
    if attr.partial is not None:
        start, count = attr.partial
        data = data[start:start + count]
    return data


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


JOIN_BELOW = 16 * 1024
"""Literal data shorter than this goes out joined with the items around it (a message list's
line is one piece, not seven); longer data is a piece of its own, never copied into one."""


def render_chunks(meta: MessageMeta, attrs: tuple[c.FetchAttr, ...], raw: bytes | None,
                  structure: MessageStructure | None,
                  extra: MessageObjects | None = None, *,
                  header_block: bool = False) -> Iterator[bytes]:
    """:func:`render` in pieces, long literal data on its own: the session sends them as
    they come, so a response is never built whole (a FETCH may name a message's body many
    times). ``structure`` is needed for ENVELOPE/BODY/BODYSTRUCTURE; for body sections it is
    analysed (once) from ``raw`` when not given. ``extra`` is needed for EMAILID, THREADID
    and SAVEDATE. With ``header_block``, ``raw`` is only the message's top-level header
    block, and the body items asked for are all top-level header sections."""
    pieces = [b"("]
    decoded: dict[tuple[int, ...], bytes] = {}
    for i, attr in enumerate(attrs):
        if i:
            pieces.append(b" ")
        name = attr.name
        if name == "FLAGS":
            pieces.append(b"FLAGS " + flags(meta.flags))
        elif name == "UID":
            pieces.append(b"UID %d" % meta.uid)
        elif name == "INTERNALDATE":
            pieces.append(b"INTERNALDATE " + date_time(meta.internaldate))
        elif name == "RFC822.SIZE":
            pieces.append(b"RFC822.SIZE %d" % meta.size)
        elif name in objects.FETCH_ITEMS:
            assert extra is not None
            pieces.append(objects.render(name, extra))
        elif name == "MODSEQ":
            pieces.append(b"MODSEQ (%d)" % meta.modseq)
        elif name in STRUCTURE_ITEMS and attr.section is None:
            assert structure is not None
            if name == "ENVELOPE":
                value = mime.envelope(structure)
            else:
                value = mime.bodystructure(structure.root, extended=name == "BODYSTRUCTURE")
            pieces.append(name.encode() + b" " + value)
        else:
            assert raw is not None
            if name in binary.ITEMS:
                chunks = list(binary.render(attr, raw, structure, decoded))
            else:
                if name == "RFC822":
                    data = raw
                elif name == "RFC822.HEADER":
                    data = mime.split_header(raw)[0]
                elif name == "RFC822.TEXT":
                    data = mime.split_header(raw)[1]
                elif header_block:
                    data = header_section(raw, attr)
                else:
                    assert attr.section is not None
                    if structure is None and attr.section.parts:
                        structure = analyse(raw)
                    data = body_section(raw, attr, structure)
                label = section_name(attr) if attr.section is not None else name.encode()
                chunks = [label + b" {%d}\r\n" % len(data), data]
            for chunk in chunks:
                if len(chunk) < JOIN_BELOW:
                    pieces.append(chunk)
                else:
                    yield b"".join(pieces)
                    pieces = []
                    yield chunk
    pieces.append(b")")
    yield b"".join(pieces)


_Item = Callable[[MessageMeta, bytes], bytes]
MAX_FLAG_LISTS = 256
"""Distinct flag lists a plan keeps rendered."""


@lru_cache(maxsize=64)
def header_lines(attrs: tuple[c.FetchAttr, ...]) -> HeaderLines | None:
    """The plan for ``attrs`` when it is a message list's FETCH (None otherwise), made once
    for each distinct item list: a client asks the same for every message it lists."""
    return HeaderLines(attrs) if HeaderLines.fits(attrs) else None


class HeaderLines:
    """Whole ``* n FETCH (...)`` lines for a FETCH of message data and top-level header
    sections only (what a message list asks of each message it shows): what each item needs
    (its label, its field pattern, each distinct flag list's rendering) is worked out once
    per command, not once per message. The same bytes as :func:`render_chunks`."""

    def __init__(self, attrs: tuple[c.FetchAttr, ...]) -> None:
        assert self.fits(attrs)
        self.attrs = attrs
        self.shows_flags = any(a.name == "FLAGS" for a in attrs)
        """Whether a line shows the message's flags: only then does a caller need to add
        \\Recent to them (a copy of the message's data per message, which cost more than
        picking its header fields)."""
        self._flags: dict[frozenset[str], bytes] = {}
        self._items = [self._item(a) for a in attrs]

    @staticmethod
    def fits(attrs: tuple[c.FetchAttr, ...]) -> bool:
        return all(a.name in _LIST_ITEMS or (
            a.name == "BODY" and a.section is not None and not a.section.parts
            and a.section.text in HEADER_SECTIONS) for a in attrs)

    def line(self, seq: int, meta: MessageMeta, raw: bytes, header_block: bool) -> bytes:
        """The response line for message ``seq``; ``raw`` is its header block, or (without
        ``header_block``: no structure was stored) the whole message."""
        if not header_block:
            return b"* %d FETCH %s\r\n" % (seq, b"".join(render_chunks(
                meta, self.attrs, raw, None)))
        items = self._items
        if len(items) == 2:  # the usual message list: UID and one header section
            first, second = items
            return b"* %d FETCH (%s %s)\r\n" % (seq, first(meta, raw), second(meta, raw))
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join([item(meta, raw) for item in items]))

    def _flag_list(self, meta: MessageMeta, _head: bytes) -> bytes:
        shown = self._flags.get(meta.flags)
        if shown is None:
            if len(self._flags) >= MAX_FLAG_LISTS:  # plans are shared: keywords vary
                self._flags.clear()
            shown = self._flags[meta.flags] = b"FLAGS " + flags(meta.flags)
        return shown

    def _item(self, attr: c.FetchAttr) -> _Item:
        name = attr.name
        if name == "UID":
            return lambda meta, _head: b"UID %d" % meta.uid
        if name == "FLAGS":
            return self._flag_list
        if name == "MODSEQ":
            return lambda meta, _head: b"MODSEQ (%d)" % meta.modseq
        if name == "INTERNALDATE":
            return lambda meta, _head: b"INTERNALDATE " + date_time(meta.internaldate)
        if name == "RFC822.SIZE":
            return lambda meta, _head: b"RFC822.SIZE %d" % meta.size
        label = section_name(attr) + b" {%d}\r\n"
        assert attr.section is not None
        pattern = _fields_pattern(attr.section.fields)
        if attr.section.text != "HEADER.FIELDS" or attr.partial is not None or pattern is None:
            def section(_meta: MessageMeta, head: bytes) -> bytes:
                data = header_section(head, attr)
                return label % len(data) + data
            return section
        names = attr.section.fields

        findall, bare_cr, join = pattern.findall, _BARE_CR.search, b"".join

        def fields(_meta: MessageMeta, head: bytes) -> bytes:
            if bare_cr(head) is None:
                data = join(findall(head)) + b"\r\n"
            else:
                data = mime.header_fields(head, names, exclude=False)
            return label % len(data) + data
        return fields


_LISTING_FORMATS = {"UID": (b"UID %d", 1), "FLAGS": (b"FLAGS %s", 2), "MODSEQ": (b"MODSEQ (%d)", 3)}


def listing_lines(targets: list[tuple[int, int]], metas: Mapping[int, MessageMeta],
                  recent: Set[int], attrs: tuple[c.FetchAttr, ...],
                  batch: int) -> Iterator[bytes]:
    """``* n FETCH (...)`` lines for a FETCH of UID, FLAGS and MODSEQ only (a full listing is
    one line per message), ``batch`` lines joined at a time: the same bytes as
    :func:`render_chunks` with \\Recent shown for ``recent`` uids. Each distinct flag list is
    rendered once, and one format takes the values in the client's order."""
    line = b"* %d FETCH (" + b" ".join(_LISTING_FORMATS[a.name][0] for a in attrs) + b")\r\n"
    order = tuple(_LISTING_FORMATS[a.name][1] for a in attrs)
    pick = None if order in ((1, 2), (1, 2, 3)) else itemgetter(0, *order)
    with_modseq = order == (1, 2, 3)
    rendered: dict[frozenset[str], bytes] = {}
    rendered_recent: dict[frozenset[str], bytes] = {}
    lines: list[bytes] = []
    for seq, uid in targets:
        meta = metas[uid]
        if uid in recent:
            shown = rendered_recent.get(meta.flags)
            if shown is None:
                shown = rendered_recent[meta.flags] = flags(meta.flags | {"\\Recent"})
        else:
            shown = rendered.get(meta.flags)
            if shown is None:
                shown = rendered[meta.flags] = flags(meta.flags)
        if pick is not None:
            lines.append(line % pick((seq, uid, shown, meta.modseq)))
        elif with_modseq:
            lines.append(line % (seq, uid, shown, meta.modseq))
        else:
            lines.append(line % (seq, uid, shown))
        if len(lines) >= batch:
            yield b"".join(lines)
            lines.clear()
    if lines:
        yield b"".join(lines)
