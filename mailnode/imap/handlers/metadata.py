"""RFC 5464 METADATA: annotations on mailboxes and on the server (GETMETADATA, SETMETADATA).

Delta Chat stores its push token here. Every user has a private view only (no mailbox is
shared), so ``/private`` and ``/shared`` are two namespaces of the same user's entries. What a
user can store is bounded: ``MAX_VALUE`` bytes per value and ``MAX_ENTRIES`` entries in all,
so annotations cannot become a side channel for unbounded storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap import responses as r
from mailnode.imap.errors import CommandNo, ParseError
from mailnode.store.api import MetadataFull

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader
    from mailnode.imap.session import ImapSession

MAX_VALUE = 16 * 1024
"""Largest value one entry may hold (bytes); a larger one gets ``NO [METADATA MAXSIZE]``."""
MAX_ENTRIES = 128
"""Entries one user may have in all (server and every mailbox); more get ``[METADATA TOOMANY]``."""
MAX_ENTRY_NAME = 512
"""Longest entry name (characters)."""
_ROOTS = ("/private", "/shared")


@dataclass(frozen=True)
class GetMetadata(c.Command):
    """``GETMETADATA [(MAXSIZE n DEPTH d)] mailbox entries``; ``mailbox`` "" is the server."""

    mailbox: str
    entries: tuple[str, ...]
    maxsize: int | None = None
    depth: int | None = 0
    """0, 1, or None for ``infinity``."""


@dataclass(frozen=True)
class SetMetadata(c.Command):
    mailbox: str
    values: tuple[tuple[str, bytes | None], ...]

    def __repr__(self) -> str:  # values (push tokens) stay out of logs
        return f"SetMetadata(tag={self.tag!r}, entries={len(self.values)})"


c.NAMES.update({GetMetadata: "GETMETADATA", SetMetadata: "SETMETADATA"})


def entry_name(raw: bytes, *, settable: bool) -> str | None:
    """The canonical (lower-case) entry name, or None when ``raw`` is not a valid one:
    ``/private/...`` or ``/shared/...`` in printable ASCII, no ``*`` or ``%``, no empty
    component (RFC 5464 3.2). The bare roots may be read (with DEPTH), never set."""
    if not raw or len(raw) > MAX_ENTRY_NAME or any(b < 0x21 or b > 0x7E or b in b"*%"
                                                    for b in raw):
        return None
    name = raw.decode("ascii").lower()
    if name.endswith("/") or "//" in name:
        return None
    if name in _ROOTS:
        return None if settable else name
    return name if name.startswith(("/private/", "/shared/")) else None


def _entry(rd: _Reader, *, settable: bool) -> str:
    name = entry_name(rd.astring(), settable=settable)
    if name is None:
        raise rd.error("Invalid entry name: /private/... or /shared/... expected")
    return name


def parse_get(rd: _Reader, tag: str) -> c.Command:
    rd.sp()
    maxsize: int | None = None
    depth: int | None = 0
    if rd.peek() == 0x28:
        def option() -> None:
            nonlocal maxsize, depth
            word = rd.keyword()
            rd.sp()
            if word == "MAXSIZE":
                maxsize = rd.number()
            elif word == "DEPTH":
                value = rd.keyword()
                if value not in ("0", "1", "INFINITY"):
                    raise rd.error("DEPTH is 0, 1 or infinity")
                depth = None if value == "INFINITY" else int(value)
            else:
                raise rd.error(f"Unknown GETMETADATA option {word}")
        rd.paren_list(option, allow_empty=False)
        rd.sp()
    mailbox = rd.mailbox()
    rd.sp()
    if rd.peek() == 0x28:
        entries = rd.paren_list(lambda: _entry(rd, settable=False), allow_empty=False)
    else:
        entries = [_entry(rd, settable=False)]
    rd.end()
    return GetMetadata(tag, mailbox, tuple(dict.fromkeys(entries)), maxsize, depth)


def parse_set(rd: _Reader, tag: str) -> c.Command:
    rd.sp()
    mailbox = rd.mailbox()
    rd.sp()
    toobig = 0

    def pair() -> tuple[str, bytes | None]:
        nonlocal toobig
        name = _entry(rd, settable=True)
        rd.sp()
        if rd.take(b"NIL"):
            return name, None
        if rd.peek() == 0x22:
            return name, rd.quoted()
        rd.take(b"~")  # literal8 (RFC 3516): a value may hold any octet
        if rd.peek() != 0x7B:
            raise rd.error("Expected a value")
        body = rd.literal_body()  # a large value may be spooled: measured, then dropped
        try:
            if body.size > MAX_VALUE:
                toobig = max(toobig, body.size)
                return name, b""
            return name, body.read()
        finally:
            body.close()

    values = rd.paren_list(pair, allow_empty=False)
    rd.end()
    if toobig:  # after the whole command parsed: a syntax error still gets BAD
        raise _TooBig("Value too large", tag, code=f"METADATA MAXSIZE {MAX_VALUE}")
    return SetMetadata(tag, mailbox, tuple(values))


class _TooBig(ParseError):
    """A value over MAX_VALUE: the command is well-formed, so the reply is NO."""

    status = "NO"


async def _mailbox_id(session: ImapSession, name: str) -> int | None:
    """None for the server ("" names it), else the user's mailbox or NO [NONEXISTENT]."""
    if name == "":
        return None
    return (await session._mailbox(name)).id


def select_entries(stored: dict[str, bytes], wanted: tuple[str, ...], depth: int | None,
                   ) -> list[tuple[str, bytes | None]]:
    """The entries GETMETADATA returns: each one asked for (NIL when it has no value) and,
    with DEPTH 1 or infinity, the stored entries below it, in name order."""
    out: dict[str, bytes | None] = {}
    for want in wanted:
        if want not in _ROOTS:
            out[want] = stored.get(want)
        if depth == 0:
            continue
        prefix = want + "/"
        for name in sorted(stored):
            if name.startswith(prefix) and (depth is None or "/" not in name[len(prefix):]):
                out[name] = stored[name]
    return list(out.items())


def _entry_out(name: str) -> bytes:
    """An entry name as an atom, as RFC 5464's examples show it, quoted if it must be."""
    raw = name.encode("ascii")
    return r.string(raw) if any(b in b'(){"\\]' for b in raw) else raw


def _value(value: bytes | None) -> bytes:
    if value is not None and b"\x00" in value:
        return b"~{%d}\r\n" % len(value) + value  # literal8: NUL cannot go in a literal
    return r.string(value)


async def do_get(session: ImapSession, cmd: GetMetadata) -> str:
    assert session.user is not None
    box = await _mailbox_id(session, cmd.mailbox)
    stored = await session.store.get_metadata(session.user.id, box)
    found = select_entries(stored, cmd.entries, cmd.depth)
    longest = 0
    items: list[bytes] = []
    for name, value in found:
        if cmd.maxsize is not None and value is not None and len(value) > cmd.maxsize:
            longest = max(longest, len(value))
            continue
        items.append(_entry_out(name) + b" " + _value(value))
    if items:
        session.emit(r.MetadataData(session.wire_name(cmd.mailbox), items))
    code = f"[METADATA LONGENTRIES {longest}] " if longest else ""
    return f"{code}GETMETADATA completed"


async def do_set(session: ImapSession, cmd: SetMetadata) -> str:
    assert session.user is not None
    box = await _mailbox_id(session, cmd.mailbox)
    try:
        await session.store.set_metadata(session.user.id, box, dict(cmd.values), MAX_ENTRIES)
    except MetadataFull:
        raise CommandNo(f"At most {MAX_ENTRIES} annotations per user",
                        "METADATA TOOMANY") from None
    return "SETMETADATA completed"
