"""Thousands of DHT nodes in one process: the real sans-IO core over a simulated clock and
network (latency, loss, partitions, dead and lying nodes), deterministic for a given seed.

Each :class:`SimNode` runs the same :class:`~dht.kad.routing.RoutingTable`,
:class:`~dht.kad.lookup.Lookup`, :class:`~dht.kad.peer.Peer` and
:class:`~dht.kad.peer.Publisher` that the UDP adapter runs; only the transport is simulated. A
datagram is delivered after a random latency unless it is lost, its receiver is dead or on the
other side of a partition, in which case the sender learns of it only by its timeout. Time is
an event queue: nothing sleeps, so a lookup that "takes" 900 ms costs microseconds.

Datagram authentication is not simulated (the wire layer checks it): a simulated node can only
answer as itself, as a real one could only answer with its key. Records are real signed
:class:`~dht.records.AddressRecord` s, so forged and stale records meet the real checks.
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from crypto.keys import Identity
from dht.kad.contact import Contact
from dht.kad.lookup import K, Lookup, LookupResult
from dht.kad.messages import (
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Reply,
    Request,
    Store,
    Stored,
    Value,
)
from dht.kad.peer import Peer, Publisher
from dht.kad.routing import RoutingTable
from dht.limits import DEFAULT_LIMITS, DhtLimits
from dht.records import AddressRecord, RecordError, dht_key
from dht.storage import RecordStore, validated

EPOCH = 1_700_000_000.0
"""Simulated time starts here (records carry unix expiry times)."""
RECORD_TTL = 86400


@dataclass(frozen=True)
class NetConfig:
    """The simulated network: one-way latency drawn uniformly, independent loss per datagram,
    the requester's timeout (what a dead peer costs), and when a lookup stops holding a slot
    for a silent peer (None: never, it waits for the timeout)."""

    latency: tuple[float, float] = (0.005, 0.050)
    loss: float = 0.0
    timeout: float = 1.0
    slow_after: float | None = 0.25  # lookups stop waiting on a request after this long


class Behaviour:
    """How a node answers; honest by default. Subclasses model attackers."""

    def answer(self, node: SimNode, source: Contact, request: Request) -> Reply | None:
        handled = node.peer.handle(source, request, node.net.now)
        if handled.ping is not None:
            node.ping(handled.ping)
        node.kick_handover()
        return handled.reply


class Dropper(Behaviour):
    """Answers pings (to stay in routing tables) and drops every other request."""

    def answer(self, node: SimNode, source: Contact, request: Request) -> Reply | None:
        return Pong() if isinstance(request, Ping) else None


class Liar(Behaviour):
    """Colludes to hide records: claims to store and drops every STORE, answers FIND_VALUE
    with a stale or forged record and lookups with fellow liars closest to the target."""

    def __init__(self, accomplices: list[Contact], bad_values: dict[bytes, bytes]) -> None:
        self.accomplices = accomplices  # shared list: every liar knows every other
        self.bad_values = bad_values  # key -> a stale (older seq) or forged record

    def answer(self, node: SimNode, source: Contact, request: Request) -> Reply | None:
        if isinstance(request, Ping):
            return Pong()
        if isinstance(request, Store):
            return Stored(True)
        target = request.target if isinstance(request, FindNode) else request.key
        number = int.from_bytes(target, "big")
        steer = tuple(
            heapq.nsmallest(
                K,
                (c for c in self.accomplices if c.node_id != node.contact.node_id),
                key=lambda c: int.from_bytes(c.node_id, "big") ^ number,
            )
        )
        if isinstance(request, FindValue):
            forged = self.bad_values.get(request.key, b"\x02forged")
            return Value(forged, steer)
        return Nodes(steer)


class SimNode:
    """One node: the core's objects, a behaviour, and the glue that the UDP adapter would be."""

    def __init__(
        self, net: Network, contact: Contact, *, limits: DhtLimits, behaviour: Behaviour
    ) -> None:
        self.net = net
        self.contact = contact
        self.alive = True
        self.behaviour = behaviour
        now = net.now
        self.table = RoutingTable(
            contact.node_id, now, limits=limits, rng=random.Random(net.rng.random())
        )
        self.store = RecordStore(clock=lambda: net.now, limits=limits)
        self.peer = Peer(contact, self.table, self.store, now, limits=limits)
        self.publisher = Publisher()
        self._handing_over = False  # a hand-over step is scheduled

    # -- requests we send

    def query(
        self, contact: Contact, request: Request, done: Callable[[Reply | None], None]
    ) -> None:
        """Send ``request``; keep the routing table up to date with the outcome."""

        def outcome(reply: Reply | None) -> None:
            if not self.alive:
                return
            if reply is None:
                self.table.failed(contact.node_id, self.net.now)
            else:
                head = self.peer.met(contact, self.net.now)
                self.table.answered(contact.node_id, self.net.now)
                if head is not None:
                    self.ping(head)
                self.kick_handover()
            done(reply)

        self.net.send(self, contact, request, outcome)

    def ping(self, contact: Contact) -> None:
        self.query(contact, Ping(), lambda reply: None)

    def lookup(
        self,
        target: bytes,
        done: Callable[[LookupResult[AddressRecord], float], None],
        *,
        value: bool = False,
        paths: int = 3,
        slow_after: float | None = None,
    ) -> None:
        """Look ``target`` up; ``done(result, simulated seconds)`` when it ends.

        ``slow_after``: see :meth:`dht.kad.lookup.Lookup.on_slow` (default: the network's).
        """
        slow_after = self.net.config.slow_after if slow_after is None else slow_after
        started = self.net.now
        accept = self.net.acceptor(target) if value else None
        lookup: Lookup[AddressRecord] = Lookup(
            self.contact.node_id,
            target,
            self.table.seeds(target, K, started),
            accept=accept,
            paths=paths,
            avoid=self.table.is_failed,
            per_ip=self.net.limits.contacts_per_ip_bucket,
            per_subnet=self.net.limits.contacts_per_subnet_bucket,
        )

        reported = False

        def ask(contacts: Iterable[Contact]) -> None:
            for contact in contacts:
                self.query(contact, lookup.request, reply_from(contact))
                if slow_after is not None:
                    self.net.at(self.net.now + slow_after, slow(contact))

        def reply_from(contact: Contact) -> Callable[[Reply | None], None]:
            return lambda reply: settle(lookup.on_reply(contact, reply))

        def slow(contact: Contact) -> Callable[[], None]:
            return lambda: settle(lookup.on_slow(contact)) if self.alive else None

        def settle(sends: list[Contact]) -> None:
            nonlocal reported
            ask(sends)
            if lookup.done and not reported:
                reported = True
                result = lookup.result()
                for liar in result.liars:
                    self.table.remove(liar.node_id)
                done(result, self.net.now - started)

        settle(lookup.start())

    def join(self, anchors: Sequence[Contact]) -> None:
        """Start from ``anchors`` (bootstrap peers, friends), look up our own id, then refresh
        every bucket beyond our nearest neighbour (so we know, and are known by, every part of
        the id space, not only our neighbourhood)."""
        for anchor in anchors:
            self.table.offer(anchor, self.net.now, anchor=True)

        def joined(result: LookupResult[AddressRecord], took: float) -> None:
            for target in self.table.buckets_to_refresh(self.net.now, joining=True):
                self.lookup(target, lambda result, took: None, paths=1)

        self.lookup(self.contact.node_id, joined)

    def publish(self, record: AddressRecord, done: Callable[[int], None] | None = None) -> None:
        """Hold our record and STORE it at the k closest nodes found (what the owner does)."""
        key, value = dht_key(record.user_key), record.encode()
        self.store.offer(key, value)
        self.publisher.set(key, value, record.expires, self.net.now)
        self.republish(done)

    def republish(self, done: Callable[[int], None] | None = None) -> None:
        """STORE whatever :class:`Publisher` says is due."""
        for key, value in self.publisher.due(self.net.now):
            self._store_at_closest(key, value, done)

    def _store_at_closest(
        self, key: bytes, value: bytes, done: Callable[[int], None] | None
    ) -> None:
        def found(result: LookupResult[AddressRecord], took: float) -> None:
            targets = list(result.closest)
            if not targets:
                self.publisher.published(key, value, 0, self.net.now)
                if done is not None:
                    done(0)
                return
            stored = 0
            waiting = len(targets)

            def reply(r: Reply | None) -> None:
                nonlocal stored, waiting
                stored += isinstance(r, Stored) and r.accepted
                waiting -= 1
                if waiting == 0:
                    self.publisher.published(key, value, stored, self.net.now)
                    if done is not None:
                        done(stored)

            for contact in targets:
                self.query(contact, Store(key, value), reply)

        self.lookup(key, found)

    def repair(self, result: LookupResult[AddressRecord]) -> None:
        """STORE the newest record found at the close peers that had an older or none."""
        if result.found is None:
            return
        key = dht_key(result.found.record.user_key)
        for contact in result.repair:
            self.query(contact, Store(key, result.found.value), lambda reply: None)

    def maintain(self) -> None:
        """The periodic upkeep an adapter runs: retry timed-out contacts, refresh idle
        buckets, republish our records when due."""
        if not self.alive:
            return
        now = self.net.now
        for contact in self.table.due_pings(now):
            self.ping(contact)
        for target in self.table.buckets_to_refresh(now):
            self.lookup(target, lambda result, took: None, paths=1)
        self.republish()

    def kick_handover(self) -> None:
        """Start hand-over steps if a contact was queued and none are scheduled."""
        if self.peer.handover_due and not self._handing_over:
            self._handing_over = True
            self.net.at(self.net.now, self.handover)

    def handover(self) -> None:
        """Run the hand-over step due now and schedule the next one."""
        self._handing_over = False
        if not self.alive:
            return
        step = self.peer.handover_step(self.net.now)
        for contact in step.pings:
            self.query(contact, Ping(), self._handover_pinged(contact))
        for contact, key, value in step.stores:
            self.query(contact, Store(key, value), lambda reply: None)
        if step.delay is not None:
            self._handing_over = True
            self.net.at(self.net.now + step.delay, self.handover)

    def _handover_pinged(self, contact: Contact) -> Callable[[Reply | None], None]:
        def pinged(reply: Reply | None) -> None:
            self.peer.handover_answered(contact.node_id, reply is not None)
            if reply is not None and not self._handing_over:
                self._handing_over = True
                self.net.at(self.net.now, self.handover)

        return pinged


class Network:
    """The simulated clock, event queue and datagram delivery for a set of :class:`SimNode`."""

    def __init__(
        self, seed: int = 0, config: NetConfig = NetConfig(), limits: DhtLimits = DEFAULT_LIMITS
    ) -> None:
        self.rng = random.Random(seed)
        self.config = config
        self.limits = limits
        self.now = EPOCH
        self.nodes: dict[bytes, SimNode] = {}
        self.sent = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._groups: dict[bytes, int] = {}
        self._verdicts: dict[tuple[bytes, bytes], AddressRecord | None] = {}

    # -- building

    def add(
        self,
        *,
        host: str | None = None,
        port: int = 4000,
        behaviour: Behaviour | None = None,
    ) -> SimNode:
        """A new node (not yet joined); by default on its own /24, as strangers mostly are."""
        index = len(self.nodes)
        host = host or f"10.{index // 250 % 250}.{index % 250}.{1 + index // 62500}"
        contact = Contact(self.rng.randbytes(32), host, port)
        node = SimNode(self, contact, limits=self.limits, behaviour=behaviour or Behaviour())
        self.nodes[contact.node_id] = node
        return node

    def grow(self, count: int, *, bootstrap: int = 1) -> list[SimNode]:
        """``count`` honest nodes joining one after another through the first ``bootstrap``
        nodes (the first one starts alone)."""
        added = []
        for _ in range(count):
            anchors = [n.contact for n in list(self.nodes.values())[:bootstrap]]
            node = self.add()
            node.join([a for a in anchors if a != node.contact])
            self.run()
            added.append(node)
        return added

    def record(self, user: Identity, node: SimNode, seq: int = 1) -> AddressRecord:
        """A signed record saying ``user``'s mail goes to ``node``."""
        return AddressRecord.create(
            user, node.contact.key, [(node.contact.host, 25)], seq, int(self.now) + RECORD_TTL
        )

    # -- the network

    def at(self, when: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), event))

    def run(self, until: float | None = None) -> None:
        """Process events in time order (until the queue is empty or ``until``)."""
        while self._events and (until is None or self._events[0][0] <= until):
            when, _, event = heapq.heappop(self._events)
            self.now = max(self.now, when)
            event()
        if until is not None:
            self.now = max(self.now, until)

    def advance(self, seconds: float, every: float = 60.0) -> None:
        """Let ``seconds`` pass, every node running :meth:`SimNode.maintain` each ``every``
        seconds (at its own offset, as real nodes started at different times)."""
        end = self.now + seconds
        for node in list(self.nodes.values()):
            when = self.now + self.rng.uniform(0, every)
            while when < end:
                self.at(when, node.maintain)
                when += every
        self.run(until=end)

    def kill(self, node: SimNode) -> None:
        """The node vanishes without a word: its datagrams and timers go nowhere."""
        node.alive = False

    def partition(self, groups: Sequence[Iterable[SimNode]]) -> None:
        """Nodes in different groups cannot reach each other (nodes in no group reach all)."""
        self._groups = {n.contact.node_id: i for i, group in enumerate(groups) for n in group}

    def heal(self) -> None:
        self._groups = {}

    def _reachable(self, a: bytes, b: bytes) -> bool:
        ga, gb = self._groups.get(a), self._groups.get(b)
        return ga is None or gb is None or ga == gb

    def _delay(self) -> float:
        low, high = self.config.latency
        return self.rng.uniform(low, high)

    def send(
        self,
        sender: SimNode,
        to: Contact,
        request: Request,
        done: Callable[[Reply | None], None],
    ) -> None:
        """Deliver ``request``; ``done(reply)`` on the reply, ``done(None)`` at the timeout."""
        self.sent += 1
        sent_at = self.now
        timeout = sent_at + self.config.timeout
        receiver = self.nodes.get(to.node_id)
        if (
            receiver is None
            or receiver.contact.address != to.address
            or not self._reachable(sender.contact.node_id, to.node_id)
            or self.rng.random() < self.config.loss
        ):
            self.at(timeout, lambda: done(None))
            return

        def deliver() -> None:
            reply = receiver.behaviour.answer(receiver, sender.contact, request) if (
                receiver.alive
            ) else None
            if reply is None or self.rng.random() < self.config.loss:
                self.at(timeout, lambda: done(None))
                return
            back = self.now + self._delay()
            if back >= timeout:
                self.at(timeout, lambda: done(None))
            else:
                self.at(back, lambda: done(reply))

        self.at(sent_at + self._delay(), deliver)

    def acceptor(self, key: bytes) -> Callable[[bytes], tuple[int, AddressRecord] | None]:
        """What a reader believes under ``key``: a valid, current record for that key.

        Signature checks are cached per (key, value) across the simulation (the answer is a
        function of the bytes); the expiry is checked at every use.
        """

        def accept(value: bytes) -> tuple[int, AddressRecord] | None:
            verdict_key = (key, value)
            if verdict_key not in self._verdicts:
                try:
                    self._verdicts[verdict_key] = validated(key, value, self.now)
                except RecordError:
                    self._verdicts[verdict_key] = None
            record = self._verdicts[verdict_key]
            if record is None or record.is_expired(self.now):
                return None
            return record.seq, record

        return accept


@dataclass
class LookupStats:
    """What a batch of FIND_VALUE lookups achieved."""

    wanted: int = 0
    found: int = 0  # the expected (newest) record was the one believed
    wrong: int = 0  # a record other than the newest was believed (stale, forged)
    latencies: list[float] = field(default_factory=list)
    hops: list[int] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)

    @property
    def success(self) -> float:
        return self.found / self.wanted if self.wanted else 1.0

    def percentile(self, values: Sequence[float], p: float) -> float:
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    def summary(self) -> str:
        return (
            f"success {self.found}/{self.wanted} ({100 * self.success:.2f} %), wrong {self.wrong}, "
            f"latency p50/p95/p99 {1000 * self.percentile(self.latencies, 0.5):.0f}/"
            f"{1000 * self.percentile(self.latencies, 0.95):.0f}/"
            f"{1000 * self.percentile(self.latencies, 0.99):.0f} ms, "
            f"hops mean {statistics.fmean(self.hops) if self.hops else 0:.1f} "
            f"max {max(self.hops, default=0)}, "
            f"queries mean {statistics.fmean(self.queries) if self.queries else 0:.0f}"
        )


def measure_lookups(
    net: Network,
    readers: Sequence[SimNode],
    expected: dict[bytes, AddressRecord],
    *,
    paths: int = 3,
    repair: bool = False,
) -> LookupStats:
    """Each reader looks up one expected key (round-robin); all run concurrently."""
    stats = LookupStats()
    keys = list(expected)
    for i, reader in enumerate(readers):
        key = keys[i % len(keys)]
        stats.wanted += 1

        def done(
            result: LookupResult[AddressRecord], took: float, key: bytes = key,
            reader: SimNode = reader,
        ) -> None:
            stats.latencies.append(took)
            stats.hops.append(result.hops)
            stats.queries.append(result.queries)
            if result.found is None:
                return
            if result.found.value == expected[key].encode():
                stats.found += 1
            else:
                stats.wrong += 1
            if repair:
                reader.repair(result)

        reader.lookup(key, done, value=True, paths=paths)
    net.run()
    return stats


def scenario(
    nodes: int = 1000,
    seed: int = 1,
    *,
    churn: Sequence[float] = (0.1, 0.3),
    bad: float = 0.0,
    config: NetConfig | None = None,
    report: Callable[[str], None] = print,
) -> dict[str, LookupStats]:
    """Grow ``nodes`` nodes (``bad`` of them liars and droppers, half each, joining among the
    honest), have every honest node publish one record, then measure one FIND_VALUE per honest
    live node with no churn and after each fraction in ``churn`` of the honest nodes has died
    without warning (cumulative, no republish in between)."""
    net = Network(seed=seed, config=config or NetConfig())
    rng = random.Random(seed)
    accomplices: list[Contact] = []
    stale: dict[bytes, bytes] = {}
    liar = Liar(accomplices, stale)
    honest: list[SimNode] = []
    for _ in range(nodes):
        if honest and rng.random() < bad:
            node = net.add(behaviour=liar if rng.random() < 0.5 else Dropper())
            if node.behaviour is liar:
                accomplices.append(node.contact)
        else:
            node = net.add()
            honest.append(node)
        node.join([honest[0].contact] if node is not honest[0] else [])
        net.run()
    report(f"grown: {nodes} nodes ({nodes - len(honest)} bad), {net.sent} datagrams")
    expected: dict[bytes, AddressRecord] = {}
    for node in honest:
        user = Identity(rng.randbytes(32))
        key = dht_key(user.verify_key)
        if bad:  # liars serve the previous, validly signed version
            stale[key] = net.record(user, node, seq=1).encode()
        record = net.record(user, node, seq=2)
        expected[key] = record
        node.publish(record)
    net.run()
    report(f"published: {len(expected)} records, {net.sent} datagrams")
    results: dict[str, LookupStats] = {}
    dead = 0.0
    for fraction in (0.0, *churn):
        alive = [n for n in honest if n.alive]
        for node in rng.sample(alive, int((fraction - dead) * len(honest))):
            net.kill(node)
        dead = fraction
        readers = [n for n in honest if n.alive]
        sent = net.sent
        stats = measure_lookups(net, readers, expected)
        results[f"{fraction:.0%} dead"] = stats
        report(
            f"{fraction:.0%} dead: {stats.summary()}, {(net.sent - sent) / len(readers):.0f} "
            "datagrams per lookup (with upkeep)"
        )
    return results


if __name__ == "__main__":
    import sys

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    scenario(size)
    scenario(size, bad=float(sys.argv[2]) if len(sys.argv) > 2 else 0.1, churn=())
