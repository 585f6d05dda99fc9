"""The friends' network in SQLite: invites handed out, friends' nodes, mail held for them.

Every public coroutine is one transaction on the database thread (see ``Database.run``);
anything acknowledged to another node (a redeemed invite, a held envelope) is durable.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailnode.store.database import Connection, Database

Endpoint = tuple[str, int]


def secret_hash(secret: bytes) -> bytes:
    return hashlib.sha256(b"mailnode-invite\0" + secret).digest()


@dataclass(frozen=True)
class Friend:
    id: int
    node_key: bytes
    name: str
    endpoints: tuple[Endpoint, ...]
    secret: bytes | None
    """The invite's secret while it is not redeemed yet (we are then "pending")."""
    invite_expires_at: int | None
    hold_bytes: int
    hold_days: int
    their_hold_bytes: int
    their_hold_days: int
    created_at: int
    last_seen: int | None
    last_error: str | None
    held_count: int = 0
    held_bytes: int = 0

    @property
    def pending(self) -> bool:
        return self.secret is not None

    @property
    def holds_for_us(self) -> bool:
        """Whether this friend agreed to keep mail for our users (we list it as a relay)."""
        return not self.pending and self.their_hold_bytes > 0 and self.their_hold_days > 0


@dataclass(frozen=True)
class HeldItem:
    id: int
    message_id: bytes
    recipient_key: bytes
    sealed: bytes


class HoldResult(enum.Enum):
    STORED = "stored"
    DUPLICATE = "already held"
    FULL = "full"


class Redemption(enum.Enum):
    UNKNOWN = "unknown invite"
    EXPIRED = "invite expired"
    USED = "invite already used by another node"


def _endpoints(text: str) -> tuple[Endpoint, ...]:
    try:
        return tuple((str(h), int(p)) for h, p in json.loads(text))
    except (ValueError, TypeError):
        return ()


_FRIEND_KEYS = ("id", "node_key", "name", "endpoints", "secret", "invite_expires_at",
                "hold_bytes", "hold_days", "their_hold_bytes", "their_hold_days", "created_at",
                "last_seen", "last_error")
_FRIEND = f"SELECT {', '.join(_FRIEND_KEYS)} FROM friends"


def _friend(row: Sequence[Any], count: int = 0, size: int = 0) -> Friend:
    m = dict(zip(_FRIEND_KEYS, row, strict=True))
    return Friend(
        id=m["id"], node_key=bytes(m["node_key"]), name=m["name"],
        endpoints=_endpoints(m["endpoints"]),
        secret=None if m["secret"] is None else bytes(m["secret"]),
        invite_expires_at=m["invite_expires_at"], hold_bytes=m["hold_bytes"],
        hold_days=m["hold_days"], their_hold_bytes=m["their_hold_bytes"],
        their_hold_days=m["their_hold_days"], created_at=m["created_at"],
        last_seen=m["last_seen"], last_error=m["last_error"], held_count=count,
        held_bytes=size)


def _upsert(conn: Connection, node_key: bytes, name: str, now: int,
            values: dict[str, object]) -> None:
    """Create the friend ``node_key`` with ``values``, or update it (its name stays)."""
    existing = conn.execute("SELECT id FROM friends WHERE node_key = ?",
                            (node_key,)).fetchone()
    if existing is None:
        row = {"node_key": node_key, "created_at": now,
               "name": _free_name(conn, name, node_key), **values}
        conn.execute(f"INSERT INTO friends ({', '.join(row)})"
                     f" VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    else:
        conn.execute(f"UPDATE friends SET {', '.join(f'{k} = ?' for k in values)}"
                     " WHERE id = ?", (*values.values(), existing[0]))


def _free_name(conn: Connection, wanted: str, node_key: bytes) -> str:
    """``wanted``, or with the key's first hex digits when another friend has that name."""
    owner = conn.execute("SELECT node_key FROM friends WHERE name = ?", (wanted,)).fetchone()
    if owner is None or bytes(owner[0]) == node_key:
        return wanted
    return f"{wanted[:23]}-{node_key.hex()[:8]}"


class FriendStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # invites we hand out

    async def create_invite(self, secret: bytes, hold_bytes: int, hold_days: int, now: int,
                            expires_at: int) -> None:
        def q(conn: Connection) -> None:
            conn.execute("INSERT INTO invites (secret_hash, hold_bytes, hold_days, created_at,"
                         " expires_at) VALUES (?, ?, ?, ?, ?)",
                         (secret_hash(secret), hold_bytes, hold_days, now, expires_at))
        await self.db.run(q)

    async def redeem_invite(self, secret: bytes, node_key: bytes, name: str,
                            endpoints: tuple[Endpoint, ...], their_hold_bytes: int,
                            their_hold_days: int, now: int) -> tuple[int, int] | Redemption:
        """Make ``node_key`` a friend if ``secret`` is an invite of ours that is current and
        unused (or used by that same node); returns what we hold for it."""
        def q(conn: Connection) -> tuple[int, int] | Redemption:
            row = conn.execute(
                "SELECT id, used_by, expires_at, hold_bytes, hold_days FROM invites"
                " WHERE secret_hash = ?", (secret_hash(secret),)).fetchone()
            if row is None:
                return Redemption.UNKNOWN
            invite = dict(zip(("id", "used_by", "expires_at", "hold_bytes", "hold_days"), row,
                              strict=True))
            if invite["used_by"] is not None and bytes(invite["used_by"]) != node_key:
                return Redemption.USED
            if invite["used_by"] is None and now >= invite["expires_at"]:
                return Redemption.EXPIRED
            conn.execute("UPDATE invites SET used_by = ? WHERE id = ?",
                         (node_key, invite["id"]))
            _upsert(conn, node_key, name, now, dict(
                hold_bytes=invite["hold_bytes"], hold_days=invite["hold_days"],
                their_hold_bytes=their_hold_bytes, their_hold_days=their_hold_days,
                endpoints=json.dumps([list(e) for e in endpoints]), secret=None,
                invite_expires_at=None, last_seen=now, last_error=None))
            return int(invite["hold_bytes"]), int(invite["hold_days"])
        return await self.db.run(q)

    # invites we accepted

    async def add_pending(self, node_key: bytes, name: str, endpoints: tuple[Endpoint, ...],
                          secret: bytes, invite_expires_at: int, hold_bytes: int,
                          hold_days: int, now: int) -> Friend:
        """Remember an invite to redeem (now or when its node is reachable)."""
        def q(conn: Connection) -> Friend:
            _upsert(conn, node_key, name, now, dict(
                endpoints=json.dumps([list(e) for e in endpoints]), secret=secret,
                invite_expires_at=invite_expires_at, hold_bytes=hold_bytes,
                hold_days=hold_days))
            [row] = conn.execute(f"{_FRIEND} WHERE node_key = ?", (node_key,)).fetchall()
            return _friend(row)
        return await self.db.run(q)

    async def welcomed(self, node_key: bytes, their_hold_bytes: int, their_hold_days: int,
                       now: int) -> None:
        def q(conn: Connection) -> None:
            conn.execute("UPDATE friends SET secret = NULL, invite_expires_at = NULL,"
                         " their_hold_bytes = ?, their_hold_days = ?, last_seen = ?,"
                         " last_error = NULL WHERE node_key = ?",
                         (their_hold_bytes, their_hold_days, now, node_key))
        await self.db.run(q)

    async def failed(self, node_key: bytes, error: str) -> None:
        def q(conn: Connection) -> None:
            conn.execute("UPDATE friends SET last_error = ? WHERE node_key = ?",
                         (error[:500], node_key))
        await self.db.run(q, durable=False)

    async def seen(self, node_key: bytes, now: int,
                   endpoints: tuple[Endpoint, ...] | None = None) -> None:
        def q(conn: Connection) -> None:
            if endpoints:
                conn.execute("UPDATE friends SET last_seen = ?, last_error = NULL,"
                             " endpoints = ? WHERE node_key = ? AND secret IS NULL",
                             (now, json.dumps([list(e) for e in endpoints]), node_key))
            else:
                conn.execute("UPDATE friends SET last_seen = ?, last_error = NULL"
                             " WHERE node_key = ? AND secret IS NULL", (now, node_key))
        await self.db.run(q, durable=False)

    async def moved(self, node_key: bytes, endpoints: tuple[Endpoint, ...], seq: int) -> None:
        """A friend's newer signed record says where its node is now (none: not dialable).
        Records of several users of that node may come in any order: the highest seq wins."""
        def q(conn: Connection) -> None:
            conn.execute("UPDATE friends SET endpoints = ?, endpoints_seq = ?"
                         " WHERE node_key = ? AND secret IS NULL AND endpoints_seq < ?",
                         (json.dumps([list(e) for e in endpoints]), seq, node_key, seq))
        await self.db.run(q, durable=False)

    # reading

    async def list_friends(self) -> list[Friend]:
        def q(conn: Connection) -> list[Friend]:
            usage = {friend_id: (n, size) for friend_id, n, size in conn.execute(
                "SELECT friend_id, count(*), sum(size) FROM held GROUP BY friend_id")}
            return [_friend(row, *usage.get(row[0], (0, 0)))
                    for row in conn.execute(f"{_FRIEND} ORDER BY name").fetchall()]
        return await self.db.run(q, durable=False)

    async def friend(self, node_key: bytes) -> Friend | None:
        def q(conn: Connection) -> Friend | None:
            row = conn.execute(f"{_FRIEND} WHERE node_key = ?", (node_key,)).fetchone()
            return None if row is None else _friend(row)
        return await self.db.run(q, durable=False)

    async def remove_friend(self, name: str) -> Friend | None:
        """Forget a friend and drop whatever we held for it; returns it (with what was
        dropped), or None when no friend has that name."""
        def q(conn: Connection) -> Friend | None:
            row = conn.execute(f"{_FRIEND} WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            count, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM held"
                                       " WHERE friend_id = ?", (row[0],)).fetchone()
            conn.execute("DELETE FROM held WHERE friend_id = ?", (row[0],))
            conn.execute("DELETE FROM friends WHERE id = ?", (row[0],))
            return _friend(row, int(count), int(size))
        return await self.db.run(q, alone=True)

    # relaying

    async def hold(self, node_key: bytes, message_id: bytes, recipient_key: bytes,
                   sealed: bytes, now: int, source: str = "") -> HoldResult | None:
        """Keep ``sealed`` for a user of friend ``node_key`` within what we agreed to hold for
        it, and from one ``source`` address within half of that (None: not a friend we hold
        for)."""
        def q(conn: Connection) -> HoldResult | None:
            row = conn.execute("SELECT id, hold_bytes, hold_days FROM friends"
                               " WHERE node_key = ? AND secret IS NULL",
                               (node_key,)).fetchone()
            if row is None:
                return None
            friend_id, hold_bytes, hold_days = row
            if hold_bytes <= 0 or hold_days <= 0:
                return None
            if conn.execute("SELECT id FROM held WHERE recipient_key = ? AND message_id = ?",
                            (recipient_key, message_id)).fetchone() is not None:
                return HoldResult.DUPLICATE
            used, by_source = conn.execute(
                "SELECT coalesce(sum(size), 0),"
                " coalesce(sum(size) FILTER (WHERE source = ?), 0)"
                " FROM held WHERE friend_id = ?", (source, friend_id)).fetchone()
            if used + len(sealed) > hold_bytes or by_source + len(sealed) > hold_bytes // 2:
                return HoldResult.FULL
            conn.execute("INSERT INTO held (friend_id, message_id, recipient_key, sealed, size,"
                         " received_at, expires_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (friend_id, message_id, recipient_key, sealed, len(sealed), now,
                          now + hold_days * 86400, source))
            return HoldResult.STORED
        return await self.db.run(q)

    async def next_held(self, node_key: bytes, after: int) -> HeldItem | None:
        def q(conn: Connection) -> HeldItem | None:
            row = conn.execute(
                "SELECT h.id, h.message_id, h.recipient_key, h.sealed FROM held h"
                " JOIN friends f ON f.id = h.friend_id WHERE f.node_key = ? AND h.id > ?"
                " ORDER BY h.id LIMIT 1", (node_key, after)).fetchone()
            if row is None:
                return None
            return HeldItem(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))
        return await self.db.run(q, durable=False)

    async def holding_for(self) -> list[bytes]:
        """Node keys of friends we hold something for."""
        def q(conn: Connection) -> list[bytes]:
            return [bytes(k) for (k,) in conn.execute(
                "SELECT node_key FROM friends WHERE id IN (SELECT DISTINCT friend_id FROM held)")]
        return await self.db.run(q, durable=False)

    async def drop_held(self, held_id: int) -> None:
        """Handed over (or refused for good by its node): no longer ours to keep."""
        def q(conn: Connection) -> None:
            conn.execute("DELETE FROM held WHERE id = ?", (held_id,))
        await self.db.run(q, durable=False)

    async def expire_held(self, now: int) -> int:
        def q(conn: Connection) -> int:
            return int(conn.execute("DELETE FROM held WHERE expires_at <= ?", (now,)).rowcount)
        return await self.db.run(q, durable=False, alone=True)
