"""An in-memory MailStore for the IMAP tests, faithful to the contract in mailnode.store.api.

It behaves as the SQLite store will: uids strictly increase and are never reused, uidvalidity is
fixed per mailbox, INBOX matches case-insensitively, every user has INBOX/Sent/Drafts/Trash, and
every committed change is published to the ChangeNotifier.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mailnode.imap import commands as c
from mailnode.imap import search, sortthread
from mailnode.mime import analyse
from mailnode.mime.sortkeys import SortKeys, keys_of, references_value
from mailnode.store import objectid
from mailnode.store.api import (
    SPECIAL_MAILBOXES,
    TOMBSTONE_LIMIT,
    Changes,
    FlagMode,
    Mailbox,
    MailboxExists,
    MailboxProtected,
    MessageMeta,
    MessageObjects,
    MetadataFull,
    NoSuchMailbox,
    OverQuota,
    Usage,
    User,
    is_protected,
)
from mailnode.store.notify import ChangeNotifier


@dataclass
class _Box:
    id: int
    user_id: int
    name: str
    uidvalidity: int
    special_use: str | None
    uidnext: int = 1
    recent_uid: int = 0
    messages: dict[int, tuple[MessageMeta, bytes]] = field(default_factory=dict)
    saved: dict[int, tuple[int, datetime]] = field(default_factory=dict)
    """uid -> (body id, shared by copies of the same bytes; save date)."""
    highest_modseq: int = 1
    vanished_floor: int = 0
    tombstones: dict[int, int] = field(default_factory=dict)
    """Expunged uid -> the modseq of its expunge (the SQL store's ``expunged`` table)."""

    def next_modseq(self) -> int:
        self.highest_modseq += 1
        return self.highest_modseq


class MemStore:
    """Users, mailboxes and messages held in dicts."""

    def __init__(self, notifier: ChangeNotifier) -> None:
        self.notifier = notifier
        self._users: dict[int, tuple[User, str]] = {}
        self._boxes: dict[int, _Box] = {}
        self._ids = itertools.count(1)
        self._uidvalidity = itertools.count(1_700_000_000)
        self._subscribed: dict[int, set[str]] = {}
        self._metadata: dict[tuple[int, int | None], dict[str, bytes]] = {}
        self.user_quota: int | None = None
        self._key = os.urandom(32)
        self.clock: Callable[[], float] = time.time
        """Save dates are taken from it (as SqlStore's)."""
        self._bodies = itertools.count(1)
        self._counters: dict[int, list[int]] = {}
        """user id -> [storage, messages], kept by ``_put`` and ``_drop`` as SqlStore's
        triggers keep its users row."""
        self.tombstone_limit = TOMBSTONE_LIMIT

    # --- test helpers ---

    def add_user(self, name: str, password: str, address: str | None = None) -> User:
        user = User(next(self._ids), name, address or f"{name}@example.mailnode")
        self._users[user.id] = (user, password)
        for box_name, special in SPECIAL_MAILBOXES:
            self._new_box(user.id, box_name, special)
        self._subscribed[user.id] = {name for name, _ in SPECIAL_MAILBOXES}
        return user

    def _new_box(self, user_id: int, name: str, special: str | None) -> _Box:
        box = _Box(next(self._ids), user_id, name, next(self._uidvalidity), special)
        self._boxes[box.id] = box
        return box

    def _find(self, user_id: int, name: str) -> _Box | None:
        for box in self._boxes.values():
            if box.user_id != user_id:
                continue
            if box.name == name or (box.name == "INBOX" and name.upper() == "INBOX"):
                return box
        return None

    def _box(self, mailbox_id: int) -> _Box:
        box = self._boxes.get(mailbox_id)
        if box is None:
            raise NoSuchMailbox(str(mailbox_id))
        return box

    def _put(self, box: _Box, uid: int, meta: MessageMeta, body: bytes,
             body_id: int | None = None) -> None:
        box.messages[uid] = (meta, body)
        box.saved[uid] = (next(self._bodies) if body_id is None else body_id,
                          datetime.fromtimestamp(int(self.clock()), UTC))
        counter = self._counters.setdefault(box.user_id, [0, 0])
        counter[0] += meta.size
        counter[1] += 1

    def _drop(self, box: _Box, uid: int) -> None:
        meta, _ = box.messages.pop(uid)
        del box.saved[uid]
        counter = self._counters[box.user_id]
        counter[0] -= meta.size
        counter[1] -= 1

    def _view(self, box: _Box) -> Mailbox:
        unseen = sum(1 for m, _ in box.messages.values() if "\\Seen" not in m.flags)
        recent = sum(1 for uid in box.messages if uid > box.recent_uid)
        return Mailbox(box.id, box.user_id, box.name, box.uidvalidity, box.uidnext,
                       box.special_use, len(box.messages), unseen, recent,
                       objectid.mailbox_id(self._key, box.id), box.highest_modseq)

    def _tombstone(self, box: _Box, uids: list[int]) -> None:
        """As the SQL store: one modseq per expunge, the oldest half dropped past the limit
        with the floor raised to the highest modseq dropped."""
        if not uids:
            return
        modseq = box.next_modseq()
        for uid in uids:
            box.tombstones[uid] = modseq
        if len(box.tombstones) > self.tombstone_limit:
            ordered = sorted(box.tombstones.values())
            cut = ordered[len(ordered) - self.tombstone_limit // 2 - 1]
            box.tombstones = {u: m for u, m in box.tombstones.items() if m > cut}
            box.vanished_floor = max(box.vanished_floor, cut)

    # --- MailStore ---

    async def authenticate(self, login: str, password: str) -> User | None:
        for user, secret in self._users.values():
            if login in (user.name, user.address) and password == secret:
                return user
        return None

    async def list_mailboxes(self, user_id: int) -> list[Mailbox]:
        return [self._view(b) for b in self._boxes.values() if b.user_id == user_id]

    async def count_mailboxes(self, user_id: int) -> int:
        return sum(box.user_id == user_id for box in self._boxes.values())

    async def get_mailbox(self, user_id: int, name: str) -> Mailbox | None:
        box = self._find(user_id, name)
        return None if box is None else self._view(box)

    async def create_mailbox(self, user_id: int, name: str,
                             special_use: str | None = None) -> Mailbox:
        if self._find(user_id, name) is not None:
            raise MailboxExists(name)
        return self._view(self._new_box(user_id, name, special_use))

    async def delete_mailbox(self, user_id: int, name: str) -> None:
        box = self._find(user_id, name)
        if box is None:
            raise NoSuchMailbox(name)
        if is_protected(box.name, box.special_use):
            raise MailboxProtected(name)
        for uid in list(box.messages):
            self._drop(box, uid)
        del self._boxes[box.id]
        self._metadata.pop((user_id, box.id), None)
        self.notifier.retire(box.id, box.uidvalidity)
        await self.notifier.publish(box.id)

    async def rename_mailbox(self, user_id: int, old: str, new: str) -> None:
        box = self._find(user_id, old)
        if box is None:
            raise NoSuchMailbox(old)
        if is_protected(box.name, box.special_use):
            raise MailboxProtected(old)
        if self._find(user_id, new) is not None:
            raise MailboxExists(new)
        self.notifier.retire(box.id, box.uidvalidity)
        box.name = new
        box.uidvalidity = next(self._uidvalidity)
        await self.notifier.publish(box.id)

    async def subscriptions(self, user_id: int) -> set[str]:
        return set(self._subscribed.get(user_id, set()))

    async def subscribe(self, user_id: int, name: str, subscribed: bool) -> None:
        names = self._subscribed.setdefault(user_id, set())
        if subscribed:
            names.add(name)
        else:
            names.discard(name)

    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        box = self._box(mailbox_id)
        return [box.messages[uid][0] for uid in sorted(box.messages)]

    async def snapshot(self, mailbox_id: int) -> tuple[list[MessageMeta], int]:
        return await self.list_messages(mailbox_id), self._box(mailbox_id).highest_modseq

    async def fetch_bodies(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, bytes]:
        box = self._box(mailbox_id)
        return {uid: box.messages[uid][1] for uid in uids if uid in box.messages}

    async def fetch_structures(self, mailbox_id: int, uids: Sequence[int],
                               ) -> dict[int, bytes | None]:
        box = self._box(mailbox_id)
        return {uid: None for uid in uids if uid in box.messages}

    def _sort_keys(self, raw: bytes) -> SortKeys:
        structure = analyse(raw)  # none stored: the pure functions, every time
        return keys_of(structure.root.envelope, references_value(raw, structure))

    async def sort_order(self, mailbox_id: int, criteria: Sequence[tuple[str, bool]],
                         upto: int | None = None) -> list[int]:
        box = self._box(mailbox_id)
        return sortthread.sort([sortthread.SortMessage.from_keys(
            uid, meta.internaldate, meta.size, self._sort_keys(raw))
            for uid, (meta, raw) in box.messages.items()
            if upto is None or uid <= upto], criteria)

    async def sort_keys(self, mailbox_id: int, uids: Sequence[int] | None, *,
                        thread: bool = False) -> dict[int, SortKeys]:
        box = self._box(mailbox_id)
        wanted = box.messages if uids is None else uids
        return {uid: self._sort_keys(box.messages[uid][1]) for uid in wanted
                if uid in box.messages}

    async def search_texts(self, mailbox_id: int, name: str, needle: str) -> set[int]:
        box = self._box(mailbox_id)  # the pure SEARCH, over each message's bytes
        key = c.SearchHeader(name, needle, envelope=name != "SUBJECT")
        return {uid for uid, (meta, raw) in box.messages.items()
                if search.matches(key, search.Candidate(1, meta, 1, 1, raw))}

    async def fetch_messages(self, mailbox_id: int, uids: Sequence[int],
                             ) -> dict[int, tuple[bytes, bytes | None]]:
        box = self._box(mailbox_id)
        return {uid: (box.messages[uid][1], None) for uid in uids if uid in box.messages}

    async def fetch_headers(self, mailbox_id: int, uids: Sequence[int], *,
                            small: bool = False, fields: bool = False,
                            ) -> dict[int, bytes | None]:
        return await self.fetch_structures(mailbox_id, uids)  # none stored: all None

    async def save_structures(self, mailbox_id: int, structures: dict[int, bytes]) -> None:
        self._box(mailbox_id)  # the memory store keeps none: FETCH analyses each time

    async def store_flags(self, mailbox_id: int, uids: Sequence[int], flags: frozenset[str],
                          mode: FlagMode) -> list[MessageMeta]:
        return (await self.store_flags_unchanged_since(mailbox_id, uids, flags, mode, None))[0]

    async def store_flags_unchanged_since(
            self, mailbox_id: int, uids: Sequence[int], flags: frozenset[str], mode: FlagMode,
            unchangedsince: int | None) -> tuple[list[MessageMeta], list[int]]:
        box = self._box(mailbox_id)
        out: list[MessageMeta] = []
        failed: list[int] = []
        modseq = 0
        for uid in sorted(set(uids)):
            if uid not in box.messages:
                continue
            meta, body = box.messages[uid]
            if unchangedsince is not None and meta.modseq > unchangedsince:
                failed.append(uid)
                continue
            if mode == "set":
                new = flags
            elif mode == "add":
                new = meta.flags | flags
            else:
                new = meta.flags - flags
            if new != meta.flags:
                modseq = modseq or box.next_modseq()
                meta = replace(meta, flags=frozenset(new), modseq=modseq)
                box.messages[uid] = (meta, body)
            out.append(meta)
        if modseq:
            await self.notifier.publish(mailbox_id)
        return out, failed

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        box = self._box(mailbox_id)
        changed = [box.messages[uid][0] for uid in sorted(box.messages)
                   if box.messages[uid][0].modseq > modseq]
        complete = modseq >= box.vanished_floor or modseq >= box.highest_modseq
        vanished = sorted(u for u, m in box.tombstones.items() if m > modseq) \
            if complete else []
        return Changes(changed, vanished, box.highest_modseq, complete)

    async def append(self, mailbox_id: int, body: bytes, flags: frozenset[str],
                     internaldate: datetime | None) -> tuple[int, int]:
        box = self._box(mailbox_id)
        self._check_quota(box.user_id, len(body))
        uid = box.uidnext
        box.uidnext += 1
        when = internaldate or datetime.now(UTC).replace(microsecond=0)
        self._put(box, uid, MessageMeta(uid, frozenset(flags), when, len(body),
                            box.next_modseq()), bytes(body))
        await self.notifier.publish(mailbox_id)
        return box.uidvalidity, uid

    async def append_many(self, mailbox_id: int,
                          items: Sequence[tuple[bytes, frozenset[str], datetime | None]],
                          ) -> tuple[int, list[int]]:
        box = self._box(mailbox_id)
        self._check_quota(box.user_id, sum(len(item[0]) for item in items))
        uids = []
        for body, flags, date in items:
            uid = box.uidnext
            box.uidnext += 1
            when = date or datetime.now(UTC).replace(microsecond=0)
            self._put(box, uid, MessageMeta(uid, frozenset(flags), when, len(body),
                                box.next_modseq()), bytes(body))
            uids.append(uid)
        await self.notifier.publish(mailbox_id)
        return box.uidvalidity, uids

    async def expunge(self, mailbox_id: int, uids: Iterable[int] | None = None) -> list[int]:
        box = self._box(mailbox_id)
        among = set(box.messages) if uids is None else set(uids)
        removed = sorted(u for u in among
                         if u in box.messages and "\\Deleted" in box.messages[u][0].flags)
        for uid in removed:
            self._drop(box, uid)
        self._tombstone(box, removed)
        await self.notifier.publish(mailbox_id)
        return removed

    async def copy(self, src_mailbox_id: int, uids: Sequence[int],
                   dst_mailbox_id: int, moving: bool = False) -> list[tuple[int, int]]:
        src = self._box(src_mailbox_id)
        dst = self._box(dst_mailbox_id)
        if not moving:
            self._check_quota(dst.user_id, sum(src.messages[u][0].size for u in set(uids)
                                               if u in src.messages))
        pairs = []
        for uid in sorted(set(uids)):
            if uid not in src.messages:
                continue
            meta, body = src.messages[uid]
            new_uid = dst.uidnext
            dst.uidnext += 1
            self._put(dst, new_uid, replace(meta, uid=new_uid, modseq=dst.next_modseq()), body,
                      src.saved[uid][0])
            pairs.append((uid, new_uid))
        await self.notifier.publish(dst_mailbox_id)
        return pairs

    async def claim_recent(self, mailbox_id: int, known: int, claim: bool = True,
                           ) -> tuple[int, int]:
        box = self._box(mailbox_id)
        before = box.recent_uid
        upto = max(before, min(box.uidnext - 1, known))
        if claim:
            box.recent_uid = max(before, upto)
        return before, upto

    async def move(self, src_mailbox_id: int, uids: Sequence[int],
                   dst_mailbox_id: int) -> list[tuple[int, int]]:
        pairs = await self.copy(src_mailbox_id, uids, dst_mailbox_id, moving=True)
        src = self._box(src_mailbox_id)
        for uid, _ in pairs:
            self._drop(src, uid)
        self._tombstone(src, [uid for uid, _ in pairs])
        if pairs:
            await self.notifier.publish(src_mailbox_id)
        return pairs

    def _used(self, user_id: int) -> tuple[int, int]:
        storage, count = self._counters.get(user_id, (0, 0))
        return storage, count

    def summed_usage(self, user_id: int) -> tuple[int, int]:
        """What the counters must equal: the sum over the user's messages (for tests)."""
        metas = [m for b in self._boxes.values() if b.user_id == user_id
                 for m, _ in b.messages.values()]
        return sum(m.size for m in metas), len(metas)

    async def message_objects(self, mailbox_id: int, uids: Sequence[int],
                              ) -> dict[int, MessageObjects]:
        box = self._box(mailbox_id)
        return {uid: MessageObjects(objectid.email_id(self._key, box.saved[uid][0]), None,
                                    box.saved[uid][1])
                for uid in uids if uid in box.saved}

    def _check_quota(self, user_id: int, adding: int) -> None:
        if self.user_quota is not None and adding > 0 and \
                self._used(user_id)[0] + adding > self.user_quota:
            raise OverQuota("storage quota exceeded")

    async def usage(self, user_id: int) -> Usage:
        storage, count = self._used(user_id)
        return Usage(storage, count, self.user_quota)

    async def get_metadata(self, user_id: int, mailbox_id: int | None) -> dict[str, bytes]:
        return dict(self._metadata.get((user_id, mailbox_id), {}))

    async def set_metadata(self, user_id: int, mailbox_id: int | None,
                           changes: dict[str, bytes | None], max_entries: int) -> None:
        if mailbox_id is not None and (mailbox_id not in self._boxes
                                       or self._boxes[mailbox_id].user_id != user_id):
            raise NoSuchMailbox(str(mailbox_id))
        entries = dict(self._metadata.get((user_id, mailbox_id), {}))
        for entry, value in changes.items():
            if value is None:
                entries.pop(entry, None)
            else:
                entries[entry] = value
        others = sum(len(v) for k, v in self._metadata.items()
                     if k[0] == user_id and k != (user_id, mailbox_id))
        before = len(self._metadata.get((user_id, mailbox_id), {}))
        if len(entries) > before and others + len(entries) > max_entries:
            raise MetadataFull("too many annotations")
        self._metadata[(user_id, mailbox_id)] = entries
