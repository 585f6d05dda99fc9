"""CATENATE's URL parts (RFC 4469): IMAP URLs (RFC 5092) naming a message, or a section or
range of one, in the user's own mailboxes.

URLs relative to this server (``/mailbox;UIDVALIDITY=v/;UID=u/;SECTION=s/;PARTIAL=o.l``) and
absolute ones (``imap://user@host/...``) whose user, if named, is the logged-in one are
resolved, always against the logged-in user's own mailboxes: another user, URLAUTH, a stale
UIDVALIDITY or a missing message all get ``NO [BADURL url]``. The host is not compared (the
node has no one canonical name): whatever it says, only the user's own mail is read. A URL
part loads one stored message, and the caller bounds how many URL parts a command may have.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from urllib.parse import unquote

from mailnode.imap import mime
from mailnode.imap.errors import CommandNo
from mailnode.mime import MessageStructure, analyse
from mailnode.store.api import MailStore, User

MAX_URL_LENGTH = 2048
_SECTION_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_URL = re.compile(
    r"/(?P<mailbox>[^;]+?)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9]\d{0,9}))?"
    r"/;UID=(?P<uid>[1-9]\d{0,9})"
    r"(?:/;SECTION=(?P<section>[^/;]*))?"
    r"(?:/;PARTIAL=(?P<offset>\d{1,10})(?:\.(?P<length>[1-9]\d{0,9}))?)?",
    re.IGNORECASE)
_ABSOLUTE = re.compile(r"imap://(?:(?P<user>[^@/;]*)(?:;AUTH=[^@/]*)?@)?[^/@]+(?P<path>/.*)",
                       re.IGNORECASE | re.DOTALL)
_FIELDS = re.compile(r"(.*HEADER\.FIELDS(?:\.NOT)?) \(([^()]*)\)")


class BadUrl(CommandNo):
    """The URL cannot be resolved: ``NO [BADURL url]`` (RFC 4469 5)."""

    def __init__(self, url: str) -> None:
        shown = "".join(ch if ch.isprintable() and ch not in "[]" else "?"
                        for ch in url[:200])
        super().__init__("Invalid URL", f"BADURL {shown}")


@dataclass(frozen=True)
class ImapUrl:
    mailbox: str
    uidvalidity: int | None
    uid: int
    parts: tuple[int, ...]
    text: str | None
    fields: tuple[str, ...]
    partial: tuple[int, int | None] | None


def parse(url: str, users: tuple[str, ...] = ()) -> ImapUrl:
    """An IMAP URL naming one message: relative to the server, or absolute with no user or
    one of ``users`` (the login's names) in it; ``BadUrl`` for anything else."""
    path = url
    if url[:7].lower() == "imap://":
        a = _ABSOLUTE.fullmatch(url) if len(url) <= MAX_URL_LENGTH else None
        if a is None or (a["user"] and unquote(a["user"]).lower()
                         not in {u.lower() for u in users}):
            raise BadUrl(url)
        path = a["path"]
    m = _URL.fullmatch(path) if len(path) <= MAX_URL_LENGTH else None
    if m is None:
        raise BadUrl(url)
    try:
        mailbox = unquote(m["mailbox"], errors="strict")
        section = unquote(m["section"] or "", errors="strict").upper()
    except UnicodeDecodeError:
        raise BadUrl(url) from None
    if not mailbox:
        raise BadUrl(url)
    parts: list[int] = []
    text: str | None = None
    fields: tuple[str, ...] = ()
    fm = _FIELDS.fullmatch(section)
    if fm is not None:
        section, fields = fm.group(1), tuple(fm.group(2).split())
    items = section.split(".") if section else []
    while items and items[0].isdigit() and len(items[0]) <= 10 and int(items[0]) > 0:
        parts.append(int(items.pop(0)))
    if items:
        text = ".".join(items)
        if text not in _SECTION_TEXTS or (text == "MIME" and not parts) or (
                text.startswith("HEADER.FIELDS") and not fields):
            raise BadUrl(url)
    if len(parts) > 32:
        raise BadUrl(url)
    partial = None
    if m["offset"] is not None:
        partial = (int(m["offset"]), int(m["length"]) if m["length"] else None)
    return ImapUrl("INBOX" if mailbox.upper() == "INBOX" else mailbox,
                   int(m["uidvalidity"]) if m["uidvalidity"] else None, int(m["uid"]),
                   tuple(parts), text, fields, partial)


async def resolve(store: MailStore, user: User, url: str) -> bytes:
    """The bytes the URL names, from the user's own mailboxes."""
    ref = parse(url, (user.name, user.address))
    mailbox = await store.get_mailbox(user.id, ref.mailbox)
    if mailbox is None or (ref.uidvalidity is not None
                           and ref.uidvalidity != mailbox.uidvalidity):
        raise BadUrl(url)
    raw = (await store.fetch_bodies(mailbox.id, [ref.uid])).get(ref.uid)
    if raw is None:
        raise BadUrl(url)
    structure: MessageStructure | None = None
    if ref.parts or ref.text:
        blob = (await store.fetch_structures(mailbox.id, [ref.uid])).get(ref.uid)
        with contextlib.suppress(ValueError):  # an older format: analysed again
            structure = MessageStructure.decode(blob) if blob else None
        if structure is None:  # CPU work on up to a maximum-size message: off the loop
            structure = await asyncio.to_thread(analyse, raw)
    data = mime.section_bytes(raw, structure, ref.parts, ref.text, ref.fields)
    if ref.partial is not None:
        start, length = ref.partial
        data = data[start:] if length is None else data[start:start + length]
    return data
