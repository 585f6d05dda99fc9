"""RFC 8474 OBJECTID, RFC 8514 SAVEDATE and RFC 6154 CREATE-SPECIAL-USE.

What the session needs beyond the listing (EMAILID, THREADID, SAVEDATE) is read from the
store per batch, only when a FETCH item or a SEARCH key asks for it: a listing of 100,000
messages carries none of it. MAILBOXID rides on the ``Mailbox`` the store returns.
THREADID is NIL: threads are not tracked, which RFC 8474 §5.3 allows (a THREADID search
then matches nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap.errors import CommandNo
from mailnode.imap.responses import date_time
from mailnode.store.api import MessageMeta, MessageObjects

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader

FETCH_ITEMS = frozenset({"EMAILID", "THREADID", "SAVEDATE"})
CREATABLE_USES = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})
"""Special uses a new mailbox may have: a mailbox that holds what it is put into it. \\All
and \\Flagged name virtual mailboxes (the server fills them), which mailnode has not."""
_USES = {u.upper(): u for u in CREATABLE_USES | {"\\All", "\\Flagged"}}
_OBJECTID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            b"0123456789_-")
MAX_OBJECTID = 255  # RFC 8474 objectid = 1*255(ALPHA / DIGIT / "_" / "-")


# --- FETCH -----------------------------------------------------------------------------------


def wanted(attrs: Iterable[c.FetchAttr]) -> bool:
    return any(a.name in FETCH_ITEMS for a in attrs)


def render(name: str, objects: MessageObjects) -> bytes:
    """One FETCH item: ``EMAILID (id)``, ``THREADID NIL`` or ``SAVEDATE "date-time"``."""
    if name == "EMAILID":
        return b"EMAILID (" + objects.emailid.encode("ascii") + b")"
    if name == "THREADID":
        threadid = objects.threadid
        return b"THREADID " + (b"NIL" if threadid is None
                               else b"(" + threadid.encode("ascii") + b")")
    saved = objects.savedate
    return b"SAVEDATE " + (b"NIL" if saved is None else date_time(saved))


# --- SEARCH ----------------------------------------------------------------------------------


def parse_search_key(r: _Reader, key: str) -> c.SearchKey | None:
    """The keys this module brings (None: not one of them)."""
    if key in ("EMAILID", "THREADID"):
        r.sp()
        raw = r.atom()
        if len(raw) > MAX_OBJECTID or not set(raw) <= _OBJECTID_CHARS:
            raise r.error(f"Invalid {key}")
        return c.SearchObject(key, raw.decode("ascii"))  # type: ignore[arg-type]
    if key in ("SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"):
        r.sp()
        op = key.removeprefix("SAVED").lower()
        return c.SearchObject("SAVED", op=op, date=r.date())  # type: ignore[arg-type]
    if key == "SAVEDATESUPPORTED":
        return c.SearchObject("SAVEDATESUPPORTED")
    return None


def needs_objects(key: c.SearchKey) -> bool:
    """Whether evaluating ``key`` needs ``MailStore.message_objects`` (the parser bounds the
    depth of the tree, so the walk is bounded)."""
    return any(isinstance(k, c.SearchObject) and k.kind != "SAVEDATESUPPORTED"
               for k in c.search_nodes(key))


def matches(key: c.SearchObject, meta: MessageMeta, objects: MessageObjects | None) -> bool:
    """Every mailbox keeps save dates, so SAVEDATESUPPORTED matches every message. A
    message without a save date (none: migration 0009 gave old mail one) is compared by its
    INTERNALDATE instead."""
    if key.kind == "SAVEDATESUPPORTED":
        return True
    if objects is None:  # expunged while being searched
        return False
    if key.kind == "EMAILID":
        return objects.emailid == key.value
    if key.kind == "THREADID":
        return objects.threadid is not None and objects.threadid == key.value
    assert key.date is not None
    when = objects.savedate or meta.internaldate
    day = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).date()
    return compare_day(day, key.op, key.date.date())


def compare_day(day: date, op: str, target: date) -> bool:
    """RFC 3501's BEFORE / ON / SINCE on whole days (SENT*, SAVED* and INTERNALDATE keys)."""
    if op == "before":
        return day < target
    if op == "on":
        return day == target
    return day >= target


# --- CREATE (USE (...)) ----------------------------------------------------------------------


def parse_create(r: _Reader, tag: str) -> c.Command:
    """``CREATE name [SP "(" create-param *(SP create-param) ")"]`` (RFC 4466), where the
    one parameter known is RFC 6154's ``USE (attr ...)``. Unknown parameters get BAD; the
    parser's item limit bounds both lists."""
    r.sp()
    name = r.mailbox()
    use: list[str] = []
    if r.take(b" "):
        def param() -> None:
            word = r.keyword()
            if word != "USE":
                raise r.error(f"Unknown CREATE parameter {word}")
            r.sp()
            use.extend(r.paren_list(lambda: _use_attr(r), allow_empty=False))
        r.paren_list(param, allow_empty=False)
    r.end()
    return c.Create(tag, name, tuple(dict.fromkeys(use)))


def _use_attr(r: _Reader) -> str:
    r.expect(b"\\")
    raw = r.atom().decode("ascii", "replace")
    return _USES.get("\\" + raw.upper(), "\\" + raw)


def special_use(use: tuple[str, ...]) -> str | None:
    """The attribute to store for a CREATE's USE list, or NO [USEATTR] (RFC 6154 §3: the
    mailbox is then not made). One attribute per mailbox, as the store keeps them."""
    if not use:
        return None
    for attr in use:
        if attr not in CREATABLE_USES:
            raise CommandNo(f"Special use {attr} is not supported", "USEATTR")
    if len(use) > 1:
        raise CommandNo("A mailbox can have one special use", "USEATTR")
    return use[0]
