"""Friends' nodes: redeeming invites, holding mail as a relay, handing it over and pulling it.

Each side of a friendship is symmetric: both nodes bootstrap from each other, and each holds
sealed mail for the other's users (within the terms it agreed to) while the other is away.
Held mail goes back by two paths, whichever comes first: the relay *pushes* (dials the
friend's node when it sees it again), and the friend *pulls* (asks each relay at start, when
it sees the relay again, and regularly when it cannot be dialled at all). The recipient files
each envelope once whatever the path, keyed on the sender's key and message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from crypto.keys import Identity
from dht.node import DhtNode, node_id_of
from dht.records import AddressRecord, RecordError, Relay
from mailnode.logsafe import clean
from mailnode.store.friends import Endpoint, Friend, FriendStore, HoldResult, Redemption
from mailnode.transfer import (
    InboundMessage,
    Outcome,
    TransferConnection,
    TransferError,
    Verdict,
    connect,
)
from mailnode.transfer.frames import Redeem, Welcome
from mailnode.transfer.server import HeldMessage

log = logging.getLogger(__name__)

MAX_RELAYS = 4
MAX_RELAY_ENDPOINTS = 4
CONNECT_TIMEOUT = 5.0
TICK = 2.0
REDEEM_EVERY = 10.0
PULL_EVERY_UNREACHABLE = 10.0
"""A node nobody can dial gets its mail only by pulling: often."""
PULL_EVERY = 300.0
"""A reachable node is pushed to; pulling is the safety net."""
ANCHOR_EVERY = 30.0
DIALBACK_EVERY = 5.0
EXPIRE_EVERY = 60.0

Accept = Callable[[InboundMessage], Awaitable[Outcome]]


async def no_mail(message: InboundMessage) -> Outcome:
    """The accept callback of a service that only talks (redeems, asks for a dial-back): a
    command-line run never takes mail, its node does."""
    return Outcome(Verdict.TEMPORARY, "not now")


def node_name(configured: str = "", hostname: str | None = None) -> str:
    """This node's name as friends see it: ``node_name`` from the config, else the host
    name reduced to what a name may hold."""
    if configured:
        return configured
    raw = (hostname or socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", raw).strip("-")[:32]
    return name or "mailnode"


def _fp(key: bytes) -> str:
    return key[:8].hex()


@dataclass
class _Track:
    """What the running loop remembers about one friend."""

    redeem_at: float = 0.0
    pull_at: float = 0.0
    anchor_at: float = 0.0
    task: asyncio.Task[None] | None = None


class FriendsService:
    """The friends' layer of one node (see the module docstring)."""

    def __init__(self, store: FriendStore, identity: Identity, name: str, *,
                 accept: Accept, endpoints: Callable[[], list[Endpoint]], inbound: bool,
                 max_message_size: int, timeout: float, dht: DhtNode | None = None,
                 on_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.identity = identity
        self.name = name
        self.accept = accept
        self.endpoints = endpoints
        self.inbound = inbound
        self.max_message_size = max_message_size
        self.timeout = timeout
        self.dht = dht
        self.on_change = on_change
        self.clock = clock
        self._track: dict[bytes, _Track] = {}
        self._seen_again: set[bytes] = set()
        self._shape: object = None
        self._dialled: dict[bytes, float] = {}

    # --- the transfer server's side (Friendship) --------------------------------------

    async def redeem(self, peer_key: bytes, host: str, request: Redeem) -> Welcome | Outcome:
        result = await self.store.redeem_invite(
            request.secret, peer_key, request.label, request.endpoints, request.hold_bytes,
            request.hold_days, int(self.clock()))
        if isinstance(result, Redemption):
            log.info("refused an invite from node %s at %s: %s", _fp(peer_key), host,
                     result.value)
            return Outcome(Verdict.PERMANENT, result.value)
        hold_bytes, hold_days = result
        log.info("node %s (%s) redeemed an invite: friends now", _fp(peer_key),
                 clean(request.label))
        self.on_change()
        return Welcome(hold_bytes, hold_days, self.name)

    async def next_held(self, peer_key: bytes, after: int) -> HeldMessage | None:
        item = await self.store.next_held(peer_key, after)
        if item is None:
            return None
        return HeldMessage(item.id, item.message_id, item.recipient_key, item.sealed)

    async def handed_over(self, held: HeldMessage, outcome: Outcome) -> None:
        # PERMANENT: its node will never take it (the user is gone); keeping it helps nobody.
        if outcome.verdict is not Verdict.TEMPORARY:
            await self.store.drop_held(held.id)

    async def dial_back(self, peer_key: bytes, endpoints: tuple[Endpoint, ...]) -> Outcome:
        """Dial a friend's endpoints from here, as any sender elsewhere would, so it learns
        whether it is reachable (what it cannot learn by dialling itself). Friends only, at
        most one request per friend every DIALBACK_EVERY seconds: no port scanning for
        strangers through us."""
        friend = await self.store.friend(peer_key)
        if friend is None or friend.pending:
            return Outcome(Verdict.PERMANENT, "this node dials back only for friends")
        now = self.clock()
        if now - self._dialled.get(peer_key, -DIALBACK_EVERY) < DIALBACK_EVERY:
            return Outcome(Verdict.TEMPORARY, "asked too often; try again in a few seconds")
        self._dialled[peer_key] = now
        results = []
        for host, port in endpoints[:4]:
            try:
                connection = await connect(self.identity, host, port, peer_key,
                                           timeout=CONNECT_TIMEOUT,
                                           connect_timeout=CONNECT_TIMEOUT)
            except TransferError as exc:
                results.append(f"{host}:{port} failed: {exc}")
                continue
            await connection.close()
            return Outcome(Verdict.ACCEPTED, f"reached your node at {host}:{port}")
        return Outcome(Verdict.TEMPORARY, "; ".join(results)[:900])

    # --- relaying ---------------------------------------------------------------------

    async def hold(self, msg: InboundMessage) -> Outcome:
        """The accept callback for a HOLD: keep a sealed envelope for a friend's user."""
        assert msg.record is not None
        try:
            record = AddressRecord.decode(msg.record)
            record.verify(record.expires - 1)  # signed by the user; old is fine
        except RecordError as exc:
            return Outcome(Verdict.PERMANENT, f"relay: bad address record: {exc}")
        if record.user_key != msg.recipient_key:
            return Outcome(Verdict.PERMANENT, "relay: the record is not the recipient's")
        if self.identity.verify_key not in {r.node_key for r in record.relays}:
            return Outcome(Verdict.PERMANENT, "relay: the recipient does not list this node")
        result = await self.store.hold(record.node_key, msg.message_id, msg.recipient_key,
                                       msg.sealed, int(self.clock()), msg.source)
        if result is None:
            return Outcome(Verdict.PERMANENT, "relay: the recipient's node is not a friend")
        if result is HoldResult.FULL:
            return Outcome(Verdict.TEMPORARY, "relay: the store for that node is full (or "
                           "your address's share of it)")
        log.info("holding message %s (%d bytes) for node %s", msg.message_id.hex(),
                 len(msg.sealed), _fp(record.node_key))
        # The record is the friend's own word on where it is now: push there.
        await self.store.moved(record.node_key, record.endpoints if record.inbound else (),
                               record.seq)
        # The sender's failure may have been brief: one try to pass it on at the next tick
        # (held messages are pushed together; a node still away costs one failed connect).
        self.peer_is_up(record.node_key)
        return Outcome(Verdict.ACCEPTED, f"held by relay ({result.value})")

    async def relays(self) -> tuple[Relay, ...]:
        """Friends that agreed to hold mail for our users, for our DHT records."""
        out: list[Relay] = []
        for friend in await self.store.list_friends():
            if friend.holds_for_us and friend.endpoints and len(out) < MAX_RELAYS:
                out.append(Relay(friend.node_key,
                                 tuple(friend.endpoints[:MAX_RELAY_ENDPOINTS])))
        return tuple(out)

    # --- talking to a friend's node ---------------------------------------------------

    def _addresses(self, friend: Friend) -> list[Endpoint]:
        """Its published endpoints, then where the DHT last saw it (it may have moved). A
        friend that published none takes no connections: it is never dialled."""
        found = list(friend.endpoints)
        if found and self.dht is not None:
            contact = self.dht.contact_address(node_id_of(friend.node_key))
            if contact is not None and contact not in found:
                found.append(contact)  # the transfer port has the DHT port's number
        return found

    async def _dial(self, friend: Friend) -> TransferConnection:
        last: Exception | None = None
        for host, port in self._addresses(friend):
            try:
                connection = await connect(self.identity, host, port, friend.node_key,
                                           timeout=self.timeout,
                                           connect_timeout=CONNECT_TIMEOUT)
            except TransferError as exc:
                last = exc
                continue
            return connection
        raise TransferError(f"{friend.name} not reachable: {last or 'no address known'}")

    async def redeem_with(self, friend: Friend) -> Welcome | Outcome:
        """Present ``friend``'s invite to its node; on WELCOME we are friends."""
        assert friend.secret is not None
        connection = await self._dial(friend)
        our = () if not self.inbound else tuple(self.endpoints()[:8])
        async with connection:
            answer = await connection.redeem(Redeem(
                friend.secret, friend.hold_bytes, friend.hold_days, self.name, our))
        if isinstance(answer, Welcome):
            await self.store.welcomed(friend.node_key, answer.hold_bytes, answer.hold_days,
                                      int(self.clock()))
            log.info("friends with %s (node %s)", clean(friend.name), _fp(friend.node_key))
            self.on_change()
        else:
            await self.store.failed(friend.node_key, answer.reason)
            log.warning("%s refused our invite redemption: %s", clean(friend.name),
                        clean(answer.reason))
        return answer

    async def ask_dial_back(self, friend: Friend, endpoints: tuple[Endpoint, ...]) -> Outcome:
        """Ask ``friend``'s node to dial our ``endpoints`` from where it is."""
        connection = await self._dial(friend)
        async with connection:
            return await connection.dial_back(endpoints)

    async def pull(self, friend: Friend) -> int:
        """Fetch what ``friend`` holds for our users; returns how many were filed."""
        connection = await self._dial(friend)
        count = await connection.pull(self.accept, max_message_size=self.max_message_size)
        await self.store.seen(friend.node_key, int(self.clock()))
        if count:
            log.info("pulled %d message(s) held by %s", count, clean(friend.name))
        return count

    async def push(self, friend: Friend) -> int:
        """Hand ``friend``'s node what we hold for it (as any sender would). A node that
        published no endpoint takes no connections: it is never dialled, it pulls."""
        after, count = 0, 0
        item = await self.store.next_held(friend.node_key, after)
        if item is None or not friend.endpoints:
            return 0
        connection = await self._dial(friend)
        async with connection:
            while item is not None:
                outcome = await connection.send(item.message_id, item.recipient_key,
                                                item.sealed)
                if outcome.verdict is Verdict.TEMPORARY:
                    break
                await self.store.drop_held(item.id)
                count += outcome.verdict is Verdict.ACCEPTED
                after = item.id
                item = await self.store.next_held(friend.node_key, after)
        await self.store.seen(friend.node_key, int(self.clock()))
        if count:
            log.info("handed %d held message(s) to %s", count, clean(friend.name))
        return count

    # --- the running loop -------------------------------------------------------------

    def peer_is_up(self, node_key: bytes) -> None:
        """A node reached us or reappeared in the DHT: if it is a friend, exchange held mail
        now (its relays may hold mail for us, and we may hold mail for it)."""
        self._seen_again.add(node_key)

    async def run(self) -> None:
        contacts: set[bytes] = set()
        expire_at = 0.0
        while True:
            try:
                now = self.clock()
                friends = await self.store.list_friends()
                self._notice_changes(friends)
                if self.dht is not None:
                    ids = self.dht.contact_ids()
                    for friend in friends:
                        if node_id_of(friend.node_key) in ids - contacts:
                            self.peer_is_up(friend.node_key)
                    contacts = ids
                for friend in friends:
                    self._tend(friend, now)
                if now >= expire_at:
                    expire_at = now + EXPIRE_EVERY
                    if dropped := await self.store.expire_held(int(now)):
                        log.info("dropped %d held message(s) past their holding time",
                                 dropped)
            except Exception:
                log.exception("friends' loop failed; retrying")
            await asyncio.sleep(TICK)

    async def aclose(self) -> None:
        tasks = [t.task for t in self._track.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _notice_changes(self, friends: list[Friend]) -> None:
        shape = tuple((f.node_key, f.pending, f.holds_for_us, f.endpoints) for f in friends)
        if shape != self._shape:
            first = self._shape is None
            self._shape = shape
            if self.dht is not None:
                self.dht.protect([e for f in friends for e in f.endpoints])
            if not first:
                self.on_change()

    def _tend(self, friend: Friend, now: float) -> None:
        track = self._track.setdefault(friend.node_key, _Track())
        if track.task is not None and not track.task.done():
            return
        job: Callable[[], Awaitable[object]] | None = None
        seen = friend.node_key in self._seen_again
        self._seen_again.discard(friend.node_key)
        if friend.pending:
            if (seen or now >= track.redeem_at) and (friend.invite_expires_at or 0) > now:
                track.redeem_at = now + REDEEM_EVERY
                job = lambda: self.redeem_with(friend)  # noqa: E731
        else:
            every = PULL_EVERY if self.inbound else PULL_EVERY_UNREACHABLE
            pull = friend.holds_for_us and bool(friend.endpoints) and (
                seen or now >= track.pull_at)
            push = seen and friend.held_count > 0
            if pull or push:
                if pull:
                    track.pull_at = now + every
                job = lambda: self._exchange(friend, pull, push)  # noqa: E731
            elif self.dht is not None and now >= track.anchor_at:
                track.anchor_at = now + ANCHOR_EVERY
                if node_id_of(friend.node_key) not in self.dht.contact_ids() \
                        and friend.endpoints:
                    job = lambda: self._anchor(friend)  # noqa: E731
        if job is not None:
            track.task = asyncio.get_running_loop().create_task(self._guarded(friend, job))

    async def _exchange(self, friend: Friend, pull: bool, push: bool) -> None:
        if push:
            await self.push(friend)
        if pull:
            await self.pull(friend)

    async def _anchor(self, friend: Friend) -> None:
        """Keep a friend in the routing table: ping it when it dropped out."""
        assert self.dht is not None
        with contextlib.suppress(OSError, TimeoutError):
            await self.dht.bootstrap(list(friend.endpoints))

    async def _guarded(self, friend: Friend,
                       job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except (TransferError, OSError) as exc:
            log.debug("%s: %s", clean(friend.name), clean(exc))
            with contextlib.suppress(Exception):
                await self.store.failed(friend.node_key, str(exc))
        except Exception:
            log.exception("exchange with %s failed", clean(friend.name))
