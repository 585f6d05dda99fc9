"""APPEND in full: MULTIAPPEND (RFC 3502), CATENATE (RFC 4469) and literal8 (RFC 3516).

Every message of the command is assembled (literals read, URL parts resolved, binary parts
re-encoded) before anything is stored, and then all are stored in one store call, so a
failure anywhere leaves the mailbox untouched. The bounds: the parser already limits the
literals of one command (count and total size); here a command may have at most
``MAX_MESSAGES`` messages and ``MAX_URL_PARTS`` URL parts, each assembled message at most the
literal limit (the node's message size) and all of them together at most the parser's bound
for one command, so memory stays within about twice what the client could send anyway.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap import responses as r
from mailnode.imap.errors import CommandNo
from mailnode.imap.handlers import binary, catenate
from mailnode.imap.sequences import compress
from mailnode.logsafe import clean

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader
    from mailnode.imap.session import ImapSession

log = logging.getLogger("mailnode.imap")

MAX_MESSAGES = 64
MAX_CAT_PARTS = 64
MAX_URL_PARTS = 16
"""Each URL part loads one stored message: at most this many per command."""


def parse_append(r: _Reader, tag: str) -> c.Command:
    """``APPEND mailbox 1*([SP flags] [SP date-time] SP (literal / literal8 / CATENATE /
    UTF8 (literal8)))``;
    a single plain message stays the core :class:`~mailnode.imap.commands.Append`."""
    r.sp()
    name = r.mailbox()
    messages: list[c.AppendMessage] = []
    plain = True
    urls = 0
    while True:
        r.sp()
        flags: frozenset[str] = frozenset()
        date: datetime | None = None
        if r.peek() == 0x28:
            flags = r.flag_list() - {"\\Recent"}
            r.sp()
        if r.peek() == 0x22:
            date = r.date_time()
            r.sp()
        if r.take(b"CATENATE "):
            plain = False
            parts, literal8 = _cat_parts(r)
            urls += sum(isinstance(p, c.CatUrl) for p in parts)
            if urls > MAX_URL_PARTS:
                raise r.error(f"At most {MAX_URL_PARTS} URL parts per APPEND", "LIMIT")
        elif r.take(b"UTF8 ("):  # RFC 6855 4: a message with UTF-8 header fields
            r.expect(b"~")
            literal8 = True
            if r.peek() != 0x7B:
                raise r.error("UTF8 needs a literal8")
            parts = (r.literal_body(),)
            r.expect(b")")
        else:
            literal8 = r.take(b"~")
            if r.peek() != 0x7B:
                raise r.error("APPEND needs the message as a literal")
            parts = (r.literal_body(),)
        messages.append(c.AppendMessage(flags, date, parts, literal8))
        if r.at_end():
            break
        if len(messages) >= MAX_MESSAGES:
            raise r.error(f"At most {MAX_MESSAGES} messages per APPEND", "LIMIT")
    if plain and len(messages) == 1:
        [m] = messages
        body = m.parts[0]
        assert isinstance(body, c.LiteralBody)
        return c.Append(tag, name, m.flags, m.date, body, m.binary)
    return c.AppendMany(tag, name, tuple(messages))


def _cat_parts(r: _Reader) -> tuple[tuple[c.LiteralBody | c.CatUrl, ...], bool]:
    """``( cat-part *(SP cat-part) )``: ``TEXT literal`` or ``URL astring``."""
    r.expect(b"(")
    parts: list[c.LiteralBody | c.CatUrl] = []
    literal8 = False
    while True:
        word = r.keyword()
        r.sp()
        if word == "TEXT":
            literal8 = r.take(b"~") or literal8
            if r.peek() != 0x7B:
                raise r.error("TEXT needs a literal")
            parts.append(r.literal_body())
        elif word == "URL":
            parts.append(c.CatUrl(r.text_value(r.astring())))
        else:
            raise r.error(f"Unknown CATENATE part {word}")
        if len(parts) > MAX_CAT_PARTS:
            raise r.error(f"At most {MAX_CAT_PARTS} CATENATE parts", "LIMIT")
        if r.take(b")"):
            return tuple(parts), literal8
        r.sp()


async def run(session: ImapSession, cmd: c.AppendMany) -> str | r.Completed:
    """Assemble every message, then store them all in one step (RFC 3502: all or none)."""
    assert session.user is not None
    mailbox = await session._mailbox(cmd.mailbox, trycreate=True)
    limits = session.parser.limits
    budget = limits.max_literal + limits.max_line
    built: list[tuple[bytes, frozenset[str], datetime | None]] = []
    for message in cmd.messages:
        pieces: list[bytes] = []
        size = 0
        for part in message.parts:
            if isinstance(part, c.CatUrl):
                data = await catenate.resolve(session.store, session.user, part.url)
            else:
                data = part.read()
            size += len(data)
            budget -= len(data)
            if size > limits.max_literal or budget < 0:
                raise CommandNo("Message too large", "TOOBIG")
            pieces.append(data)
        raw = b"".join(pieces)
        if not raw:
            raise CommandNo("Empty message")
        if message.binary:
            raw = await asyncio.to_thread(binary.for_storage, raw)
        built.append((raw, message.flags, message.date))
    uidvalidity, uids = await session.store.append_many(mailbox.id, built)
    log.info('user=%s appended %d messages to mailbox="%s" (%d bytes)', session.user.name,
             len(uids), clean(mailbox.name), sum(len(b[0]) for b in built))
    return r.Completed("APPEND completed", f"APPENDUID {uidvalidity} {compress(uids)}")
