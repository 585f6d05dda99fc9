"""The friends' network in SQLite: invites handed out, friends' nodes, mail held for them.

Every public coroutine is one transaction on the database thread (see ``Database.run``);
anything acknowledged to another node (a redeemed invite, a held envelope) is durable.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from mailnode.store.database import Database
from mailnode.store.models import friends, held, invites

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


def _friend(row: Row[tuple[object, ...]], count: int = 0, size: int = 0) -> Friend:
    m = row._mapping
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
    existing = conn.execute(select(friends.c.id).where(friends.c.node_key == node_key)).scalar()
    if existing is None:
        conn.execute(insert(friends).values(node_key=node_key, created_at=now,
                                            name=_free_name(conn, name, node_key), **values))
    else:
        conn.execute(update(friends).where(friends.c.id == existing).values(**values))


def _free_name(conn: Connection, wanted: str, node_key: bytes) -> str:
    """``wanted``, or with the key's first hex digits when another friend has that name."""
    owner = conn.execute(select(friends.c.node_key).where(friends.c.name == wanted)).scalar()
    if owner is None or bytes(owner) == node_key:
        return wanted
    return f"{wanted[:23]}-{node_key.hex()[:8]}"


class FriendStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # invites we hand out

    async def create_invite(self, secret: bytes, hold_bytes: int, hold_days: int, now: int,
                            expires_at: int) -> None:
        def q(conn: Connection) -> None:
            conn.execute(insert(invites).values(
                secret_hash=secret_hash(secret), hold_bytes=hold_bytes, hold_days=hold_days,
                created_at=now, expires_at=expires_at))
        await self.db.run(q)

    async def redeem_invite(self, secret: bytes, node_key: bytes, name: str,
                            endpoints: tuple[Endpoint, ...], their_hold_bytes: int,
                            their_hold_days: int, now: int) -> tuple[int, int] | Redemption:
        """Make ``node_key`` a friend if ``secret`` is an invite of ours that is current and
        unused (or used by that same node); returns what we hold for it."""
        def q(conn: Connection) -> tuple[int, int] | Redemption:
            row = conn.execute(select(invites).where(
                invites.c.secret_hash == secret_hash(secret))).first()
            if row is None:
                return Redemption.UNKNOWN
            invite = row._mapping
            if invite["used_by"] is not None and bytes(invite["used_by"]) != node_key:
                return Redemption.USED
            if invite["used_by"] is None and now >= invite["expires_at"]:
                return Redemption.EXPIRED
            conn.execute(update(invites).where(invites.c.id == invite["id"])
                         .values(used_by=node_key))
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
            row = conn.execute(select(friends).where(friends.c.node_key == node_key)).one()
            return _friend(row)
        return await self.db.run(q)

    async def welcomed(self, node_key: bytes, their_hold_bytes: int, their_hold_days: int,
                       now: int) -> None:
        def q(conn: Connection) -> None:
            conn.execute(update(friends).where(friends.c.node_key == node_key).values(
                secret=None, invite_expires_at=None, their_hold_bytes=their_hold_bytes,
                their_hold_days=their_hold_days, last_seen=now, last_error=None))
        await self.db.run(q)

    async def failed(self, node_key: bytes, error: str) -> None:
        def q(conn: Connection) -> None:
            conn.execute(update(friends).where(friends.c.node_key == node_key)
                         .values(last_error=error[:500]))
        await self.db.run(q, durable=False)

    async def seen(self, node_key: bytes, now: int,
                   endpoints: tuple[Endpoint, ...] | None = None) -> None:
        def q(conn: Connection) -> None:
            values: dict[str, object] = {"last_seen": now, "last_error": None}
            if endpoints:
                values["endpoints"] = json.dumps([list(e) for e in endpoints])
            conn.execute(update(friends).where(friends.c.node_key == node_key,
                                               friends.c.secret.is_(None)).values(**values))
        await self.db.run(q, durable=False)

    async def moved(self, node_key: bytes, endpoints: tuple[Endpoint, ...], seq: int) -> None:
        """A friend's newer signed record says where its node is now (none: not dialable).
        Records of several users of that node may come in any order: the highest seq wins."""
        def q(conn: Connection) -> None:
            conn.execute(update(friends).where(
                friends.c.node_key == node_key, friends.c.secret.is_(None),
                friends.c.endpoints_seq < seq).values(
                    endpoints=json.dumps([list(e) for e in endpoints]), endpoints_seq=seq))
        await self.db.run(q, durable=False)

    # reading

    async def list_friends(self) -> list[Friend]:
        def q(conn: Connection) -> list[Friend]:
            usage = {row.friend_id: (row.n, row.size) for row in conn.execute(
                select(held.c.friend_id, func.count().label("n"),
                       func.sum(held.c.size).label("size")).group_by(held.c.friend_id))}
            return [_friend(row, *usage.get(row.id, (0, 0)))
                    for row in conn.execute(select(friends).order_by(friends.c.name))]
        return await self.db.run(q, durable=False)

    async def friend(self, node_key: bytes) -> Friend | None:
        def q(conn: Connection) -> Friend | None:
            row = conn.execute(select(friends).where(friends.c.node_key == node_key)).first()
            return None if row is None else _friend(row)
        return await self.db.run(q, durable=False)

    async def remove_friend(self, name: str) -> Friend | None:
        """Forget a friend and drop whatever we held for it; returns it (with what was
        dropped), or None when no friend has that name."""
        def q(conn: Connection) -> Friend | None:
            row = conn.execute(select(friends).where(friends.c.name == name)).first()
            if row is None:
                return None
            count, size = conn.execute(select(func.count(), func.coalesce(func.sum(
                held.c.size), 0)).where(held.c.friend_id == row.id)).one()
            conn.execute(delete(held).where(held.c.friend_id == row.id))
            conn.execute(delete(friends).where(friends.c.id == row.id))
            return _friend(row, int(count), int(size))
        return await self.db.run(q)

    # relaying

    async def hold(self, node_key: bytes, message_id: bytes, recipient_key: bytes,
                   sealed: bytes, now: int, source: str = "") -> HoldResult | None:
        """Keep ``sealed`` for a user of friend ``node_key`` within what we agreed to hold for
        it, and from one ``source`` address within half of that (None: not a friend we hold
        for)."""
        def q(conn: Connection) -> HoldResult | None:
            row = conn.execute(select(friends).where(
                friends.c.node_key == node_key, friends.c.secret.is_(None))).first()
            if row is None or row.hold_bytes <= 0 or row.hold_days <= 0:
                return None
            if conn.execute(select(held.c.id).where(
                    held.c.recipient_key == recipient_key,
                    held.c.message_id == message_id)).first() is not None:
                return HoldResult.DUPLICATE
            used, by_source = conn.execute(
                select(func.coalesce(func.sum(held.c.size), 0),
                       func.coalesce(func.sum(held.c.size).filter(held.c.source == source), 0))
                .where(held.c.friend_id == row.id)).one()
            if used + len(sealed) > row.hold_bytes or \
                    by_source + len(sealed) > row.hold_bytes // 2:
                return HoldResult.FULL
            conn.execute(insert(held).values(
                friend_id=row.id, message_id=message_id, recipient_key=recipient_key,
                sealed=sealed, size=len(sealed), received_at=now,
                expires_at=now + row.hold_days * 86400, source=source))
            return HoldResult.STORED
        return await self.db.run(q)

    async def next_held(self, node_key: bytes, after: int) -> HeldItem | None:
        def q(conn: Connection) -> HeldItem | None:
            row = conn.execute(
                select(held.c.id, held.c.message_id, held.c.recipient_key, held.c.sealed)
                .join(friends, friends.c.id == held.c.friend_id)
                .where(friends.c.node_key == node_key, held.c.id > after)
                .order_by(held.c.id).limit(1)).first()
            if row is None:
                return None
            return HeldItem(row.id, bytes(row.message_id), bytes(row.recipient_key),
                            bytes(row.sealed))
        return await self.db.run(q, durable=False)

    async def holding_for(self) -> list[bytes]:
        """Node keys of friends we hold something for."""
        def q(conn: Connection) -> list[bytes]:
            return [bytes(k) for k in conn.execute(
                select(friends.c.node_key).where(friends.c.id.in_(
                    select(held.c.friend_id).distinct()))).scalars()]
        return await self.db.run(q, durable=False)

    async def drop_held(self, held_id: int) -> None:
        """Handed over (or refused for good by its node): no longer ours to keep."""
        def q(conn: Connection) -> None:
            conn.execute(delete(held).where(held.c.id == held_id))
        await self.db.run(q, durable=False)

    async def expire_held(self, now: int) -> int:
        def q(conn: Connection) -> int:
            return int(conn.execute(delete(held).where(held.c.expires_at <= now)).rowcount)
        return await self.db.run(q, durable=False)
