"""The answering side of a DHT node, and its schedules, as pure code: requests in, replies and
decisions out, time passed in.

:class:`Peer` answers one request from one contact: it rate-limits the source, offers the
source to the routing table (and returns the ping that upkeep asks for), answers from the table
and the record store, and validates STOREs through :class:`~dht.storage.RecordStore` (signed,
newer, bounded expiry, per-origin quotas). What the ``kademlia`` handlers did wrong, and why this
replaces them: any answer listed up to k contacts plus a value with no per-source limit, a ping
from an unseen id started an unbounded hand-over, and every packet scanned the routing table
once per held record.

:class:`Publisher` says when our own records go out again: before they expire and at once when
one changes. Records we merely hold are not republished by us; their owners republish hourly,
and :class:`Peer` hands them to newly joined closer nodes through the paced
:class:`dht.handover.Handover` queue (one global token bucket, a cap per contact, a ping to
prove the newcomer answers at its address first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from kademlia.node import Node

from dht.handover import Handover
from dht.kad.contact import Contact
from dht.kad.messages import (
    MAX_REPLY_CONTACTS,
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
from dht.kad.routing import Kind, RoutingTable
from dht.limits import DEFAULT_LIMITS, DhtLimits, TokenBucket
from dht.records import RecordError
from dht.storage import RecordStore

STORES_PER_IP_SECOND = 5.0
"""STOREs one IP may send us per second (bursts of STORES_PER_IP_BURST): each costs a signature
check, and honest peers send a few per hour per record they publish."""
STORES_PER_IP_BURST = 100
REPUBLISH_INTERVAL = 3600.0
"""Owners republish this often, so records reach nodes that joined near their key."""
EXPIRY_MARGIN = 600.0
"""A record is republished at least this long before it expires."""
RETRY_AFTER = 60.0
"""A publish that reached nobody is tried again this soon."""


@dataclass(frozen=True, slots=True)
class Handled:
    """The answer to one request (None: dropped unanswered) and the routing upkeep it asks
    for: ``ping`` the head of a full bucket (report the outcome to the table)."""

    reply: Reply | None
    ping: Contact | None = None


@dataclass(frozen=True, slots=True)
class HandoverStep:
    """Hand-over work due now: ``pings`` prove a newcomer answers (report with
    :meth:`Peer.handover_answered`), ``stores`` are (contact, key, value) STOREs to send."""

    pings: list[Contact] = field(default_factory=list)
    stores: list[tuple[Contact, bytes, bytes]] = field(default_factory=list)
    delay: float | None = None  # step again after this long (None: when something new comes)


class Peer:
    """Answers requests for node ``me`` from its ``table`` and ``store``."""

    def __init__(
        self,
        me: Contact,
        table: RoutingTable,
        store: RecordStore,
        now: float,
        *,
        limits: DhtLimits = DEFAULT_LIMITS,
        stores_per_ip_second: float = STORES_PER_IP_SECOND,
        stores_per_ip_burst: int = STORES_PER_IP_BURST,
        limit_requests: bool = True,
    ) -> None:
        if table.own_id != me.node_id:
            raise ValueError("the routing table is for another node")
        self.me = me
        self.table = table
        self.store = store
        self._limits = limits
        self._store_rate = (stores_per_ip_second, stores_per_ip_burst)
        # per-source request buckets; off where the wire's RpcEngine already charged the
        # same limits before the signature check (two tables of thousands per node otherwise)
        self._limit_requests = limit_requests
        self._requests: OrderedDict[str, TokenBucket] = OrderedDict()
        self._stores: OrderedDict[str, TokenBucket] = OrderedDict()
        self._handover = Handover(limits, now)
        self._handover_new = False

    def handle(self, source: Contact, request: Request, now: float) -> Handled:
        """Answer ``request`` from ``source`` (whose address the datagram came from)."""
        limits = self._limits
        if self._limit_requests and not self._take(
            self._requests, source.host, now, limits.requests_per_ip_second,
            limits.requests_per_ip_burst,
        ):
            return Handled(None)
        ping = self._meet(source, now)
        if isinstance(request, Ping):
            return Handled(Pong(), ping)
        if isinstance(request, FindNode):
            return Handled(Nodes(self._closest(request.target, source, now)), ping)
        if isinstance(request, FindValue):
            contacts = self._closest(request.key, source, now)
            value = self.store.get(request.key)  # none: empty (no record is empty)
            return Handled(Value(value or b"", contacts), ping)
        if not self._take(self._stores, source.host, now, *self._store_rate):
            return Handled(None, ping)
        return Handled(Stored(self._accept_store(request, source)), ping)

    def _accept_store(self, request: Store, source: Contact) -> bool:
        try:
            return self.store.offer(request.key, request.value, origin=source.host)
        except RecordError:
            return False

    def _closest(self, target: bytes, source: Contact, now: float) -> tuple[Contact, ...]:
        """Up to MAX_REPLY_CONTACTS live contacts closest to ``target``, not the asker."""
        found = self.table.closest(target, MAX_REPLY_CONTACTS + 1, now, lookup=False)
        return tuple(c for c in found if c.node_id != source.node_id)[:MAX_REPLY_CONTACTS]

    def _meet(self, source: Contact, now: float) -> Contact | None:
        """Offer a requester to the table; a new contact may be owed records (hand-over)."""
        decision = self.table.offer(source, now)
        if decision.kind is Kind.ADDED and self.store.has_records():
            self._queue_handover(source, verified=False)
        return decision.ping

    def met(self, contact: Contact, now: float) -> Contact | None:
        """``contact`` answered one of our requests (signed, from its address): offer it to the
        table as proven, queue its hand-over; returns a head to ping, if any."""
        decision = self.table.offer(contact, now, verified=True)
        if decision.kind is Kind.ADDED and self.store.has_records():
            self._queue_handover(contact, verified=True)
        return decision.ping

    @staticmethod
    def _take(
        buckets: OrderedDict[str, TokenBucket], ip: str, now: float, rate: float, burst: float
    ) -> bool:
        bucket = buckets.get(ip)
        if bucket is None:
            bucket = buckets[ip] = TokenBucket(rate, burst, now)
            while len(buckets) > DEFAULT_LIMITS.tracked_ips:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(ip)
        return bucket.take(now)

    # -- hand-over of held records to newly joined close nodes

    def _queue_handover(self, contact: Contact, *, verified: bool) -> None:
        if self._handover.offer(_HandoverNode(contact), verified=verified):
            self._handover_new = True

    @property
    def handover_due(self) -> bool:
        """A contact was queued since the last :meth:`handover_step`: step soon (an adapter
        that is not already stepping starts again)."""
        return self._handover_new

    def handover_answered(self, node_id: bytes, ok: bool) -> None:
        """The outcome of a hand-over ping from :meth:`handover_step`."""
        self._handover.answered(node_id, ok)

    def handover_pending(self) -> int:
        return len(self._handover)

    def handover_step(self, now: float) -> HandoverStep:
        """Spend the hand-over budget available at ``now`` (bounded work per step)."""
        self._handover_new = False

        def wanted(node: _HandoverNode, key: bytes) -> bool:
            return self.should_hold(node.contact, key, now)

        step = self._handover.step(now, self.store.keys, wanted)
        stores = []
        for node, key in step.stores:
            value = self.store.get(key)
            if value is not None:
                stores.append((node.contact, key, value))
        return HandoverStep([n.contact for n in step.pings], stores, step.delay)

    def should_hold(self, contact: Contact, key: bytes, now: float) -> bool:
        """Whether ``contact`` should be handed ``key`` by us (section 2.5 of the paper): it is
        among the k closest we know to the key and we are closer than every other node we know,
        so one node, not k, sends it."""
        number = int.from_bytes(key, "big")

        def far(c: Contact) -> int:
            return int.from_bytes(c.node_id, "big") ^ number

        def others(count: int) -> list[Contact]:
            found = self.table.closest(key, count + 1, now, lookup=False)
            return [c for c in found if c.node_id != contact.node_id][:count]

        nearest = others(1)  # cheap, and false for most keys: someone is closer than us
        if nearest and far(nearest[0]) < far(self.me):
            return False
        rest = others(self.table.k)
        return len(rest) < self.table.k or far(contact) < far(rest[-1])


class _HandoverNode(Node):  # type: ignore[misc]  # kademlia is untyped
    """:mod:`dht.handover` queues kademlia nodes (it serves dht.protocol today); this one
    carries the contact it stands for, so nothing maps ids back."""

    def __init__(self, contact: Contact) -> None:
        super().__init__(contact.node_id, contact.host, contact.port)
        self.contact = contact


@dataclass(slots=True)
class _Owned:
    value: bytes
    expires: float
    due: float
    in_flight: bool = False


class Publisher:
    """When each of our own records goes out (again): pure schedule, the caller does the STOREs
    (a FIND_NODE lookup of the key, then STORE to the k closest found)."""

    def __init__(
        self,
        *,
        interval: float = REPUBLISH_INTERVAL,
        margin: float = EXPIRY_MARGIN,
        retry: float = RETRY_AFTER,
    ) -> None:
        self._interval = interval
        self._margin = margin
        self._retry = retry
        self._records: dict[bytes, _Owned] = {}

    def __len__(self) -> int:
        return len(self._records)

    def set(self, key: bytes, value: bytes, expires: float, now: float) -> None:
        """Our record under ``key`` is (now) ``value``: due at once if it changed."""
        owned = self._records.get(key)
        if owned is not None and owned.value == value:
            return
        self._records[key] = _Owned(value, expires, now)

    def drop(self, key: bytes) -> None:
        self._records.pop(key, None)

    def due(self, now: float) -> list[tuple[bytes, bytes]]:
        """The (key, value) pairs to publish now; each stays out of :meth:`due` until
        :meth:`published` reports on it. Expired records are dropped."""
        out = []
        for key, owned in list(self._records.items()):
            if now >= owned.expires:
                del self._records[key]
            elif not owned.in_flight and now >= owned.due:
                owned.in_flight = True
                out.append((key, owned.value))
        return out

    def published(self, key: bytes, value: bytes, stored: int, now: float) -> None:
        """A publish of ``value`` reached ``stored`` nodes; schedule the next one."""
        owned = self._records.get(key)
        if owned is None or owned.value != value:
            return  # replaced meanwhile: the new value is already due
        owned.in_flight = False
        if stored == 0:
            owned.due = now + self._retry
        else:
            owned.due = min(now + self._interval, owned.expires - self._margin)
            owned.due = max(owned.due, now + self._retry)

    def next_due(self) -> float | None:
        """When :meth:`due` next has something (None: nothing owned or all in flight)."""
        times = [o.due for o in self._records.values() if not o.in_flight]
        return min(times) if times else None

    def keys(self) -> Iterable[bytes]:
        return self._records.keys()
