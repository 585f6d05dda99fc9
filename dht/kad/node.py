"""A DHT node on a real UDP socket: the sans-IO core composed over one :class:`UdpEndpoint`.

Every decision lives in the core (:class:`~dht.kad.routing.RoutingTable`,
:class:`~dht.kad.lookup.Lookup`, :class:`~dht.kad.peer.Peer`, :class:`~dht.kad.peer.Publisher`,
:class:`~dht.kad.rpc.RpcEngine`); this module only carries out what they ask for (pings, STOREs,
lookups) and reports the outcomes back, as :mod:`dht.kad.sim` does under a simulated clock. Every
task and timer goes through one :class:`~dht.tasks.TaskSet`, so :meth:`DhtNode.stop` stops it.

Joining: a bootstrap peer is known by its address only. It is *probed* (a Ping to
:data:`~dht.kad.rpc.ANY_KEY`); its signed Pong proves its key, so it becomes a contact like any
other, an anchor if it is a protected peer (configured bootstrap peer or friend). Then the node
looks up its own id and refreshes every bucket, as the paper's join does. A restarted node probes
the addresses it saved (:meth:`DhtNode.peers`, anchors first), so it rejoins without its
bootstrap node.

Time: the routing table, rate limits and hand-over run on the event loop's monotonic clock;
records (expiry, the publish schedule) on ``clock``, unix seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from crypto.keys import Identity
from dht.kad.contact import Contact, node_id_for
from dht.kad.lookup import ALPHA, PATHS, Lookup, LookupResult, RttEstimate, run_lookup
from dht.kad.messages import FindNode, FindValue, Ping, Reply, Request, Store, Stored
from dht.kad.peer import Peer, Publisher
from dht.kad.routing import RETRY_AFTER, RoutingTable
from dht.kad.rpc import RpcEngine
from dht.kad.udp import UdpEndpoint
from dht.limits import DEFAULT_LIMITS, DhtLimits, TokenBucket, shown
from dht.records import AddressRecord, RecordError, dht_key
from dht.storage import RecordStore, validated
from dht.tasks import TaskSet

log = logging.getLogger(__name__)

Address = tuple[str, int]

UPKEEP_EVERY = 30.0
"""Routing upkeep (retrying timed-out contacts, idle buckets) and the publish schedule are
looked at this often at most (less if ``refresh_interval`` is shorter)."""
MAX_SILENT = 4096
"""Contacts remembered as having timed out lately (see ``DhtNode._silent``)."""
PROVE_TRIES = 2
"""Pings a newcomer gets before it counts as silent: a spoofed source gets two 106-byte pings
beyond the answer to its request (for a Ping, three times what it sent: the wire's bound)."""
PINGBACKS_PER_SECOND = 10.0
"""A newcomer that only sent us requests is pinged back (so it is proven and may be saved) at
this rate at most: a flood of fresh ids from spoofed sources gets no more than this back."""


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address (not a name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class DhtNode:
    """A member of the mailnode DHT serving signed address records.

    ``identity`` is the node's Ed25519 key (its id is the key's hash, and every reply it sends is
    signed with it; a fresh one if None). ``clock`` gives unix seconds and decides expiry.
    Intervals are in seconds: every bucket is refreshed each ``refresh_interval`` (idle ones
    also by the routing table's own schedule), our own records are stored again each
    ``republish_interval`` (and before they expire), and bootstrapping is retried every
    ``bootstrap_interval`` while no peer is known. Lookups stop waiting for a silent peer after
    a small multiple of the 90th percentile of recent round trips (see
    :class:`~dht.kad.lookup.RttEstimate`; at most a quarter of ``rpc_timeout``); its request
    still runs to its timeout, so the table learns whether it is dead.

    ``limits`` caps what strangers can make the node hold or send (see :class:`DhtLimits`).
    ``protected_peers`` (host, port) become anchors once they answer: exempt from the contact
    caps, never evicted, asked first and listed first by :meth:`peers`.
    """

    def __init__(
        self,
        identity: Identity | None = None,
        *,
        clock: Callable[[], float] = time.time,
        ksize: int = 20,
        alpha: int = ALPHA,
        rpc_timeout: float = 2.0,
        refresh_interval: float = 3600.0,
        republish_interval: float = 3600.0,
        bootstrap_interval: float = 30.0,
        max_records: int = 100_000,
        limits: DhtLimits = DEFAULT_LIMITS,
        protected_peers: Sequence[Address] = (),
    ) -> None:
        self._identity = identity or Identity.generate()
        self._node_id = node_id_for(self._identity.verify_key)
        self._clock = clock
        self._k = ksize
        self._alpha = alpha
        self._rtt = RttEstimate(ceiling=rpc_timeout / 4)
        self._prove_pause = rpc_timeout
        self._limits = limits
        self._tasks = TaskSet()
        self._storage = RecordStore(clock, max_records, limits)
        self._table = RoutingTable(self._node_id, time.monotonic(), k=ksize, limits=limits)
        self._engine = RpcEngine(self._identity, limits=limits, timeout=rpc_timeout)
        self._endpoint = UdpEndpoint(self._engine, self._answer)
        self._publisher = Publisher(interval=republish_interval)
        self._peer: Peer | None = None
        self._pingbacks = TokenBucket(PINGBACKS_PER_SECOND, 5 * PINGBACKS_PER_SECOND, 0.0)
        self._protected_names = {(host, port) for host, port in protected_peers}
        # their IP addresses: given, or as resolved at each bootstrap
        self._protected: set[Address] = {a for a in self._protected_names if is_ip(a[0])}
        self._refresh_interval = refresh_interval
        self._bootstrap_interval = bootstrap_interval
        self._last_full_refresh = time.monotonic()
        self._bootstrap_peers: list[Address] = []
        self._handing_over: asyncio.Task[None] | None = None
        # (id, host, port) that timed out lately, and when: the table remembers failures of its
        # own contacts only, and a dead node that peers still name would cost every lookup a
        # timeout (the whole wait in a network of fewer than k nodes). Keyed by the address
        # too, so a liar naming an honest id at a wrong address does not get it skipped.
        self._silent: OrderedDict[tuple[bytes, str, int], float] = OrderedDict()
        self._alone: bool | None = None  # unknown until the first check
        self._started = False

    # -- the public face (as mailnode uses it)

    @property
    def node_id(self) -> bytes:
        return self._node_id

    @property
    def port(self) -> int:
        """The bound UDP port (useful after starting on port 0)."""
        if not self._started:
            raise RuntimeError("the DHT node is not started")
        return self._endpoint.address[1]

    @property
    def storage(self) -> RecordStore:
        """The records this node holds for the network (read-only use, e.g. diagnostics)."""
        return self._storage

    async def start(self, host: str, port: int, bootstrap: Sequence[Address] = ()) -> None:
        """Listen on ``host:port`` (port 0 picks one) and join via ``bootstrap`` if given.

        Unreachable bootstrap peers are not an error: they are retried while no peer is known.
        """
        if self._started:
            raise RuntimeError("the DHT node is already started")
        self._started = True
        await self._endpoint.start(host, port)
        me = Contact(self._identity.verify_key, *self._endpoint.address)
        self._peer = Peer(  # requests are rate-limited per source by the engine
            me, self._table, self._storage, time.monotonic(), limits=self._limits,
            limit_requests=False,
        )
        log.info("DHT node %s listening on %s:%d", self.node_id.hex(), host, self.port)
        self._tasks.spawn(self._every(min(self._refresh_interval, UPKEEP_EVERY), self._upkeep))
        self._tasks.spawn(self._every(self._bootstrap_interval, self._retry_bootstrap))
        if bootstrap:
            await self.bootstrap(bootstrap)

    async def bootstrap(self, peers: Sequence[Address]) -> int:
        """Join through ``peers`` (remembered for later retries); returns the peer count.

        Each address is probed: whoever answers there, proving its key, becomes a contact
        (an anchor if protected). Then our own id is looked up through them.
        """
        self._require_started()
        for peer in peers:
            address = (peer[0], peer[1])
            if address not in self._bootstrap_peers:
                self._bootstrap_peers.append(address)
        addresses = list(dict.fromkeys(await self._resolve(peers)))
        found = await asyncio.gather(*(self._endpoint.probe(a) for a in addresses))
        now = time.monotonic()
        joined = False
        for address, contact in zip(addresses, found, strict=True):
            if contact is None:
                continue
            joined = True
            if address in self._protected or contact.address in self._protected:
                self._table.offer(contact, now, anchor=True, verified=True)
            else:
                self._met(contact, now)
        if joined:
            await self._lookup(self._node_id)
            self._tasks.spawn(self._refresh(joining=True))
        log.info("DHT bootstrap done: %d peers known", self.peer_count())
        return self.peer_count()

    async def publish(self, record: AddressRecord) -> int:
        """Keep ``record`` here and store it at the k closest peers; returns how many accepted.
        It is stored again before it expires and every ``republish_interval``.

        Raises RecordError if the record is invalid, expired, or older than the one held here.
        """
        self._require_started()
        key, value = dht_key(record.user_key), record.encode()
        self._storage.offer(key, value)
        now = self._clock()
        self._publisher.set(key, value, record.expires, now)
        for other, other_value in self._publisher.due(now):  # ours is taken out of the schedule
            if other != key:
                self._tasks.spawn(self._republish(other, other_value))
        return await self._republish(key, value)

    async def lookup(self, user_key: bytes) -> AddressRecord | None:
        """The newest valid record for ``user_key`` found here or at the close nodes, if any.

        Close nodes that answered with an older record or none are sent the newest one.
        """
        self._require_started()
        key = dht_key(user_key)

        def accept(value: bytes) -> tuple[int, AddressRecord] | None:
            try:
                record = validated(key, value, self._clock())
            except RecordError as exc:
                log.debug("discarding a record for %s: %s", key.hex(), shown(exc))
                return None
            return record.seq, record

        result = await self._lookup(key, accept)
        local = self._storage.record(key)
        found = result.found
        if found is not None and (local is None or found.seq > local.seq):
            if local is not None:  # our own replica was stale
                self._offer_quietly(key, found.value)
            self._repair(key, found.value, result.repair)
            return found.record
        if local is None:
            return None
        stale = result.repair if found is not None and found.seq == local.seq else result.closest
        self._repair(key, local.encode(), stale)
        return local

    def held(self, user_key: bytes) -> AddressRecord | None:
        """The valid record for ``user_key`` this node already holds, without asking anyone.

        Enough to know an address is published (e.g. to accept a recipient); delivery still
        uses :meth:`lookup` for the newest record.
        """
        return self._storage.record(dht_key(user_key))

    def peer_count(self) -> int:
        """Contacts that answered us and did not time out since (anchors included)."""
        return self._table.answered_count()

    def contact_ids(self) -> set[bytes]:
        """Ids of the live nodes in the routing table (a node seen again shows up here)."""
        return {c.node_id for c in self._table.contacts() if self._table.is_live(c.node_id)}

    def contact_address(self, node_id: bytes) -> Address | None:
        """Where the routing table last saw the node with ``node_id`` (None: not a contact)."""
        contact = self._table.contact(node_id)
        return None if contact is None else contact.address

    def protect(self, peers: Sequence[Address]) -> None:
        """Make ``peers`` anchors (friends' nodes, added while running): at once if they are
        contacts already, else when they answer a bootstrap."""
        now = time.monotonic()
        for host, port in peers:
            self._protected_names.add((host, port))
            if is_ip(host):
                self._protected.add((host, port))
        for contact in self._table.contacts():
            if contact.address in self._protected and not self._table.is_anchor(contact.node_id):
                self._table.offer(contact, now, anchor=True, verified=True)

    def peers(self) -> list[Address]:
        """What to save and rejoin through: anchors first, then contacts that answered us, most
        recently seen first (contacts that only sent requests may be spoofed: not listed)."""
        return [c.address for c in self._table.export()]

    def stop(self) -> None:
        """Close the socket and cancel every task and pending call this node started."""
        self._tasks.cancel_all()
        self._endpoint.shutdown()

    async def aclose(self) -> None:
        """:meth:`stop`, then wait until the cancelled tasks and the socket are gone."""
        pending = self._tasks.cancel_all()
        await self._endpoint.close()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- talking to peers: every outcome goes back to the routing table

    async def _query(self, contact: Contact, request: Request) -> Reply | None:
        now = time.monotonic()
        silent = (contact.node_id, contact.host, contact.port)
        if isinstance(request, (FindNode, FindValue)) and self._silent.get(silent, -RETRY_AFTER) > (
            now - RETRY_AFTER
        ):
            return None  # timed out lately: a lookup does not wait for it again
        reply = await self._endpoint.query(contact, request)
        rtt, now = time.monotonic() - now, time.monotonic()
        if reply is None:
            self._table.failed(contact.node_id, now)
            self._silent[silent] = now
            self._silent.move_to_end(silent)
            if len(self._silent) > MAX_SILENT:
                self._silent.popitem(last=False)
        else:
            self._rtt.add(rtt, now)
            self._silent.pop(silent, None)
            self._met(contact, now)
        return reply

    def _ask(self, contact: Contact, request: Request) -> Awaitable[Reply | None]:
        """A lookup's request, carried on to its answer or timeout when the lookup ends
        without it: a dead peer is then marked in the table and skipped by the next lookups,
        where cancelling it forgot what the first one found (a lookup no longer waits for its
        slow or farther requests)."""
        task = self._tasks.spawn(self._query(contact, request))
        if task is None:  # stopping
            return self._nothing()
        return asyncio.shield(task)

    @staticmethod
    async def _nothing() -> None:
        return None

    def _met(self, contact: Contact, now: float) -> None:
        """``contact`` answered us (signed, from its address)."""
        assert self._peer is not None
        head = self._peer.met(contact, now)
        self._table.answered(contact.node_id, now)
        if head is not None:
            self._ping(head)
        self._kick_handover()

    def _ping(self, contact: Contact) -> None:
        self._tasks.spawn(self._query(contact, Ping()))

    def _answer(self, contact: Contact, request: Request, now: float) -> Reply | None:
        """The endpoint's handler: the core answers, we carry out the pings it asks for.

        ``now`` is the loop's clock; the core runs on ``time.monotonic()`` throughout (the
        same clock on asyncio's own loops, not necessarily on others).
        """
        if self._peer is None:
            return None
        now = time.monotonic()
        known = contact.node_id in self._table
        queued = self._peer.handover_pending()
        handled = self._peer.handle(contact, request, now)
        if handled.ping is not None:
            self._ping(handled.ping)
        if (
            not known
            and self._table.is_live(contact.node_id)  # an entry; a replacement waits unproven
            and self._peer.handover_pending() == queued  # else the hand-over proves it
            and self._pingbacks.take(now)
        ):
            self._tasks.spawn(self._prove(contact))
        self._kick_handover()
        return handled.reply

    async def _lookup(
        self,
        target: bytes,
        accept: Callable[[bytes], tuple[int, AddressRecord] | None] | None = None,
        paths: int = PATHS,
    ) -> LookupResult[AddressRecord]:
        seeds = self._table.seeds(target, self._k, time.monotonic())
        lookup: Lookup[AddressRecord] = Lookup(
            self._node_id, target, seeds, accept=accept, k=self._k, alpha=self._alpha,
            paths=paths, avoid=self._table.is_failed,
            per_ip=self._limits.contacts_per_ip_bucket,
            per_subnet=self._limits.contacts_per_subnet_bucket,
        )
        result = await run_lookup(
            lookup, self._ask, slow_after=lambda: self._rtt.slow_after(time.monotonic())
        )
        for liar in result.liars:  # a wrong kind of answer, or a record that fails its checks
            self._table.remove(liar.node_id)
        return result

    async def _republish(self, key: bytes, value: bytes) -> int:
        stored = await self._store_at_closest(key, value)
        self._publisher.published(key, value, stored, self._clock())
        return stored

    async def _store_at_closest(self, key: bytes, value: bytes) -> int:
        """STORE at the k closest nodes that answered a lookup of ``key``; how many accepted."""
        targets = (await self._lookup(key)).closest
        answers = await asyncio.gather(*(self._query(c, Store(key, value)) for c in targets))
        acks = sum(1 for a in answers if isinstance(a, Stored) and a.accepted)
        # A node without peers (a first run, a private node) retries every few seconds:
        # that is the one line "no DHT peers known", not one line per attempt.
        log.log(logging.INFO if targets else logging.DEBUG,
                "stored record %s at %d of %d close peers", key.hex(), acks, len(targets))
        return acks

    def _repair(self, key: bytes, value: bytes, stale: Sequence[Contact]) -> None:
        """Send the newest record to close nodes that answered a lookup without it."""
        for contact in stale:
            self._tasks.spawn(self._query(contact, Store(key, value)))

    def _offer_quietly(self, key: bytes, value: bytes) -> None:
        try:
            self._storage.offer(key, value)
        except RecordError as exc:
            log.debug("not keeping a newer record for %s: %s", key.hex(), shown(exc))

    # -- hand-over of held records to newly joined close nodes (paced by the core)

    def _kick_handover(self, *, force: bool = False) -> None:
        if self._peer is None or not (force or self._peer.handover_due):
            return
        if self._handing_over is None or self._handing_over.done():
            self._handing_over = self._tasks.spawn(self._handover())

    async def _handover(self) -> None:
        assert self._peer is not None
        while True:
            step = self._peer.handover_step(time.monotonic())
            for contact in step.pings:
                self._tasks.spawn(self._handover_ping(contact))
            for contact, key, value in step.stores:
                self._tasks.spawn(self._query(contact, Store(key, value)))
            if step.delay is None:
                return
            await asyncio.sleep(step.delay)

    async def _handover_ping(self, contact: Contact) -> None:
        assert self._peer is not None
        answered = await self._prove(contact)
        self._peer.handover_answered(contact.node_id, answered)
        if answered:
            self._kick_handover(force=True)

    async def _prove(self, contact: Contact) -> bool:
        """Ping a newcomer that only sent us requests (its source may be spoofed), once more
        after a pause if it is silent: a node that is busy starting up (its loop blocked for
        longer than the timeout) would otherwise stay unproven, unlisted and unsaved until
        the table's next retry, a minute later."""
        for attempt in range(PROVE_TRIES):
            if attempt:
                await asyncio.sleep(self._prove_pause)
            if await self._query(contact, Ping()) is not None:
                return True
        return False

    # -- upkeep

    async def _every(self, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception:
                log.exception("DHT maintenance failed")

    async def _upkeep(self) -> None:
        """Retry timed-out contacts, republish our records when due, refresh idle buckets."""
        now = time.monotonic()
        self._storage.cull()
        for contact in self._table.due_pings(now):
            self._ping(contact)
        for key, value in self._publisher.due(self._clock()):
            self._tasks.spawn(self._republish(key, value))
        full = now - self._last_full_refresh >= self._refresh_interval
        await self._refresh(joining=full)

    async def _refresh(self, *, joining: bool) -> None:
        """Look up one random id in each bucket due (every one when ``joining``)."""
        now = time.monotonic()
        if joining:
            self._last_full_refresh = now
        for target in self._table.buckets_to_refresh(now, joining=joining):
            await self._lookup(target, paths=1)

    async def _retry_bootstrap(self) -> None:
        self._note_peers()
        if self.peer_count() == 0 and self._bootstrap_peers:
            log.debug("no DHT peers known; retrying bootstrap")
            await self.bootstrap(self._bootstrap_peers)
            self._note_peers()

    def _note_peers(self) -> None:
        """One INFO line when the node finds itself alone and one when it has peers again."""
        alone = self.peer_count() == 0
        if alone == self._alone:
            return
        if alone:
            how = (f"retrying its bootstrap peers every {self._bootstrap_interval:.0f} s"
                   if self._bootstrap_peers else "no bootstrap peers configured")
            log.info("no DHT peers known: this node is on its own until a peer reaches it "
                     "(%s)", how)
        elif self._alone is not None:
            log.info("joined the DHT: %d peers known", self.peer_count())
        self._alone = alone

    async def _resolve(self, peers: Sequence[Address]) -> list[Address]:
        """IP addresses for ``peers``: contacts hold IP literals only (a name would be resolved,
        blocking, by the socket). Names are resolved off the event loop, again on every retry
        (dynamic DNS)."""
        loop = asyncio.get_running_loop()
        ipv4 = ":" not in self._endpoint.address[0]
        addresses: list[Address] = []
        for host, port in peers:
            if not 0 < port < 0x10000:
                log.warning("ignoring bootstrap peer %s:%s: no such port", shown(host), port)
                continue
            if is_ip(host):
                resolved = [(host, port)]
            else:
                try:
                    infos = await loop.getaddrinfo(
                        host, port, family=socket.AF_INET if ipv4 else socket.AF_UNSPEC,
                        type=socket.SOCK_DGRAM,
                    )
                except OSError as exc:
                    log.warning("cannot resolve bootstrap peer %s:%s: %s",
                                shown(host), port, shown(exc))
                    continue
                resolved = [(str(info[4][0]), int(info[4][1])) for info in infos[:1]]
            if (host, port) in self._protected_names:
                self._protected.update(resolved)
            addresses.extend(resolved)
        return addresses

    def _require_started(self) -> None:
        if not self._started or self._tasks.closed:
            raise RuntimeError("the DHT node is not running")
