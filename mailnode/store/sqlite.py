"""The SQLite implementation of ``MailStore`` plus the node's own aggregates (users, queue).

Each public coroutine is one transaction: writes on the database thread, IMAP's reads
(listings, the change feed, bodies) on reader connections beside it (``Database.read``), so a
long listing never holds up a commit. Change notifications are published only after the
commit, so a woken IDLE session always finds the new state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from crypto.address import address_for
from crypto.keys import Identity
from crypto.passwords import DUMMY_HASH, RecentlyVerified, hash_password, verify_password
from mailnode.mime import sortkeys
from mailnode.mime.headers import STORED_FIELDS_VERSION, stored_fields
from mailnode.mime.model import VERSION as STRUCTURE_VERSION
from mailnode.mime.structure import analyse_top
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
    StoreError,
    Usage,
    User,
    is_protected,
)
from mailnode.store.database import Connection, Database, TooLarge
from mailnode.store.notify import ChangeNotifier

T = TypeVar("T")
_Listing = tuple[tuple[MessageMeta, ...], int]
"""A mailbox's messages in uid order and its highest modseq, as of one transaction."""

class UserExists(StoreError):
    pass


class RecipientOverQuota(OverQuota):
    """A local recipient of a submission has no room for it (their quota)."""

    def __init__(self, address: str) -> None:
        super().__init__(f"mailbox of {address} is full")
        self.address = address


class QueueFull(StoreError):
    """Queueing this message would take the outbound queue past its byte limit."""


@dataclass(frozen=True)
class QueuedMessage:
    """One recipient's copy waiting for its node; the bytes are loaded when it is sent
    (:meth:`SqlStore.outbound_content`), so a long queue costs no memory."""

    id: int
    message_id: bytes
    user_id: int
    sender: str
    recipient: str
    created_at: int
    attempts: int
    delay_notified: bool = False
    size: int = 0
    """Bytes of the payload to seal (what sending it holds in memory)."""


@dataclass(frozen=True)
class QueueEntry:
    """One waiting recipient, as ``mailnode queue`` lists it."""

    id: int
    sender: str
    recipient: str
    created_at: int
    attempts: int
    next_attempt_at: int
    last_error: str | None


@dataclass(frozen=True)
class OutboundContent:
    """What to send for a queued copy: a legacy sealed envelope, or the payload to seal."""

    sealed: bytes | None
    content: bytes | None
    headers: bytes


@dataclass(frozen=True)
class LocalCopy:
    """A message to file into a local user's INBOX as part of a submission."""

    user_id: int
    body: bytes


class Analysed(NamedTuple):
    """What is worked out of a new message before its write: its stored structure (None:
    none kept) and its row of sort and search keys (``sortkeys.stored_keys``)."""

    structure: bytes | None
    keys: sortkeys.StoredKeys


@dataclass(frozen=True)
class Submission:
    """One accepted message: its bytes are stored once for all local recipients and once
    for all remote ones, however many recipients there are."""

    user_id: int
    local_body: bytes
    """The message as filed locally (with the node's trace headers)."""
    local_users: tuple[int, ...]
    content: bytes
    """The message as submitted; each remote copy is sealed from it when it is sent."""
    headers: bytes
    remote: tuple[Outgoing, ...]
    """Recipients not known to be local; one that is a local user after all (created since
    the caller last looked) is filed locally in the same transaction instead of queued."""
    analysed: Analysed | None = None
    """``SqlStore.analyse`` of ``local_body`` if the caller computed it already."""


@dataclass(frozen=True)
class Filed:
    """What a submission's transaction did: the users it filed for, by address."""

    local: dict[str, int]


@dataclass(frozen=True)
class Outgoing:
    """A remote recipient to queue as part of a submission (sealed when it is sent)."""

    message_id: bytes
    recipient: str


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _flags_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


UID_CHUNK = 500
LISTING_CACHE_MESSAGES = 100_000
"""Messages kept over all cached mailbox listings (least recently used dropped first; the
one being read is always kept). A listing costs about 250 bytes per message, so without a
bound every mailbox ever selected stayed in memory: 25 MB per 100,000-message mailbox."""
LISTING_CACHE_MAILBOXES = 64
"""Uids named in one statement (SQLite allows 32,766 parameters; a FETCH batch is far less)."""
SMALL_READ_ROWS = 64
"""At most this many rows are read on the event loop (``Database.read_small``)."""
SMALL_COUNT_ROWS = 4096
"""At most this many index entries are counted on the event loop (well under 1 ms)."""


def _changed_below(conn: Connection, mailbox_id: int, last_uid: int, modseq: int,
                   floor: int) -> bool:
    """Whether a message up to ``last_uid`` changed or went after ``modseq`` (or whether
    that cannot be told: tombstones up to ``floor`` were dropped). Both on modseq indexes."""
    return modseq < floor or conn.execute(
        "SELECT 1 FROM messages WHERE mailbox_id = ? AND modseq > ? AND uid <= ? LIMIT 1",
        (mailbox_id, modseq, last_uid)).fetchone() is not None or conn.execute(
        "SELECT 1 FROM expunged WHERE mailbox_id = ? AND modseq > ? LIMIT 1",
        (mailbox_id, modseq)).fetchone() is not None


def _by_uid(conn: Connection, columns: str, mailbox_id: int, uids: Sequence[int],
            params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """``(uid, *columns)`` of the messages among ``uids`` joined with their
    bodies (``m``, ``b``); ``params`` are the columns' own placeholders. A run of uids with
    few gaps (a message list's newest 50) is read as one uid range, a scan of the index
    that costs half what as many lookups do; rows in it not asked for are skipped."""
    sql = (f"SELECT m.uid, {columns} FROM messages m JOIN bodies b ON b.id = m.body_id"
           " WHERE m.mailbox_id = ? AND ")
    for i in range(0, len(uids), UID_CHUNK):
        chunk = uids[i:i + UID_CHUNK]
        low, high = min(chunk), max(chunk)
        if high - low < 2 * len(chunk):
            wanted = set(chunk)
            rows = conn.execute(sql + "m.uid BETWEEN ? AND ?",
                                (*params, mailbox_id, low, high))
            yield from (row for row in rows if row[0] in wanted)
        else:
            yield from conn.execute(
                sql + f"m.uid IN ({','.join('?' * len(chunk))})",
                (*params, mailbox_id, *chunk))


def _meta(uid: int, flags: str, internaldate: int, size: int, modseq: int = 0) -> MessageMeta:
    return MessageMeta(uid, _flags_set(flags), datetime.fromtimestamp(internaldate, UTC), size,
                       modseq)


_MAILBOX_KEYS = ("id", "user_id", "name", "uidvalidity", "uidnext", "special_use",
                 "recent_uid", "highest_modseq", "message_count", "unseen_count")
_MAILBOX_COLUMNS = ", ".join(_MAILBOX_KEYS)


_KEY_COLUMNS = ", ".join(sortkeys.STORED_COLUMNS)
_INSERT_KEYS = (f"INSERT INTO message_keys (mailbox_id, uid, arrival, size, {_KEY_COLUMNS})"
                f" VALUES (?, ?, ?, ?, {', '.join('?' * len(sortkeys.STORED_COLUMNS))})")
_COPY_KEYS = (f"INSERT INTO message_keys (mailbox_id, uid, arrival, size, {_KEY_COLUMNS})"
              f" SELECT ?, ?, arrival, size, {_KEY_COLUMNS} FROM message_keys"
              " WHERE mailbox_id = ? AND uid = ?")
_SORT_COLUMNS = ("uid, sent, subject, reply, from_addr, to_addr, cc_addr, display_from,"
                 " display_to, message_id, parents")
_THREAD_COLUMNS = "uid, sent, subject, reply, message_id, parents"


def _sort_keys(rows: Iterable[tuple[Any, ...]]) -> dict[int, sortkeys.SortKeys]:
    """``sortkeys.sort_keys`` of rows of ``_SORT_COLUMNS``."""
    keys = sortkeys.sort_keys
    return {row[0]: keys(*row[1:]) for row in rows}


def _thread_keys(rows: Iterable[tuple[Any, ...]]) -> dict[int, sortkeys.SortKeys]:
    """The keys THREAD compares, of rows of ``_THREAD_COLUMNS`` (the address keys left
    empty). Inlined ``sortkeys.sort_keys``: a THREAD of 100,000 messages reads them all."""
    text, keys = sortkeys.unoctets, sortkeys.SortKeys
    return {uid: keys((text(subject), bool(reply)), sent, "", "", "", "", "",
                      None if message_id is None else text(message_id),
                      tuple(text(parents).split(" ")) if parents else ())
            for uid, sent, subject, reply, message_id, parents in rows}


def order_by(criteria: Sequence[tuple[str, bool]]) -> str:
    """The ``ORDER BY`` of a SORT (RFC 5256): the criteria's columns in turn, REVERSE
    flipping only its own, full ties by uid ascending (= by sequence number)."""
    return ", ".join([f"{sortkeys.SORT_COLUMNS[name]}{' DESC' if reverse else ''}"
                      for name, reverse in criteria] + ["uid"])


def _is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


UIDVALIDITY_MAX = 0xFFFFFFFF


def next_uidvalidity(last: int, now: float) -> int:
    """A UIDVALIDITY larger than every one handed out before (RFC 3501 §2.3.1.1).

    The clock only makes values look like dates; a clock that steps back, two mailboxes in
    one second, or a restart can never repeat or lower one, because ``last`` is stored.
    """
    value = max(last + 1, int(now))
    if value > UIDVALIDITY_MAX:
        raise StoreError("UIDVALIDITY space exhausted")
    return value


class SqlStore:
    """Users, mailboxes, messages and the outbound queue in one SQLite database."""

    def __init__(self, db: Database, notifier: ChangeNotifier,
                 clock: Callable[[], float] = time.time,
                 keep_structure: bool = True,
                 user_quota: int | None = None) -> None:
        self.db = db
        self.user_quota = user_quota
        """Bytes of mail each user may keep (None: no limit); APPEND and COPY past it fail."""
        self.keep_structure = keep_structure
        """Whether a new message's MIME structure is stored (computed once, when it
        arrives); its sort and search keys always are."""
        # Password hashing gets one thread of its own: a flood of guesses queues up here
        # instead of taking the shared pool that sealing and opening mail also use.
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailnode-scrypt")
        self._verified = RecentlyVerified()
        self._checking: dict[tuple[str, str, str], asyncio.Future[bool]] = {}
        """Slow checks running, by (login, stored hash, password): see ``_slow_check``."""
        self.notifier = notifier
        self.clock = clock
        # mailbox id -> (notifier version, listing being or already loaded). Every write of
        # this process bumps the version after its commit, so ten sessions woken by one change
        # share one query. A load that straddles a write is keyed by the older version and is
        # replaced as soon as the bump is seen.
        # Bounded: LISTING_CACHE_MESSAGES and LISTING_CACHE_MAILBOXES, least recently used out.
        self._listings: OrderedDict[int, tuple[int, asyncio.Future[_Listing]]] = OrderedDict()
        self._identities: dict[int, Identity] = {}
        # Bytes of outbound mail queued, counted once and then kept by the transactions that
        # add and remove queued mail (on the database thread only); None: count again.
        self._queued: int | None = None
        self._object_key: bytes | None = None
        """The node's key for MAILBOXID and EMAILID (migration 0009 made it)."""
        self.tombstone_limit = TOMBSTONE_LIMIT

    # ---- helpers -----------------------------------------------------------------------

    def analyse(self, body: bytes) -> Analysed:
        """The structure of new message bytes and the keys derived from it, from one MIME
        analysis: computed before the write, so that the writer (one for the whole node)
        does not spend ~80 us per message on them."""
        tree, top = analyse_top(body)
        return Analysed(tree.encode() if self.keep_structure else None,
                        sortkeys.stored_keys(body, tree, top))

    async def _structure(self, body: bytes) -> Analysed:
        """``analyse``, off the event loop."""
        return await asyncio.to_thread(self.analyse, body)

    async def _write(self, fn: Callable[[Connection], tuple[T, Iterable[int]]],
                     durable: bool = True, appended: bool = False, alone: bool = False,
                     clean: bool = False) -> T:
        return await self._published(self.db.run(fn, durable, alone=alone, clean=clean),
                                     appended)

    async def _published(self, write: Awaitable[tuple[T, Iterable[int]]],
                         appended: bool = False) -> T:
        """The result of a write, once the mailboxes it changed are announced (``appended``:
        it only added messages to them, so listings can be extended, not reloaded)."""
        result, changed = await write
        for mailbox_id in set(changed):
            await self.notifier.publish(mailbox_id, appended)
        return result

    def _mailbox_row(self, conn: Connection, user_id: int, name: str,
                     small: bool = False) -> Mailbox | None:
        # SELECT, STATUS, APPEND and COPY each look their mailbox up.
        cur = conn.execute(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = ? AND "
            + ("upper(name) = 'INBOX'" if _is_inbox(name) else "name = ?"),
            (user_id,) if _is_inbox(name) else (user_id, name))
        row = cur.fetchone()
        if row is None:
            return None
        return self._mailbox(conn, dict(zip(_MAILBOX_KEYS, row, strict=True)), small)

    def _mailbox(self, conn: Connection, m: Mapping[str, Any], small: bool = False) -> Mailbox:
        """The mailbox with its counts: messages and unseen as the triggers of migration
        0010 keep them on the row, recent from the uid index (the uids above the last one
        claimed), so no lookup reads every message of the mailbox. ``small`` (on the event
        loop): ``TooLarge`` rather than count more than ``SMALL_COUNT_ROWS`` entries."""
        if small and m["uidnext"] - 1 - m["recent_uid"] > SMALL_COUNT_ROWS:
            raise TooLarge
        recent = conn.execute(
            "SELECT count(*) FROM messages WHERE mailbox_id = ? AND uid > ?",
            (m["id"], m["recent_uid"])).fetchone()[0]
        return Mailbox(m["id"], m["user_id"], m["name"], m["uidvalidity"], m["uidnext"],
                       m["special_use"], m["message_count"], m["unseen_count"], recent,
                       objectid.mailbox_id(self._key(conn), m["id"]), m["highest_modseq"])

    def _key(self, conn: Connection) -> bytes:
        key = self._object_key
        if key is None:
            [(value,)] = conn.execute(
                "SELECT value FROM object_keys WHERE name = 'objectid'").fetchall()
            key = self._object_key = bytes(value)
        return key

    def _uidvalidity(self, conn: Connection) -> int:
        """The next UIDVALIDITY, taken from the counter (its row is made by migration 0004)."""
        [(last,)] = conn.execute(
            "SELECT value FROM counters WHERE name = 'uidvalidity'").fetchall()
        value = next_uidvalidity(last, self.clock())
        conn.execute("UPDATE counters SET value = ? WHERE name = 'uidvalidity'", (value,))
        return value

    def _new_mailbox(self, conn: Connection, user_id: int, name: str,
                     special_use: str | None) -> int:
        cur = conn.execute("INSERT INTO mailboxes (user_id, name, uidvalidity, uidnext, "
                           "special_use) VALUES (?, ?, ?, 1, ?)",
                           (user_id, name, self._uidvalidity(conn), special_use))
        assert cur.lastrowid is not None
        return cur.lastrowid

    # Every stored message runs these few statements (sqlite3 keeps them prepared).

    @staticmethod
    def _add_body(conn: Connection, data: bytes, analysed: Analysed) -> int:
        # The header lines message lists ask for, kept apart once here (migration 0011).
        cur = conn.execute(
            "INSERT INTO bodies (data, structure, fields) VALUES (?, ?, ?)",
            (data, analysed.structure,
             stored_fields(data, analysed.structure, STRUCTURE_VERSION)))
        assert cur.lastrowid is not None
        return cur.lastrowid

    @staticmethod
    def _add_keys(conn: Connection, mailbox_id: int, uid: int, keys: sortkeys.StoredKeys,
                  internaldate: int, size: int) -> None:
        """The message's row of ``message_keys`` (migration 0013); RFC 5256: a missing or
        unparsable Date sorts by the internal date."""
        conn.execute(_INSERT_KEYS, (mailbox_id, uid, internaldate, size,
                                    internaldate if keys.sent is None else keys.sent,
                                    *keys[1:]))

    def _add_message(self, conn: Connection, mailbox_id: int, body_id: int, size: int,
                     flags: Iterable[str], internaldate: int) -> int:
        """A message on a stored body (its keys are the caller's to add); returns its uid."""
        return self._add_message_where(conn, "id = ?", mailbox_id, body_id, size, flags,
                                       internaldate, int(self.clock()))[1]

    def _add_to_inbox(self, conn: Connection, user_id: int, body_id: int, size: int,
                      internaldate: int, keys: sortkeys.StoredKeys) -> int:
        """``_add_message`` (with its keys) into the user's INBOX, found by the same
        statement that takes its next uid; returns the INBOX's id."""
        inbox, uid = self._add_message_where(conn, "user_id = ? AND name = 'INBOX'", user_id,
                                             body_id, size, (), internaldate, internaldate)
        self._add_keys(conn, inbox, uid, keys, internaldate, size)
        return inbox

    @staticmethod
    def _add_message_where(conn: Connection, where: str, key: int, body_id: int, size: int,
                           flags: Iterable[str], internaldate: int, saved: int,
                           ) -> tuple[int, int]:
        """``saved``: its RFC 8514 save date (now: it is being put into the mailbox)."""
        taken = conn.execute("UPDATE mailboxes SET uidnext = uidnext + 1, "
                             f"highest_modseq = highest_modseq + 1 WHERE {where} "
                             "RETURNING id, uidnext - 1, highest_modseq", (key,)).fetchall()
        if not taken:
            raise NoSuchMailbox("mailbox no longer exists")
        mailbox_id, uid, modseq = (int(v) for v in taken[0])
        conn.execute("INSERT INTO messages (mailbox_id, uid, flags, internaldate, size, "
                     "body_id, savedate, modseq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (mailbox_id, uid, _flags_text(flags), internaldate, size, body_id, saved,
                      modseq))
        return mailbox_id, uid

    def _file(self, conn: Connection, mailbox_id: int, body: bytes, analysed: Analysed,
              flags: Iterable[str], internaldate: int) -> int:
        """Store new message bytes and file them into a mailbox; returns the uid."""
        uid = self._add_message(conn, mailbox_id, self._add_body(conn, body, analysed),
                                len(body), flags, internaldate)
        self._add_keys(conn, mailbox_id, uid, analysed.keys, internaldate, len(body))
        return uid

    @staticmethod
    def _next_modseq(conn: Connection, mailbox_id: int) -> int:
        """Take the mailbox's next modseq for the change this transaction makes."""
        [(modseq,)] = conn.execute(
            "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = ? "
            "RETURNING highest_modseq", (mailbox_id,)).fetchall()
        return int(modseq)

    def _tombstones(self, conn: Connection, mailbox_id: int, uids: list[int]) -> None:
        """Record expunged uids at a new modseq; past ``tombstone_limit`` the oldest half
        goes and ``vanished_floor`` says up to which modseq (see ``TOMBSTONE_LIMIT``)."""
        if not uids:
            return
        modseq = self._next_modseq(conn, mailbox_id)
        conn.executemany("INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) "
                         "VALUES (?, ?, ?)", [(mailbox_id, uid, modseq) for uid in uids])
        [(count,)] = conn.execute("SELECT count(*) FROM expunged WHERE mailbox_id = ?",
                                  (mailbox_id,)).fetchall()
        if count <= self.tombstone_limit:
            return
        keep = self.tombstone_limit // 2
        [(cut,)] = conn.execute(
            "SELECT modseq FROM expunged WHERE mailbox_id = ? ORDER BY modseq LIMIT 1 "
            "OFFSET ?", (mailbox_id, count - keep - 1)).fetchall()
        conn.execute("DELETE FROM expunged WHERE mailbox_id = ? AND modseq <= ?",
                     (mailbox_id, cut))
        conn.execute("UPDATE mailboxes SET vanished_floor = max(vanished_floor, ?) "
                     "WHERE id = ?", (cut, mailbox_id))

    @staticmethod
    def _drop_orphan_bodies(conn: Connection, body_ids: Iterable[int]) -> None:
        """Delete bodies that no message refers to any more (after expunge or delete)."""
        ids = sorted(set(body_ids))
        for i in range(0, len(ids), UID_CHUNK):
            chunk = ids[i:i + UID_CHUNK]
            marks = ",".join("?" * len(chunk))
            used = {b for (b,) in conn.execute(
                f"SELECT body_id FROM messages WHERE body_id IN ({marks})", chunk)}
            gone = [b for b in chunk if b not in used]
            if gone:
                conn.execute(f"DELETE FROM bodies WHERE id IN ({','.join('?' * len(gone))})",
                             gone)

    def _inbox_id(self, conn: Connection, user_id: int) -> int:
        [(inbox,)] = conn.execute(
            "SELECT id FROM mailboxes WHERE user_id = ? AND name = 'INBOX'", (user_id,)
        ).fetchall()
        return int(inbox)

    # ---- users -------------------------------------------------------------------------

    async def create_user(self, name: str, password: str, identity: Identity) -> User:
        """Create a user with INBOX, Sent, Drafts and Trash."""
        pw_hash = await asyncio.get_running_loop().run_in_executor(
            self._hasher, hash_password, password)
        return await self.db.run(lambda conn: self._create_user(conn, name, pw_hash, identity))

    def _create_user(self, conn: Connection, name: str, pw_hash: str, identity: Identity) -> User:
        if conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone():
            raise UserExists(f"user {name!r} already exists")
        address = address_for(identity.verify_key)
        cur = conn.execute("INSERT INTO users (name, address, password_hash, identity_seed, "
                           "created_at) VALUES (?, ?, ?, ?, ?)",
                           (name, address, pw_hash, identity.seed, int(self.clock())))
        assert cur.lastrowid is not None
        user_id = cur.lastrowid
        for mailbox, special in SPECIAL_MAILBOXES:
            self._new_mailbox(conn, user_id, mailbox, special)
            conn.execute("INSERT INTO subscriptions (user_id, name) VALUES (?, ?)",
                         (user_id, mailbox))
        return User(user_id, name, address)

    @staticmethod
    def _by_login(login: str) -> tuple[str, tuple[str, str]]:
        """Users are found by name or by full address (the address case-insensitively)."""
        return "name = ? OR address = ?", (login, login.strip().lower())

    async def find_user(self, login: str) -> User | None:
        def q(conn: Connection) -> User | None:
            where, params = self._by_login(login)
            row = conn.execute(f"SELECT id, name, address FROM users WHERE {where}",
                               params).fetchone()
            return None if row is None else User(*row)
        return await self.db.read_small(q)  # one row, on an index

    async def list_users(self) -> list[User]:
        def q(conn: Connection) -> list[User]:
            rows = conn.execute("SELECT id, name, address FROM users ORDER BY id")
            return [User(*r) for r in rows]
        return await self.db.run(q)

    async def identity(self, user_id: int) -> Identity:
        """A user's key (kept once read: a user's key never changes, and ids are never
        reused, so the cache cannot hand out the wrong one)."""
        known = self._identities.get(user_id)
        if known is not None:
            return known
        [(seed,)] = await self.db.run(lambda conn: conn.execute(
            "SELECT identity_seed FROM users WHERE id = ?", (user_id,)).fetchall(),
            durable=False)
        identity = self._identities[user_id] = Identity(bytes(seed))
        return identity

    async def authenticate(self, login: str, password: str) -> User | None:
        def q(conn: Connection) -> tuple[User, str] | None:
            # A read (on a reader connection): logins never queue behind the writer.
            where, params = self._by_login(login)
            row = conn.execute(
                f"SELECT id, name, address, password_hash FROM users WHERE {where}",
                params).fetchone()
            return None if row is None else (User(row[0], row[1], row[2]), row[3])
        found = await self.db.read_small(q)
        stored = found[1] if found else DUMMY_HASH
        if found and self._verified.check(stored, password, self.clock()):
            return found[0]
        ok = await self._slow_check(login, stored, password)
        if found and ok:
            self._verified.remember(stored, password, self.clock())
        # Slowing guessers down is mailnode.auth's job (per source, before the hash).
        return found[0] if found and ok else None

    async def _slow_check(self, login: str, stored: str, password: str) -> bool:
        """The scrypt check, shared by logins with the same name and password that arrive
        while it runs (a client opening its connections at once; imaptest's ten): one
        16 MiB, ~50 ms check instead of one each, queued one behind the other on the hasher
        thread. The name is part of the key, so unknown names (all checked against
        DUMMY_HASH) never share a check and answer no sooner than a real user's."""
        key = (login, stored, password)
        check = self._checking.get(key)
        if check is None:
            check = asyncio.get_running_loop().run_in_executor(
                self._hasher, verify_password, stored, password)
            self._checking[key] = check
            check.add_done_callback(lambda _: self._checking.pop(key, None))
        return await asyncio.shield(check)

    async def set_password(self, name: str, password: str) -> bool:
        """Replace a user's password hash; False when there is no such user."""
        pw_hash = await asyncio.get_running_loop().run_in_executor(
            self._hasher, hash_password, password)
        return await self.db.run(lambda conn: conn.execute(
            "UPDATE users SET password_hash = ? WHERE name = ?", (pw_hash, name)
        ).rowcount == 1)

    async def delete_user(self, name: str) -> bool:
        """Delete a user with their mailboxes, mail and queued copies; False when unknown.

        Rows hang off ``users`` with ON DELETE CASCADE; message bodies and queue payloads are
        shared, so only those nobody else refers to any more are dropped.
        """
        def q(conn: Connection) -> tuple[bool, list[int]]:
            row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False, []
            user_id = row[0]
            boxes = [b for (b,) in conn.execute("SELECT id FROM mailboxes WHERE user_id = ?",
                                                (user_id,))]
            body_ids = [b for (b,) in conn.execute(
                "SELECT m.body_id FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
                " WHERE b.user_id = ?", (user_id,))]
            payload_ids = {p for (p,) in conn.execute(
                "SELECT payload_id FROM outbound WHERE user_id = ?"
                " AND payload_id IS NOT NULL", (user_id,))}
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
            self._drop_orphan_bodies(conn, body_ids)
            unused = [p for p in sorted(payload_ids) if conn.execute(
                "SELECT 1 FROM outbound WHERE payload_id = ? LIMIT 1", (p,)).fetchone() is None]
            conn.executemany("DELETE FROM outbound_payloads WHERE id = ?",
                             [(p,) for p in unused])
            self._queued = None  # recounted when next needed
            return True, boxes
        return await self._write(q, alone=True)

    # ---- mailboxes ---------------------------------------------------------------------

    async def list_mailboxes(self, user_id: int) -> list[Mailbox]:
        def q(conn: Connection, small: bool) -> list[Mailbox]:
            rows = conn.execute(f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = ?"
                                " ORDER BY name" + (f" LIMIT {SMALL_READ_ROWS + 1}" if small
                                                    else ""), (user_id,)).fetchall()
            boxes = [dict(zip(_MAILBOX_KEYS, r, strict=True)) for r in rows]
            # Small: few mailboxes, and few unclaimed messages to count in all of them.
            if small and (len(rows) > SMALL_READ_ROWS or sum(
                    m["uidnext"] - 1 - m["recent_uid"] for m in boxes) > SMALL_COUNT_ROWS):
                raise TooLarge
            return [self._mailbox(conn, m) for m in boxes]
        return await self.db.read_small(lambda conn: q(conn, True), lambda conn: q(conn, False))

    async def count_mailboxes(self, user_id: int) -> int:
        return await self.db.read_small(lambda conn: int(conn.execute(  # on an index
            "SELECT count(*) FROM mailboxes WHERE user_id = ?", (user_id,)).fetchone()[0]))

    async def get_mailbox(self, user_id: int, name: str) -> Mailbox | None:
        return await self.db.read_small(lambda conn: self._mailbox_row(conn, user_id, name, True),
                                        lambda conn: self._mailbox_row(conn, user_id, name))

    async def create_mailbox(self, user_id: int, name: str,
                             special_use: str | None = None) -> Mailbox:
        def q(conn: Connection) -> Mailbox:
            if self._mailbox_row(conn, user_id, name) is not None:
                raise MailboxExists(f"mailbox {name!r} already exists")
            self._new_mailbox(conn, user_id, name, special_use)
            box = self._mailbox_row(conn, user_id, name)
            assert box is not None
            return box
        return await self.db.run(q)

    async def delete_mailbox(self, user_id: int, name: str) -> None:
        def q(conn: Connection) -> tuple[Mailbox, list[int]]:
            box = self._mailbox_row(conn, user_id, name)
            if box is None:
                raise NoSuchMailbox(f"no mailbox {name!r}")
            if is_protected(box.name, box.special_use):
                raise MailboxProtected(f"{box.name} cannot be deleted")
            body_ids = [b for (b,) in conn.execute(
                "SELECT body_id FROM messages WHERE mailbox_id = ?", (box.id,))]
            conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (box.id,))
            conn.execute("DELETE FROM mailboxes WHERE id = ?", (box.id,))
            self._drop_orphan_bodies(conn, body_ids)
            return box, [box.id]
        box = await self._write(q, alone=True)
        self.notifier.retire(box.id, box.uidvalidity)

    async def rename_mailbox(self, user_id: int, old: str, new: str) -> None:
        def q(conn: Connection) -> tuple[Mailbox, list[int]]:
            box = self._mailbox_row(conn, user_id, old)
            if box is None:
                raise NoSuchMailbox(f"no mailbox {old!r}")
            if is_protected(box.name, box.special_use):
                raise MailboxProtected(f"{box.name} cannot be renamed")
            if self._mailbox_row(conn, user_id, new) is not None:
                raise MailboxExists(f"mailbox {new!r} already exists")
            # A new name is a new mailbox to clients: a fresh UIDVALIDITY, so one that cached
            # an earlier mailbox of that name cannot mistake these uids for its own.
            conn.execute("UPDATE mailboxes SET name = ?, uidvalidity = ? WHERE id = ?",
                         (new, self._uidvalidity(conn), box.id))
            return box, [box.id]
        box = await self._write(q)
        self.notifier.retire(box.id, box.uidvalidity)

    async def subscriptions(self, user_id: int) -> set[str]:
        return await self.db.read(lambda conn: {name for (name,) in conn.execute(
            "SELECT name FROM subscriptions WHERE user_id = ?", (user_id,))})

    async def subscribe(self, user_id: int, name: str, subscribed: bool) -> None:
        def q(conn: Connection) -> None:
            conn.execute("DELETE FROM subscriptions WHERE user_id = ? AND name = ?",
                         (user_id, name))
            if subscribed:
                conn.execute("INSERT INTO subscriptions (user_id, name) VALUES (?, ?)",
                             (user_id, name))
        await self.db.run(q, durable=False)

    # ---- messages ----------------------------------------------------------------------

    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        return (await self.snapshot(mailbox_id))[0]

    async def snapshot(self, mailbox_id: int) -> tuple[list[MessageMeta], int]:
        version = self.notifier.version(mailbox_id)
        cached = self._listings.get(mailbox_id)
        if cached is None or cached[0] != version:
            base: tuple[tuple[MessageMeta, ...], int] | None = None
            if cached is not None and cached[1].done() and not cached[1].cancelled() \
                    and cached[1].exception() is None \
                    and self.notifier.appends_since(mailbox_id, cached[0]):
                base = cached[1].result()  # only new messages since: read just those
            task = asyncio.ensure_future(self._load_listing(mailbox_id, version, base))
            self._listings[mailbox_id] = cached = (version, task)
            task.add_done_callback(lambda t: self._forget_failed(mailbox_id, t))
        self._listings.move_to_end(mailbox_id)
        metas, highest = await asyncio.shield(cached[1])
        self._trim_listings()
        return list(metas), highest

    def _trim_listings(self) -> None:
        """Drop the least recently used listings beyond the bounds (loads in flight are
        kept; the most recent entry always is)."""
        entries = self._listings
        total = sum(len(task.result()[0]) for _, task in entries.values()
                    if task.done() and not task.cancelled() and task.exception() is None)
        for mailbox_id in list(entries)[:-1]:
            if total <= LISTING_CACHE_MESSAGES and len(entries) <= LISTING_CACHE_MAILBOXES:
                return
            task = entries[mailbox_id][1]
            if not task.done():
                continue
            if not task.cancelled() and task.exception() is None:
                total -= len(task.result()[0])
            del entries[mailbox_id]

    def _forget_failed(self, mailbox_id: int, task: asyncio.Future[_Listing]) -> None:
        entry = self._listings.get(mailbox_id)
        if entry is not None and entry[1] is task and (task.cancelled() or task.exception()):
            del self._listings[mailbox_id]

    async def _load_listing(self, mailbox_id: int, version: int,
                            base: _Listing | None = None) -> _Listing:
        """The mailbox's messages and its highest modseq, read in one transaction; with
        ``base`` (a listing that later changes only added to, as far as the notifier has
        heard), ``base`` plus the messages after its last uid.

        The notifier hears of a change only after its commit: a flag change or an expunge
        committed but not yet published would be in this read's highest modseq but not in
        ``base``, and the session would never hear of it. So the read itself checks that
        nothing at or below ``base``'s last uid changed after ``base``'s modseq, and reads
        everything when something did."""
        def q(conn: Connection) -> _Listing:
            row = conn.execute("SELECT highest_modseq, vanished_floor FROM mailboxes"
                               " WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                raise NoSuchMailbox("mailbox no longer exists")
            kept = base if base and base[0] and not _changed_below(
                conn, mailbox_id, base[0][-1].uid, base[1], int(row[1])) else None
            after = kept[0][-1].uid if kept else 0
            # One frozenset per distinct flag text: most messages share a handful of them.
            rows = conn.execute(
                "SELECT uid, flags, internaldate, size, modseq FROM messages"
                " WHERE mailbox_id = ? AND uid > ? ORDER BY uid", (mailbox_id, after))
            flag_sets: dict[str, frozenset[str]] = {}
            metas = []
            for uid, text, date, size, modseq in rows:
                flags = flag_sets.get(text)
                if flags is None:
                    flags = flag_sets[text] = _flags_set(text)
                metas.append(MessageMeta(uid, flags, datetime.fromtimestamp(date, UTC), size,
                                         modseq))
            return (kept[0] if kept else ()) + tuple(metas), int(row[0])
        return await self.db.read(q)

    async def message_objects(self, mailbox_id: int, uids: Sequence[int],
                              ) -> dict[int, MessageObjects]:
        def q(conn: Connection) -> dict[int, MessageObjects]:
            key = self._key(conn)
            out: dict[int, MessageObjects] = {}
            wanted = list(uids)
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                rows = conn.execute(
                    "SELECT uid, body_id, savedate FROM messages WHERE mailbox_id = ?"
                    f" AND uid IN ({','.join('?' * len(chunk))})", (mailbox_id, *chunk))
                out.update({uid: MessageObjects(
                    objectid.email_id(key, body_id), None,
                    None if saved is None else datetime.fromtimestamp(saved, UTC))
                    for uid, body_id, saved in rows})
            return out
        return await self.db.run(q, durable=False)

    async def claim_recent(self, mailbox_id: int, known: int, claim: bool = True,
                           ) -> tuple[int, int]:
        def q(conn: Connection, take: bool) -> tuple[int, int]:
            # Every SELECT and every announced arrival claims.
            row = conn.execute("SELECT recent_uid, uidnext FROM mailboxes WHERE id = ?",
                               (mailbox_id,)).fetchone()
            if row is None:
                raise NoSuchMailbox("mailbox no longer exists")
            before = int(row[0])
            upto = max(before, min(int(row[1]) - 1, known))
            if take and upto > before:
                conn.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?",
                             (upto, mailbox_id))
            return before, upto
        # Of the sessions that see a new message, one claims it: the others (and EXAMINE)
        # find that out on a reader, without a transaction queued behind the writer's
        # commits. What is left to claim is claimed in the writing transaction.
        before, upto = await self.db.read_small(lambda conn: q(conn, False))
        if not claim or upto <= before:
            return before, upto
        return await self.db.run(lambda conn: q(conn, True), durable=False)

    async def fetch_bodies(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, bytes]:
        def q(conn: Connection) -> dict[int, bytes]:
            return {uid: bytes(data) for uid, data in _by_uid(
                conn, "b.data", mailbox_id, uids)}
        return await self.db.read(q)

    async def fetch_structures(self, mailbox_id: int, uids: Sequence[int],
                               ) -> dict[int, bytes | None]:
        """The stored MIME structure of each message (None where it was never computed)."""
        def q(conn: Connection) -> dict[int, bytes | None]:
            return {uid: None if st is None else bytes(st) for uid, st in _by_uid(
                conn, "b.structure", mailbox_id, uids)}
        return await self.db.read(q)

    async def sort_order(self, mailbox_id: int, criteria: Sequence[tuple[str, bool]],
                         upto: int | None = None) -> list[int]:
        """The uids of the mailbox's messages (up to ``upto``) in SORT order
        (``order_by``): one statement, on an index of (mailbox, key, uid) for one of the
        common criteria (``models._KEY_INDEXES``), else through SQLite's sorter."""
        sql = (f"SELECT uid FROM message_keys WHERE mailbox_id = ? AND uid <= ?"
               f" ORDER BY {order_by(criteria)}")
        last = UIDVALIDITY_MAX if upto is None else upto
        return await self.db.read(
            lambda conn: [uid for (uid,) in conn.execute(sql, (mailbox_id, last))])

    async def sort_keys(self, mailbox_id: int, uids: Sequence[int] | None, *,
                        thread: bool = False) -> dict[int, sortkeys.SortKeys]:
        """The stored keys of the given messages (None: all of the mailbox's, in one
        statement); ``thread``: only what THREAD compares, the address keys left empty."""
        columns, made = (_THREAD_COLUMNS, _thread_keys) if thread else (_SORT_COLUMNS,
                                                                          _sort_keys)

        def q(conn: Connection) -> dict[int, sortkeys.SortKeys]:
            sql = f"SELECT {columns} FROM message_keys WHERE mailbox_id = ?"
            if uids is None:
                with sortkeys.collection_paused():
                    return made(conn.execute(sql, (mailbox_id,)))
            out: dict[int, sortkeys.SortKeys] = {}
            for i in range(0, len(uids), UID_CHUNK):
                chunk = uids[i:i + UID_CHUNK]
                out.update(made(conn.execute(
                    sql + f" AND uid IN ({','.join('?' * len(chunk))})",
                    (mailbox_id, *chunk))))
            return out
        return await self.db.read(q)

    async def search_texts(self, mailbox_id: int, name: str, needle: str) -> set[int]:
        """The uids whose SEARCH ``name`` (FROM/TO/CC/BCC/SUBJECT) texts contain the
        case-folded ``needle`` (``sortkeys.texts``); an empty needle (SUBJECT): those with
        a Subject field.
        ``instr`` on the octets: case-folding was done on both sides in Python, and a
        needle's UTF-8 occurs in a text's UTF-8 exactly where its characters do."""
        column = sortkeys.SEARCH_COLUMNS[name]
        if not needle:
            sql = f"SELECT uid FROM message_keys WHERE mailbox_id = ? AND length({column})"
            params: tuple[Any, ...] = (mailbox_id,)
        else:
            sql = (f"SELECT uid FROM message_keys WHERE mailbox_id = ?"
                   f" AND instr({column}, ?)")
            params = (mailbox_id, sortkeys.octets(needle))
        return await self.db.read(lambda conn: {uid for (uid,) in conn.execute(sql, params)})

    async def fetch_messages(self, mailbox_id: int, uids: Sequence[int],
                             ) -> dict[int, tuple[bytes, bytes | None]]:
        def q(conn: Connection) -> dict[int, tuple[bytes, bytes | None]]:
            return {uid: (bytes(data), None if st is None else bytes(st))
                    for uid, data, st in _by_uid(conn, "b.data, b.structure", mailbox_id,
                                                 uids)}
        return await self.db.read(q)

    async def fetch_headers(self, mailbox_id: int, uids: Sequence[int], *,
                            small: bool = False, fields: bool = False,
                            ) -> dict[int, bytes | None]:
        # The root's offsets open the stored structure (format VERSION, then JSON:
        # [0, body_start, ...]): SQLite reads body_start from that prefix and cuts the header
        # out, so a header FETCH neither decodes structures (nor parses their JSON) nor
        # copies bodies into Python. With ``fields``, the stored fields (of the current
        # version) stand in for the block where a message has them.
        column = ("CASE WHEN substr(b.structure, 1, 4) = ?"
                  " AND CAST(substr(b.structure, 5, 12) AS INTEGER) BETWEEN 0 AND length(b.data)"
                  " THEN substr(b.data, 1, CAST(substr(b.structure, 5, 12) AS INTEGER)) END")
        params: tuple[bytes, ...] = (bytes([STRUCTURE_VERSION]) + b"[0,",)
        if fields:
            column = (f"CASE WHEN substr(b.fields, 1, 1) = ? THEN substr(b.fields, 2)"
                      f" ELSE {column} END")
            params = (bytes([STORED_FIELDS_VERSION]), *params)

        def q(conn: Connection) -> dict[int, bytes | None]:
            return {uid: None if head is None else bytes(head) for uid, head in _by_uid(
                conn, column, mailbox_id, uids, params)}
        return await (self.db.read_small(q) if small and len(uids) <= SMALL_READ_ROWS
                      else self.db.read(q))

    async def save_structures(self, mailbox_id: int, structures: dict[int, bytes]) -> None:
        def q(conn: Connection) -> None:
            conn.executemany(
                "UPDATE bodies SET structure = ? WHERE id = (SELECT body_id FROM messages"
                " WHERE mailbox_id = ? AND uid = ?)",
                [(blob, mailbox_id, uid) for uid, blob in structures.items()])
        await self.db.run(q, durable=False, alone=len(structures) > UID_CHUNK)

    async def store_flags(self, mailbox_id: int, uids: Sequence[int], flags: frozenset[str],
                          mode: FlagMode) -> list[MessageMeta]:
        return (await self.store_flags_unchanged_since(mailbox_id, uids, flags, mode, None))[0]

    async def store_flags_unchanged_since(
            self, mailbox_id: int, uids: Sequence[int], flags: frozenset[str], mode: FlagMode,
            unchangedsince: int | None) -> tuple[list[MessageMeta], list[int]]:
        def q(conn: Connection) -> tuple[tuple[list[MessageMeta], list[int]], list[int]]:
            stored: list[tuple[int, str, int, int, int]] = []
            failed: list[int] = []
            by_new_flags: defaultdict[str, list[int]] = defaultdict(list)
            wanted = sorted(set(uids))
            for i in range(0, len(wanted), UID_CHUNK):
                chunk = wanted[i:i + UID_CHUNK]
                rows = conn.execute(
                    "SELECT id, uid, flags, internaldate, size, modseq FROM messages"
                    f" WHERE mailbox_id = ? AND uid IN ({','.join('?' * len(chunk))})"
                    " ORDER BY uid", (mailbox_id, *chunk)).fetchall()
                for row_id, uid, old_text, internaldate, size, modseq in rows:
                    if unchangedsince is not None and modseq > unchangedsince:
                        failed.append(uid)
                        continue
                    old = _flags_set(old_text)
                    new = flags if mode == "set" else (old | flags if mode == "add"
                                                       else old - flags)
                    new_text = _flags_text(new)
                    if new != old:
                        by_new_flags[new_text].append(row_id)
                        modseq = 0  # takes the new modseq below
                    stored.append((uid, new_text, internaldate, size, modseq))
            if not by_new_flags:
                return ([_meta(*row) for row in stored], failed), []
            new_modseq = self._next_modseq(conn, mailbox_id)
            # One UPDATE per resulting flag set: "+FLAGS \\Seen" on 1:* is a handful of
            # statements, not one per message.
            for new_text, ids in by_new_flags.items():
                for i in range(0, len(ids), UID_CHUNK):
                    chunk = ids[i:i + UID_CHUNK]
                    conn.execute(
                        "UPDATE messages SET flags = ?, modseq = ?"
                        f" WHERE id IN ({','.join('?' * len(chunk))})",
                        (new_text, new_modseq, *chunk))
            result = [_meta(uid, text, date, size, modseq or new_modseq)
                      for uid, text, date, size, modseq in stored]
            return (result, failed), [mailbox_id]
        return await self._write(q, durable=False, alone=len(uids) > UID_CHUNK)

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        """Usually a few rows, read on the event loop; many go to a reader thread."""
        def q(conn: Connection, small: bool) -> Changes:
            # Small: at most one row more than allowed, taken from the modseq index in its
            # order (so the work is bounded too), then sorted here.
            tail = f" LIMIT {SMALL_READ_ROWS + 1}" if small else " ORDER BY uid"
            row = conn.execute("SELECT highest_modseq, vanished_floor FROM mailboxes "
                               "WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                raise NoSuchMailbox("mailbox no longer exists")
            highest, floor = int(row[0]), int(row[1])
            if modseq >= highest:
                return Changes([], [], highest)
            changed = [_meta(*r) for r in conn.execute(
                "SELECT uid, flags, internaldate, size, modseq FROM messages"
                " WHERE mailbox_id = ? AND modseq > ?" + tail, (mailbox_id, modseq))]
            complete = modseq >= floor
            vanished = [int(u) for (u,) in conn.execute(
                "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ?" + tail,
                (mailbox_id, modseq))] if complete else []
            if small:
                if max(len(changed), len(vanished)) > SMALL_READ_ROWS:
                    raise TooLarge
                changed.sort(key=lambda meta: meta.uid)
                vanished.sort()
            return Changes(changed, vanished, highest, complete)
        return await self.db.read_small(lambda conn: q(conn, True), lambda conn: q(conn, False))

    async def append(self, mailbox_id: int, body: bytes, flags: frozenset[str],
                     internaldate: datetime | None) -> tuple[int, int]:
        when = int(internaldate.timestamp() if internaldate else self.clock())
        structure = await self._structure(body)

        def q(conn: Connection) -> tuple[tuple[int, int], list[int]]:
            row = conn.execute("SELECT uidvalidity FROM mailboxes WHERE id = ?",
                               (mailbox_id,)).fetchone()
            if row is None:
                raise NoSuchMailbox("mailbox no longer exists")
            self._check_quota(conn, mailbox_id, len(body))
            uid = self._file(conn, mailbox_id, body, structure, flags, when)
            return (int(row[0]), uid), [mailbox_id]
        return await self._write(q, appended=True)

    async def append_many(self, mailbox_id: int,
                          items: Sequence[tuple[bytes, frozenset[str], datetime | None]],
                          ) -> tuple[int, list[int]]:
        now = self.clock()
        prepared = [(body, flags, int(date.timestamp() if date else now),
                     await self._structure(body)) for body, flags, date in items]

        def q(conn: Connection) -> tuple[tuple[int, list[int]], list[int]]:
            row = conn.execute("SELECT uidvalidity FROM mailboxes WHERE id = ?",
                               (mailbox_id,)).fetchone()
            if row is None:
                raise NoSuchMailbox("mailbox no longer exists")
            self._check_quota(conn, mailbox_id, sum(len(item[0]) for item in prepared))
            uids = [self._file(conn, mailbox_id, body, structure, flags, when)
                    for body, flags, when, structure in prepared]
            return (int(row[0]), uids), [mailbox_id]
        return await self._write(q, appended=True)

    async def expunge(self, mailbox_id: int, uids: Iterable[int] | None = None) -> list[int]:
        restrict = None if uids is None else set(uids)

        def q(conn: Connection) -> tuple[list[int], list[int]]:
            rows = conn.execute(
                "SELECT id, uid, body_id FROM messages WHERE mailbox_id = ?"
                " AND flags LIKE '%' || ? || '%' ORDER BY uid", (mailbox_id, "\\Deleted"))
            gone = [(rid, uid, body_id) for rid, uid, body_id in rows
                    if (restrict is None or uid in restrict)]
            for i in range(0, len(gone), UID_CHUNK):
                chunk = [rid for rid, _, _ in gone[i:i + UID_CHUNK]]
                conn.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})",
                             chunk)
            self._drop_orphan_bodies(conn, (body_id for _, _, body_id in gone))
            removed = [uid for _, uid, _ in gone]
            self._tombstones(conn, mailbox_id, removed)
            return removed, [mailbox_id] if removed else []
        return await self._write(q, durable=False, alone=True)

    async def copy(self, src_mailbox_id: int, uids: Sequence[int],
                   dst_mailbox_id: int) -> list[tuple[int, int]]:
        return await self._transfer(src_mailbox_id, uids, dst_mailbox_id, remove=False)

    async def move(self, src_mailbox_id: int, uids: Sequence[int],
                   dst_mailbox_id: int) -> list[tuple[int, int]]:
        return await self._transfer(src_mailbox_id, uids, dst_mailbox_id, remove=True)

    async def _transfer(self, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int,
                        remove: bool) -> list[tuple[int, int]]:
        def q(conn: Connection) -> tuple[list[tuple[int, int]], list[int]]:
            if conn.execute("SELECT id FROM mailboxes WHERE id = ?",
                            (dst_mailbox_id,)).fetchone() is None:
                raise NoSuchMailbox("target mailbox does not exist")
            pairs: list[tuple[int, int]] = []
            wanted = sorted(set(uids))
            rows = []
            for i in range(0, len(wanted), UID_CHUNK):
                chunk = wanted[i:i + UID_CHUNK]
                rows += conn.execute(
                    "SELECT id, uid, body_id, size, flags, internaldate FROM messages"
                    f" WHERE mailbox_id = ? AND uid IN ({','.join('?' * len(chunk))})"
                    " ORDER BY uid", (src_mailbox_id, *chunk)).fetchall()
            if not remove:  # a move takes no more room than before
                self._check_quota(conn, dst_mailbox_id, sum(row[3] for row in rows))
            for row_id, uid, body_id, size, flags, internaldate in rows:
                # The copy shares the bytes: messages never change, so no copy of them is made.
                new = self._add_message(conn, dst_mailbox_id, body_id, size,
                                        _flags_set(flags), internaldate)
                conn.execute(_COPY_KEYS, (dst_mailbox_id, new, src_mailbox_id, uid))
                pairs.append((uid, new))
                if remove:
                    conn.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            if not pairs:
                return pairs, []
            if remove:
                self._tombstones(conn, src_mailbox_id, [uid for uid, _ in pairs])
            return pairs, [dst_mailbox_id, src_mailbox_id] if remove else [dst_mailbox_id]
        return await self._write(q, alone=len(uids) > UID_CHUNK)

    # ---- quota and annotations ---------------------------------------------------------

    @staticmethod
    def _usage(conn: Connection, user_id: int) -> tuple[int, int]:
        """The user's stored counters (one row, whatever the mailbox sizes): the triggers of
        migration 0009 keep them in the transaction of every insert and delete."""
        row = conn.execute(
            "SELECT storage_used, message_count FROM users WHERE id = ?", (user_id,)).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def _check_quota(self, conn: Connection, mailbox_id: int, adding: int) -> None:
        """Raise OverQuota when ``adding`` bytes more would take the mailbox's owner past
        the quota: checked in the writing transaction, so racing APPENDs cannot both pass."""
        if self.user_quota is None or adding <= 0:
            return
        row = conn.execute(
            "SELECT u.storage_used FROM mailboxes b JOIN users u ON u.id = b.user_id "
            "WHERE b.id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NoSuchMailbox("mailbox no longer exists")
        if int(row[0]) + adding > self.user_quota:
            raise OverQuota("storage quota exceeded")

    def _user_has_room(self, conn: Connection, user_id: int, adding: int) -> bool:
        return self.user_quota is None or self._usage(conn, user_id)[0] + adding \
            <= self.user_quota

    async def recount_usage(self) -> int:
        """Derive every user's counters again from their messages (what migration 0009
        did); returns how many users' counters were off. The triggers keep them right, so
        this is a check, and a repair should a database have been edited by hand."""
        def q(conn: Connection) -> int:
            return int(conn.execute(
                "UPDATE users SET (storage_used, message_count) = (SELECT "
                "COALESCE(SUM(m.size), 0), COUNT(m.id) FROM messages m JOIN mailboxes b "
                "ON b.id = m.mailbox_id WHERE b.user_id = users.id) WHERE (storage_used, "
                "message_count) IS NOT (SELECT COALESCE(SUM(m.size), 0), COUNT(m.id) FROM "
                "messages m JOIN mailboxes b ON b.id = m.mailbox_id "
                "WHERE b.user_id = users.id)").rowcount)
        return await self.db.run(q)

    async def usage(self, user_id: int) -> Usage:
        storage, count = await self.db.read_small(lambda conn: self._usage(conn, user_id))
        return Usage(storage, count, self.user_quota)

    @staticmethod
    def _where_metadata(user_id: int, mailbox_id: int | None) -> tuple[str, tuple[int, ...]]:
        """Server annotations (no mailbox) or one mailbox's, of one user."""
        if mailbox_id is None:
            return "user_id = ? AND mailbox_id IS NULL", (user_id,)
        return "user_id = ? AND mailbox_id = ?", (user_id, mailbox_id)

    async def get_metadata(self, user_id: int, mailbox_id: int | None) -> dict[str, bytes]:
        def q(conn: Connection) -> dict[str, bytes]:
            where, params = self._where_metadata(user_id, mailbox_id)
            rows = conn.execute(f"SELECT entry, value FROM metadata_entries WHERE {where}",
                                params)
            return {entry: bytes(value) for entry, value in rows}
        return await self.db.run(q, durable=False)

    async def set_metadata(self, user_id: int, mailbox_id: int | None,
                           changes: dict[str, bytes | None], max_entries: int) -> None:
        def q(conn: Connection) -> None:
            if mailbox_id is not None and conn.execute(
                    "SELECT id FROM mailboxes WHERE id = ? AND user_id = ?",
                    (mailbox_id, user_id)).fetchone() is None:
                raise NoSuchMailbox("mailbox no longer exists")
            here, params = self._where_metadata(user_id, mailbox_id)
            existing = {e for (e,) in conn.execute(
                f"SELECT entry FROM metadata_entries WHERE {here}", params)}
            added = sum(1 for k, v in changes.items() if v is not None and k not in existing)
            removed = sum(1 for k, v in changes.items() if v is None and k in existing)
            if added > removed:
                [(total,)] = conn.execute(
                    "SELECT count(*) FROM metadata_entries WHERE user_id = ?",
                    (user_id,)).fetchall()
                if total + added - removed > max_entries:
                    raise MetadataFull("too many annotations")
            for entry, value in changes.items():
                conn.execute(f"DELETE FROM metadata_entries WHERE {here} AND entry = ?",
                             (*params, entry))
                if value is not None:
                    conn.execute("INSERT INTO metadata_entries (user_id, mailbox_id, entry, "
                                 "value) VALUES (?, ?, ?, ?)",
                                 (user_id, mailbox_id, entry, value))
        await self.db.run(q)

    # ---- delivery ----------------------------------------------------------------------

    async def submit(self, sub: Submission | Callable[[], Submission],
                     max_queued: int | None = None) -> Filed:
        """File local copies and queue remote ones in one transaction (SMTP's 250).

        ``sub`` may be a function that makes the Submission (vetting the message first, say):
        it runs on a worker thread, off the event loop, and what it raises is raised here.
        With ``max_queued``, raises QueueFull instead when the remote copies would take the
        queue past that many bytes: checked in the transaction, so concurrent submissions
        cannot all squeeze past the limit.
        """
        now = int(self.clock())
        if isinstance(sub, Submission):
            ready = sub.analysed
            if ready is None and sub.local_users:
                ready = await asyncio.to_thread(self.analyse, sub.local_body)
            return await self._counting(self._write(
                self._submission(sub, ready, now, max_queued), appended=True, clean=True))

        def prepare() -> Callable[[Connection], tuple[Filed, list[int]]]:
            made = sub()
            ready = made.analysed
            if ready is None and made.local_users:
                ready = self.analyse(made.local_body)
            return self._submission(made, ready, now, max_queued)
        return await self._counting(self._published(self.db.run_after(prepare, clean=True),
                                                    appended=True))

    def _submission(self, sub: Submission, analysed: Analysed | None, now: int,
                    max_queued: int | None,
                    ) -> Callable[[Connection], tuple[Filed, list[int]]]:
        """The transaction of ``submit``. ``analysed``: the local copy's structure and
        keys, worked out beforehand when it was known to be filed locally (a structure
        given, or ``local_users``); a recipient found local only here has them worked
        out in the transaction. Every refusal comes before the first change (``clean``)."""
        def q(conn: Connection) -> tuple[Filed, list[int]]:
            local = dict.fromkeys(sub.local_users)
            remote = list(sub.remote)
            filed: dict[str, int] = {}
            if remote:
                found: dict[str, int] = dict(conn.execute(
                    "SELECT address, id FROM users WHERE address IN "
                    f"({', '.join('?' * len(remote))})",
                    [out.recipient for out in remote]).fetchall())
                if found:
                    remote = [out for out in remote if out.recipient not in found]
                    local.update(dict.fromkeys(found.values()))
                    filed.update(found)
            changed = []
            queued = 0
            if remote:
                queued = self._queued_bytes(conn)
                if max_queued is not None and queued + len(sub.content) > max_queued:
                    raise QueueFull(f"{queued} bytes queued, at most {max_queued}")
            if local:
                full = [user_id for user_id in local
                        if not self._user_has_room(conn, user_id, len(sub.local_body))]
                if full:
                    address = conn.execute("SELECT address FROM users WHERE id = ?",
                                           (full[0],)).fetchone()
                    raise RecipientOverQuota(str(address[0]) if address else "?")
                ready = analysed or self.analyse(sub.local_body)
                body_id = self._add_body(conn, sub.local_body, ready)
                for user_id in local:
                    changed.append(self._add_to_inbox(conn, user_id, body_id,
                                                      len(sub.local_body), now, ready.keys))
            if remote:
                payload_id = conn.execute(
                    "INSERT INTO outbound_payloads (content, headers) VALUES (?, ?)",
                    (sub.content, sub.headers)).lastrowid
                conn.executemany(
                    "INSERT INTO outbound (message_id, user_id, recipient, payload_id, "
                    "created_at, next_attempt_at, attempts) VALUES (?, ?, ?, ?, ?, ?, 0)",
                    [(out.message_id, sub.user_id, out.recipient, payload_id, now, now)
                     for out in remote])
                self._queued = queued + len(sub.content)  # last: nothing after it can raise
            return Filed(filed), changed
        return q

    def _queued_bytes(self, conn: Connection) -> int:
        """Bytes of outbound mail queued (payloads, and sealed envelopes of older queues)."""
        if self._queued is None:
            [(payloads,)] = conn.execute(
                "SELECT total(length(content)) FROM outbound_payloads").fetchall()
            [(sealed,)] = conn.execute("SELECT total(length(sealed)) FROM outbound").fetchall()
            self._queued = int(payloads) + int(sealed)
        return self._queued

    async def queued_bytes(self) -> int:
        """What ``submit`` compares with its limit (a read of the count once it is known)."""
        queued = self._queued
        if queued is not None:
            return queued
        return await self.db.run(self._queued_bytes, durable=False)

    async def _counting(self, write: Awaitable[T]) -> T:
        """A queue-changing write. Its transaction changes the count as its last step, so
        only a failed commit can leave the count off: then it is taken again."""
        try:
            return await write
        except sqlite3.Error:
            def forget(_conn: Connection) -> None:
                self._queued = None
            await asyncio.shield(self.db.run(forget, durable=False))
            raise

    async def deliver_inbound(self, user_id: int, sender_key: bytes, message_id: bytes,
                              body: bytes) -> bool:
        """File a verified message into INBOX once; False if it was already delivered."""
        now = int(self.clock())
        structure = await self._structure(body)

        def q(conn: Connection) -> tuple[bool, list[int]]:
            seen = conn.execute(
                "SELECT received_at FROM received WHERE sender_key = ? AND message_id = ?"
                " AND user_id = ?", (sender_key, message_id, user_id)).fetchone()
            if seen is not None:
                return False, []
            inbox = self._inbox_id(conn, user_id)
            self._check_quota(conn, inbox, len(body))
            conn.execute("INSERT INTO received (sender_key, message_id, user_id, received_at)"
                         " VALUES (?, ?, ?, ?)", (sender_key, message_id, user_id, now))
            self._file(conn, inbox, body, structure, (), now)
            return True, [inbox]
        return await self._write(q, appended=True, clean=True)  # refusals come first

    # ---- outbound queue ----------------------------------------------------------------

    async def due_outbound(self, now: int, limit: int = 50,
                           exclude: Iterable[int] = ()) -> list[QueuedMessage]:
        """Copies due by ``now``, soonest first, but for the ids in ``exclude`` (being
        attempted already)."""
        skip = list(exclude)

        def q(conn: Connection) -> list[QueuedMessage]:
            rows = conn.execute(
                "SELECT o.id, o.message_id, o.user_id, u.address, o.recipient, o.created_at,"
                " o.attempts, o.delay_notified,"
                " coalesce(length(p.content), length(o.sealed), 0)"
                " FROM outbound o JOIN users u ON u.id = o.user_id"
                " LEFT OUTER JOIN outbound_payloads p ON p.id = o.payload_id"
                " WHERE o.next_attempt_at <= ?"
                + (f" AND o.id NOT IN ({','.join('?' * len(skip))})" if skip else "")
                + " ORDER BY o.next_attempt_at LIMIT ?", (now, *skip, limit))
            return [QueuedMessage(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6], bool(r[7]),
                                  int(r[8])) for r in rows]
        return await self.db.run(q, durable=False)

    async def outbound_content(self, queue_id: int) -> OutboundContent | None:
        """The bytes of one queued copy (None if it is no longer queued)."""
        def q(conn: Connection) -> OutboundContent | None:
            row = conn.execute(
                "SELECT o.sealed, o.headers, p.content, p.headers FROM outbound o"
                " LEFT OUTER JOIN outbound_payloads p ON p.id = o.payload_id"
                " WHERE o.id = ?", (queue_id,)).fetchone()
            if row is None:
                return None
            sealed, legacy_headers, content, headers = row
            return OutboundContent(None if sealed is None else bytes(sealed),
                                   None if content is None else bytes(content),
                                   bytes(headers if headers is not None else legacy_headers
                                         or b""))
        return await self.db.run(q)

    async def next_outbound_at(self) -> int | None:
        found = await self.db.run(lambda conn: conn.execute(
            "SELECT min(next_attempt_at) FROM outbound").fetchone()[0])
        return None if found is None else int(found)

    async def outbound_done(self, queue_id: int, dsn: LocalCopy | None = None) -> None:
        """Drop a sent (or expired) envelope; an expiry files its DSN in the same commit."""
        structure = None if dsn is None else await self._structure(dsn.body)

        def q(conn: Connection) -> tuple[None, list[int]]:
            row = conn.execute("SELECT payload_id, length(sealed) FROM outbound WHERE id = ?",
                               (queue_id,)).fetchone()
            payload_id, freed = (None, None) if row is None else row
            conn.execute("DELETE FROM outbound WHERE id = ?", (queue_id,))
            if payload_id is not None and conn.execute(
                    "SELECT id FROM outbound WHERE payload_id = ? LIMIT 1",
                    (payload_id,)).fetchone() is None:
                content = conn.execute(
                    "SELECT length(content) FROM outbound_payloads WHERE id = ?",
                    (payload_id,)).fetchone()
                freed = None if content is None else content[0]
                conn.execute("DELETE FROM outbound_payloads WHERE id = ?", (payload_id,))
            changed = []
            if dsn is not None and structure is not None:
                inbox = self._inbox_id(conn, dsn.user_id)
                self._file(conn, inbox, dsn.body, structure, (), int(self.clock()))
                changed.append(inbox)
            if freed and self._queued is not None:
                self._queued -= int(freed)  # last: nothing after it can raise
            return None, changed
        # Without an fsync: should a power cut undo it, the copy is sent again and its
        # receiver files it once; the row and its DSN stand or fall together.
        await self._counting(self._write(q, durable=False))

    async def outbound_retry(self, queue_id: int, next_attempt_at: int, error: str,
                             count_attempt: bool = True, notice: LocalCopy | None = None,
                             ) -> None:
        """Schedule the next attempt; ``notice`` (a "delayed" DSN) is filed for the sender in
        the same commit, and the copy remembers it was sent (one per copy)."""
        more = 1 if count_attempt else 0
        structure = None if notice is None else await self._structure(notice.body)

        def q(conn: Connection) -> tuple[None, list[int]]:
            conn.execute("UPDATE outbound SET next_attempt_at = ?, last_error = ?,"
                         " attempts = attempts + ? WHERE id = ?",
                         (next_attempt_at, error, more, queue_id))
            if notice is None or structure is None or not conn.execute(
                    "UPDATE outbound SET delay_notified = 1 WHERE id = ?"
                    " AND delay_notified = 0", (queue_id,)).rowcount:
                return None, []
            inbox = self._inbox_id(conn, notice.user_id)
            self._file(conn, inbox, notice.body, structure, (), int(self.clock()))
            return None, [inbox]
        await self._write(q, durable=notice is not None)

    async def remember_record(self, user_key: bytes, record: bytes, seq: int,
                              node_key: bytes) -> None:
        """Keep the newest record seen for a correspondent (an older seq never replaces)."""
        def q(conn: Connection) -> None:
            held = conn.execute("SELECT seq FROM known_records WHERE user_key = ?",
                                (user_key,)).fetchone()
            if held is None:
                conn.execute("INSERT INTO known_records (user_key, record, seq, node_key)"
                             " VALUES (?, ?, ?, ?)", (user_key, record, seq, node_key))
            elif seq > held[0]:
                conn.execute("UPDATE known_records SET record = ?, seq = ?, node_key = ?"
                             " WHERE user_key = ?", (record, seq, node_key, user_key))
        await self.db.run(q, durable=False)

    async def retry_node_now(self, node_key: bytes, now: int) -> int:
        """Make due now every copy for users whose last known record names ``node_key``
        (that node just showed it is up: its mail need not wait out its backoff)."""
        def q(conn: Connection) -> int:
            users_there = [bytes(k) for (k,) in conn.execute(
                "SELECT user_key FROM known_records WHERE node_key = ?", (node_key,))]
            if not users_there:
                return 0
            addresses = [address_for(k) for k in users_there]
            count = 0
            for i in range(0, len(addresses), 500):
                chunk = addresses[i:i + 500]
                count += int(conn.execute(
                    "UPDATE outbound SET next_attempt_at = ? WHERE recipient IN"
                    f" ({','.join('?' * len(chunk))}) AND next_attempt_at > ?",
                    (now, *chunk, now)).rowcount)
            return count
        return await self.db.run(q, durable=False)

    async def known_node_keys(self) -> list[bytes]:
        """The node keys our correspondents' newest records name."""
        return await self.db.run(lambda conn: [bytes(k) for (k,) in conn.execute(
            "SELECT DISTINCT node_key FROM known_records")])

    async def last_record(self, user_key: bytes) -> bytes | None:
        """The newest record seen for ``user_key``, unverified (the caller verifies)."""
        row = await self.db.run(lambda conn: conn.execute(
            "SELECT record FROM known_records WHERE user_key = ?", (user_key,)).fetchone())
        return None if row is None else bytes(row[0])

    async def queue_entries(self) -> list[QueueEntry]:
        """Every queued copy, one per waiting recipient, next due first."""
        def q(conn: Connection) -> list[QueueEntry]:
            rows = conn.execute(
                "SELECT o.id, u.address, o.recipient, o.created_at, o.attempts,"
                " o.next_attempt_at, o.last_error FROM outbound o"
                " JOIN users u ON u.id = o.user_id ORDER BY o.next_attempt_at, o.id")
            return [QueueEntry(*r) for r in rows]
        return await self.db.run(q)

    async def retry_now(self, ids: Sequence[int] | None, now: int) -> int:
        """Make queued copies due at ``now`` (all of them when ``ids`` is None)."""
        def q(conn: Connection) -> int:
            if ids is None:
                return int(conn.execute("UPDATE outbound SET next_attempt_at = ?",
                                        (now,)).rowcount)
            return sum(conn.execute("UPDATE outbound SET next_attempt_at = ? WHERE id = ?",
                                    (now, queue_id)).rowcount for queue_id in set(ids))
        return await self.db.run(q)

    async def queue_length(self) -> int:
        return await self.db.run(lambda conn: int(conn.execute(
            "SELECT count(*) FROM outbound").fetchone()[0]))

