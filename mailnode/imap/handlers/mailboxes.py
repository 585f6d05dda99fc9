"""Commands on mailboxes (authenticated state): ENABLE, NAMESPACE, LIST/LSUB, SELECT/EXAMINE,
STATUS, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, APPEND and IDLE, and the LIST pattern matcher.

Handlers take the session as ``self`` (they were its methods; the bodies are unchanged so that
work on them elsewhere still merges) and are routed in :mod:`mailnode.imap.dispatch`.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap import feed, handlers, objects
from mailnode.imap import responses as r
from mailnode.imap.capabilities import ENABLABLE
from mailnode.imap.errors import CommandBad, CommandNo
from mailnode.imap.feed import Selected
from mailnode.imap.handlers import binary, listext, messages
from mailnode.imap.sequences import SequenceSet
from mailnode.imap.states import State
from mailnode.logsafe import clean
from mailnode.store.api import SYSTEM_FLAGS, Mailbox

if TYPE_CHECKING:
    from mailnode.imap.session import ImapSession

log = logging.getLogger("mailnode.imap")

DELIMITER = "/"
MAX_PATTERN_LENGTH = 1024
"""Longest LIST reference + pattern (characters); a longer one gets ``NO [LIMIT]``."""
MAX_NAME_LENGTH = 512
MAX_NAME_DEPTH = 32
"""Longest mailbox name (characters) and deepest hierarchy a CREATE or RENAME may make."""


async def do_enable(self: ImapSession, cmd: c.Enable) -> str:
    named = [n for n in dict.fromkeys(cmd.capabilities)
             if n in ENABLABLE and n not in self.enabled]
    for name in named:
        self._enable(name)
    self.parser.utf8 = self.utf8  # the parser reads names as this session writes them
    self.emit(r.Enabled(named))
    return "ENABLE completed"


async def do_namespace(self: ImapSession, cmd: c.Namespace) -> str:
    self.emit(r.NamespaceData("", DELIMITER))
    return "NAMESPACE completed"


async def do_list(self: ImapSession, cmd: c.ListCmd) -> str:
    assert self.user is not None
    if cmd.extended is not None:
        return await listext.run(self, cmd)
    word = "LSUB" if cmd.lsub else "LIST"
    if cmd.pattern == "" and not cmd.lsub:
        self.emit(r.ListData(["\\Noselect"], DELIMITER, r.string("")))
        return "LIST completed"
    if len(cmd.reference) + len(cmd.pattern) > MAX_PATTERN_LENGTH:
        raise CommandNo("Mailbox pattern too long", "LIMIT")
    mailboxes = await self.store.list_mailboxes(self.user.id)
    special = {m.name: m.special_use for m in mailboxes}
    names = await self.store.subscriptions(self.user.id) if cmd.lsub else set(special)
    if not cmd.lsub:  # parents that are not mailboxes themselves show up as \Noselect
        _add_parents(names)
    matches = ListPattern(cmd.reference + cmd.pattern)
    unsubscribed: set[str] = set()
    if cmd.lsub:  # RFC 3501 6.3.9: "foo/bar" subscribed, LSUB "%" gives "foo" \Noselect
        unsubscribed = _unsubscribed_parents(names, matches)
        names = names | unsubscribed
    ordered = sorted(names)
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not matches(name):
            continue
        attrs = []
        if name not in special or name in unsubscribed:
            attrs.append("\\Noselect")
        attrs.append("\\HasChildren" if _has_children(ordered, name) else "\\HasNoChildren")
        if special.get(name):
            attrs.append(str(special[name]))
        self.emit(r.ListData(attrs, DELIMITER, self.wire_name(name), cmd.lsub))
    return f"{word} completed"


async def do_select(self: ImapSession, cmd: c.Select) -> r.Completed:
    if cmd.qresync is not None and not self.qresync:
        raise CommandBad("QRESYNC must be enabled first")
    if self.selected is not None:  # RFC 7162 §3.2.11: the old mailbox is closed first
        self.emit(r.Condition("OK", "Previous mailbox closed", "CLOSED"))
    self.selected = None
    self.state = State.AUTHENTICATED
    mailbox = await self._mailbox(cmd.mailbox)
    if cmd.condstore:
        self.enabled.add("CONDSTORE")
    version = self.notifier.version(mailbox.id)
    metas, highest = await self.store.snapshot(mailbox.id)
    uids = [m.uid for m in metas]
    sel = Selected(mailbox, cmd.readonly, uids, {m.uid: m for m in metas}, version,
                   max_uid=uids[-1] if uids else 0, modseq=highest,
                   keywords={f for m in metas for f in m.flags} - SYSTEM_FLAGS)
    for line in feed.flag_lines(sel):
        self._untagged(line)
    await self._claim_recent(sel)
    self.emit(r.Exists(len(uids)))
    self.emit(r.Recent(len(sel.recent)))
    first_unseen = next((i + 1 for i, m in enumerate(metas) if "\\Seen" not in m.flags), None)
    if first_unseen is not None:
        self.emit(r.Condition("OK", "First unseen message", f"UNSEEN {first_unseen}"))
    self.emit(r.Condition("OK", "UIDs valid", f"UIDVALIDITY {mailbox.uidvalidity}"))
    uidnext = max(mailbox.uidnext, sel.max_uid + 1)
    self.emit(r.Condition("OK", "Predicted next UID", f"UIDNEXT {uidnext}"))
    self.emit(r.Condition("OK", "Ok", f"MAILBOXID ({mailbox.mailboxid})"))
    self.emit(r.Condition("OK", "Highest", f"HIGHESTMODSEQ {highest}"))
    self.selected = sel
    self.state = State.SELECTED
    if cmd.qresync is not None and cmd.qresync.uidvalidity == mailbox.uidvalidity:
        await _resync(self, sel, cmd.qresync.modseq, cmd.qresync.known_uids)
    mode = "READ-ONLY" if cmd.readonly else "READ-WRITE"
    return r.Completed(f"{'EXAMINE' if cmd.readonly else 'SELECT'} completed", mode)


async def _resync(self: ImapSession, sel: Selected, since: int, known: SequenceSet | None) -> None:
    """QRESYNC's part of SELECT (RFC 7162 §3.2.5): what vanished and what changed after
    the client's modseq, from the feed."""
    gone, changes = await messages.vanished_earlier(self, sel, since, known)
    if gone:
        self.emit(r.Vanished(gone, earlier=True))
    for meta in changes.changed:
        current = sel.metas.get(meta.uid)
        if current is not None and current.modseq > since:
            self._untagged(feed.fetch_line(sel, current, condstore=True))


async def do_status(self: ImapSession, cmd: c.Status) -> str:
    mailbox = await self._mailbox(cmd.mailbox)
    await status_response(self, mailbox, cmd.items)
    return "STATUS completed"


async def status_response(self: ImapSession, mailbox: Mailbox, wanted: tuple[str, ...]) -> None:
    """``* STATUS`` for a mailbox already looked up (STATUS, and LIST-STATUS for each
    mailbox it lists). Asking for HIGHESTMODSEQ enables CONDSTORE (RFC 7162 §3.1)."""
    if "HIGHESTMODSEQ" in wanted:
        self._enable("CONDSTORE")
    values: dict[str, int | str] = {"MESSAGES": mailbox.messages, "RECENT": mailbox.recent,
              "UIDNEXT": mailbox.uidnext,
              "UIDVALIDITY": mailbox.uidvalidity, "UNSEEN": mailbox.unseen,
              "MAILBOXID": f"({mailbox.mailboxid})",
              "HIGHESTMODSEQ": mailbox.highest_modseq,
              **await handlers.quota.status_values(self, mailbox, wanted)}
    self.emit(r.StatusData(self.wire_name(mailbox.name),
                           [(item, values[item]) for item in wanted]))


async def do_create(self: ImapSession, cmd: c.Create) -> r.Completed:
    from mailnode.imap.session import MAX_MAILBOXES  # the session's bound, read when used

    assert self.user is not None
    name = cmd.mailbox.rstrip(DELIMITER)
    if not name or DELIMITER * 2 in name or name.startswith(DELIMITER):
        raise CommandBad("Invalid mailbox name")
    if name == "INBOX":
        raise CommandNo("INBOX always exists", "ALREADYEXISTS")
    _check_name_limits(name)
    use = objects.special_use(cmd.use)
    if await self.store.count_mailboxes(self.user.id) >= MAX_MAILBOXES:
        raise CommandNo(f"At most {MAX_MAILBOXES} mailboxes per user", "LIMIT")
    box = await self.store.create_mailbox(self.user.id, name, use)
    return r.Completed("CREATE completed", f"MAILBOXID ({box.mailboxid})")


async def do_delete(self: ImapSession, cmd: c.Delete) -> str:
    assert self.user is not None
    if cmd.mailbox == "INBOX":
        raise CommandNo("INBOX cannot be deleted", "CANNOT")
    await self.store.delete_mailbox(self.user.id, cmd.mailbox)
    if self.selected is not None and self.selected.mailbox.name == cmd.mailbox:
        self.selected = None
        self.state = State.AUTHENTICATED
    return "DELETE completed"


async def do_rename(self: ImapSession, cmd: c.Rename) -> str:
    assert self.user is not None
    new = cmd.new.rstrip(DELIMITER)
    if not new or new == "INBOX":
        raise CommandNo("Invalid target name", "CANNOT")
    _check_name_limits(new)
    await self.store.rename_mailbox(self.user.id, cmd.old, new)
    if self.selected is not None and self.selected.mailbox.name == cmd.old:
        self.selected = None  # renamed under us: a new mailbox now (new UIDVALIDITY)
        self.state = State.AUTHENTICATED
    return "RENAME completed"


async def do_subscribe(self: ImapSession, cmd: c.Subscribe) -> str:
    assert self.user is not None
    if cmd.subscribe:
        await self._mailbox(cmd.mailbox)  # only existing mailboxes can be subscribed to
    await self.store.subscribe(self.user.id, cmd.mailbox, cmd.subscribe)
    return f"{'SUBSCRIBE' if cmd.subscribe else 'UNSUBSCRIBE'} completed"


async def do_append(self: ImapSession, cmd: c.Append) -> str | r.Completed:
    mailbox = await self._mailbox(cmd.mailbox, trycreate=True)
    data = cmd.message.read()
    if cmd.binary:
        data = await asyncio.to_thread(binary.for_storage, data)
    uidvalidity, uid = await self.store.append(mailbox.id, data, cmd.flags, cmd.date)
    log.info('user=%s appended uid %d to mailbox="%s" (%d bytes)',
             self.user.name if self.user else "?", uid, clean(mailbox.name),
             cmd.message.size)
    return r.Completed("APPEND completed", f"APPENDUID {uidvalidity} {uid}")


async def do_idle(self: ImapSession, cmd: c.Idle) -> str | None:
    await self._sync(allow_expunge=True)
    self._idle_tag = cmd.tag
    self.emit(r.Continuation("idling"))
    return None


async def idle_line(self: ImapSession, line: bytes) -> None:
    tag = self._idle_tag
    assert tag is not None
    self._idle_tag = None
    await self._sync(allow_expunge=True)
    if line.strip().upper() == b"DONE":
        self.emit(r.Tagged(tag, "OK", "IDLE terminated"))
    else:
        self._reply(tag, CommandBad("Expected DONE to end IDLE"))


class ListPattern:
    """A LIST/LSUB pattern: ``*`` matches anything, ``%`` anything but the delimiter.

    The pattern comes from the client, so it is never turned into a backtracking regex (``*a*a*a
    ...b`` against a long name would run for ages). Matching simulates the pattern as an NFA
    whose state set is a bit mask over pattern positions: one pass over the name, a few integer
    operations per character, whatever the pattern. INBOX matches case-insensitively.
    """

    def __init__(self, pattern: str) -> None:
        collapsed: list[str] = []
        for ch in pattern:  # a run of wildcards is one "*" if it has one, else one "%"
            if ch in "*%" and collapsed and collapsed[-1] in "*%":
                if ch == "*":
                    collapsed[-1] = "*"
                continue
            collapsed.append(ch)
        self._size = len(collapsed)
        self._star = self._percent = 0
        self._chars: dict[str, int] = {}
        for i, ch in enumerate(collapsed):
            if ch == "*":
                self._star |= 1 << i
            elif ch == "%":
                self._percent |= 1 << i
            else:
                self._chars[ch] = self._chars.get(ch, 0) | 1 << i
        self._inbox = ListPattern(_ascii_upper(pattern)) if pattern != _ascii_upper(pattern) \
            else self

    def __call__(self, name: str) -> bool:
        if self._run(name):
            return True
        return name == "INBOX" and self._inbox is not self and self._inbox._run(name)

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing: its position also enables the next one. Wildcard runs
        # are collapsed, so one step reaches every position.
        return states | (states & (self._star | self._percent)) << 1

    def _run(self, name: str) -> bool:
        states = self._closure(1)
        star, percent, chars = self._star, self._percent, self._chars
        for ch in name:
            stay = star if ch == DELIMITER else star | percent
            states = self._closure((states & stay) | (states & chars.get(ch, 0)) << 1)
            if not states:
                return False
        return bool(states >> self._size & 1)


def _ascii_upper(text: str) -> str:
    return text.translate(_UPPER)


_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def _check_name_limits(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH or name.count(DELIMITER) >= MAX_NAME_DEPTH:
        raise CommandNo(f"Mailbox names are limited to {MAX_NAME_LENGTH} characters and "
                        f"{MAX_NAME_DEPTH} levels", "LIMIT")


def _unsubscribed_parents(subscribed: set[str], matches: ListPattern) -> set[str]:
    """The parents LSUB must show as ``\\Noselect``: not subscribed themselves, matching the
    pattern while a subscribed descendant does not (``%`` stops at the delimiter). Each name
    climbs at most ``MAX_NAME_DEPTH`` levels."""
    out: set[str] = set()
    for name in subscribed:
        if matches(name):
            continue
        cut = name.rfind(DELIMITER)
        while cut > 0:
            parent = name[:cut]
            if parent not in subscribed and matches(parent):
                out.add(parent)
            cut = name.rfind(DELIMITER, 0, cut)
    return out


def _add_parents(names: set[str]) -> None:
    """Add every ancestor of every name; stops climbing at an ancestor already present, so the
    work is linear in the total length of the names."""
    for name in list(names):
        cut = name.rfind(DELIMITER)
        while cut > 0:
            parent = name[:cut]
            if parent in names:
                break
            names.add(parent)
            cut = name.rfind(DELIMITER, 0, cut)


def _has_children(ordered: list[str], name: str) -> bool:
    """Whether any name in the sorted list lies below ``name``: descendants sort right after
    ``name + DELIMITER``, so one bisection finds out (a scan per name was quadratic)."""
    prefix = name + DELIMITER
    i = bisect_left(ordered, prefix)
    return i < len(ordered) and ordered[i].startswith(prefix)
