"""The iterative lookup as a pure state machine, with a thin driver over an injected query.

:class:`Lookup` is told which peers answered what (:meth:`Lookup.on_reply`) and says whom to
ask next; it never waits and never reads a clock, so a simulator drives thousands of them from
one event queue and :func:`run_lookup` drives one over any ``query(contact, request)``
coroutine (the wire layer does timeouts and signature checks and returns None for either).

What changed from the ``kademlia`` package's crawler, and why:

- Not round-based: each path keeps ``alpha`` requests in flight and sends the next best
  candidate as soon as any answer (or timeout) comes back. The package waited for a whole round,
  so for every dead node near the key (5 s each).
- S/Kademlia disjoint paths: the seeds are dealt over ``paths`` independent searches and a peer
  is queried by at most one of them, so a minority of liars can steer only the paths they sit
  on; a record is found if any path reaches an honest holder.
- FIND_VALUE does not stop at the first value: it goes on until each path has heard from the
  ``quorum`` closest peers it found and they all hold the same valid value, or else from its
  ``beam`` closest; believes only the highest sequence that ``accept`` validates, and names
  the close peers that answered with an older or no value (for repair STOREs) and those whose
  value ``accept`` refused (to penalise). One refused value or two different sequences seen
  anywhere, and every path reads its whole ``beam``: the quorum only saves reading replicas
  that agree (a liar or a stale replica near the key costs the full read, as before).
- FIND_VALUE starts each path with its ``start`` nearest seeds, and ``alpha`` once the path
  has heard: our closest contacts are mostly far from the key, and the first answers name
  peers nearer than the other seeds (most of the first ``alpha`` x ``paths`` requests went to
  peers beyond the 40 closest to the key).

- A silent peer costs a slot for ``slow_after`` (a few measured round trips), never the
  lookup its timeout: once ``alpha`` peers answered, the lookup ends when no request holds a
  slot, whatever the silent ones may still say.
- A lookup does not wait for requests whose answers can no longer change its result: a
  FIND_NODE path ends with requests in flight to peers farther than the ``beam`` closest that
  answered, a FIND_VALUE path once its ``beam`` closest answered (its ``beam`` replicas are
  read; one more in flight is most likely dead under churn). Each such wait was one
  ``slow_after`` per lookup at 10 % churn, several in a row at 30 %.
- A path counts on only the share of its requests in flight that this lookup saw answered
  (:meth:`Lookup._alive`), so under churn it asks more of the close peers at once rather than
  one more after each dead one's ``slow_after``; and a request that ``OVERTAKEN`` answers to
  later requests overtook (it is most likely dead) no longer holds a slot.
- One IP (one /24 or /64) may be only a few of a lookup's candidates, over all its paths, so
  an address naming many fresh ids cannot fill the shortlist with peers that never answer.

The per-path criterion to stop ("the next candidate is farther than the ``beam``-th closest
peer that answered", here also counting those in flight, as many as are likely to answer) is
the one of hivemind's
``traverse_dht`` beam search.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dht.kad.contact import Contact
from dht.kad.messages import (
    MAX_REPLY_CONTACTS,
    FindNode,
    FindValue,
    Nodes,
    Reply,
    Request,
    Value,
)
from dht.limits import DEFAULT_LIMITS, subnet

T = TypeVar("T")

K = 20
ALPHA = 5
"""Requests in flight per path. Measured in the simulation (300 nodes, one-way latency 5-50 ms):
alpha 3 -> 5 took FIND_VALUE p50 from 443 to 300 ms (994 to 625 ms with 30 % dead) for the same
number of queries (49 vs 50), since a path stops by distance, not by rounds."""
PATHS = 3
START = 2
"""FIND_VALUE requests per path until it has heard from one (see the module docstring)."""
QUORUM = 4
"""A FIND_VALUE path whose this many closest peers that answered hold the same valid value
(and no value seen disagrees) stops there instead of reading its whole ``beam``.
Measured in the simulation (600 nodes, 300 lookups): START 2 and QUORUM 4 took the requests
per FIND_VALUE from 34/37/41 to 24/26/28 at 0/10/30 % of the nodes dead; QUORUM 3 to 18-19.
With 10/15/20 % of the nodes colluding liars serving a stale record (and as many dropping
requests): 0 stale believed in 487/431/366 lookups, as with every path reading its beam (a
quorum that stopped each path regardless of values seen elsewhere believed one in 431)."""
OVERTAKEN = 3
"""A request overtaken by this many answers to requests sent after it (on any path) is most
likely to a dead peer (as TCP retransmits after three duplicate ACKs): it no longer holds a
slot nor counts as one that will answer, so its path asks the next candidate instead of
waiting out its ``slow_after``. A path whose first seeds were both dead waited that long.
Simulation (600 nodes, 30 % dead): FIND_VALUE p50 365 -> 311 ms, same requests."""
MAX_QUERIES = 400
"""Bound on the requests one lookup sends, whatever the answers say."""
PER_IP = DEFAULT_LIMITS.contacts_per_ip_bucket
PER_SUBNET = DEFAULT_LIMITS.contacts_per_subnet_bucket
"""Candidates one IP (one /24 or /64) may be among in one lookup, over all its paths: a
lookup's shortlist is one neighbourhood, so it gets a k-bucket's caps. Peers named beyond
them are not asked, so an address announcing many fresh ids costs a lookup a few slots, not
its shortlist (seeds, from our own capped table, are counted but always kept)."""
SLOW_MIN = 0.01
"""Least ``slow_after`` that :class:`RttEstimate` suggests: below it, a loopback peer in a
busy process would often be taken for a dead one (a wrong guess costs one more request: its
late answer still counts)."""
SLOW_FACTOR = 2.0
"""``slow_after`` is this many times the 90th percentile of recent round trips."""
FRESH = 5.0
FRESH_SAMPLES = 4
"""Round trips measured in the last FRESH seconds that :class:`RttEstimate` needs to go by
them alone."""

Query = Callable[[Contact, Request], Awaitable[Reply | None]]


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    """The newest valid value seen: its sequence, what ``accept`` made of it, its bytes."""

    seq: int
    record: T
    value: bytes
    holders: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class LookupResult(Generic[T]):
    closest: tuple[Contact, ...]  # the k closest peers that answered, nearest first
    found: Found[T] | None  # FIND_VALUE: the highest valid sequence, if any peer had one
    repair: tuple[Contact, ...]  # among ``closest``: answered with an older or no value
    # (after a quorum read: only those nearer the key than a replica that was read)
    liars: tuple[Contact, ...]  # answered with a value ``accept`` refused, or a wrong reply
    failed: tuple[Contact, ...]  # timed out (or garbage, as the query reported None)
    queries: int
    hops: int  # the longest chain of referrals to a peer in ``closest``


@dataclass(slots=True)
class _Path:
    candidates: list[tuple[int, bytes]] = field(default_factory=list)  # heap (distance, id)
    known: dict[bytes, tuple[Contact, int]] = field(default_factory=dict)  # id -> (c, hops)
    answered: list[int] = field(default_factory=list)  # sorted distances of its answerers
    ids: dict[int, bytes] = field(default_factory=dict)  # distance -> id, of its answerers
    in_flight: int = 0
    heard: bool = False  # an answer, a timeout or a slow request came back to this path
    flying: dict[bytes, int] = field(default_factory=dict)  # in flight, not slow: id -> dist
    slow: dict[bytes, int] = field(default_factory=dict)  # silent for long: id -> distance


class Lookup(Generic[T]):
    """One lookup of ``target``: FIND_NODE, or FIND_VALUE when ``accept`` is given.

    ``seeds`` are where to start (anchors first, then our closest contacts); ``avoid`` says
    which ids named by peers not to ask (our table holds them as timed out; seeds are always
    asked: the caller chose them). ``own_id`` is never asked.
    """

    def __init__(
        self,
        own_id: bytes,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        accept: Callable[[bytes], tuple[int, T] | None] | None = None,
        k: int = K,
        alpha: int = ALPHA,
        paths: int = PATHS,
        beam: int | None = None,
        avoid: Callable[[bytes], bool] | None = None,
        max_queries: int = MAX_QUERIES,
        per_ip: int = PER_IP,
        per_subnet: int = PER_SUBNET,
        start: int | None = None,
        quorum: int = QUORUM,
    ) -> None:
        self.target = target
        self.request: Request = FindValue(target) if accept is not None else FindNode(target)
        self._number = int.from_bytes(target, "big")
        self._own_id = own_id
        self._accept = accept
        self._k = k
        self._alpha = alpha
        if start is None:
            start = alpha if accept is None else START
        self._start = max(1, min(start, alpha))
        # FIND_VALUE: each path hears from its share of k (their union is k peers near the
        # key, where the record's replicas are); S/Kademlia's d paths of k each cost every
        # read d*k signed round trips. FIND_NODE (where to STORE) keeps k per path.
        paths = max(1, paths)
        self._beam = beam or (k if accept is None else max(alpha, -(-k // paths)))
        self._quorum = self._beam if accept is None else min(max(1, quorum), self._beam)
        self._per_ip = per_ip
        self._per_subnet = per_subnet
        self._ips: dict[str, int] = {}
        self._subnets: dict[str, int] = {}
        self._avoid = avoid
        self._max_queries = max_queries
        self._paths = [_Path() for _ in range(paths)]
        self._path_of: dict[bytes, int] = {}  # queried id -> the one path that asked it
        self._seeds: set[bytes] = set()
        self._learned: set[bytes] = set()  # ids counted against the per-IP/subnet caps
        self._answered: dict[bytes, tuple[int, Contact, int]] = {}  # id -> (dist, c, hops)
        self._failed: dict[bytes, Contact] = {}
        self._ended = False  # result() was taken: late answers are ignored
        self._liars: dict[bytes, Contact] = {}
        self._holders: dict[bytes, int] = {}  # id -> seq of the valid value it returned
        self._checked: dict[bytes, tuple[int, T] | None] = {}  # accept() per distinct value
        self._best: tuple[int, T, bytes] | None = None
        self._sent: dict[bytes, int] = {}  # in flight, not slow: id -> its number among sends
        self._answered_sends: list[int] = []  # the numbers of answered requests, sorted
        self._suspect = False  # a refused value, or two sequences: every path reads its beam
        self._queries = 0
        self._in_flight = 0
        self._slow = 0  # requests now past ``slow_after``
        ordered = sorted(
            {c.node_id: c for c in seeds if c.node_id != own_id}.values(),
            key=self._distance,
        )
        for i, contact in enumerate(ordered):
            self._seeds.add(contact.node_id)
            self._learn(self._paths[i % len(self._paths)], contact, 1)

    def _distance(self, contact: Contact) -> int:
        return int.from_bytes(contact.node_id, "big") ^ self._number

    def _learn(self, path: _Path, contact: Contact, hops: int) -> None:
        node_id = contact.node_id
        if node_id == self._own_id or node_id in path.known:
            return
        if node_id not in self._learned:
            net = subnet(contact.host)
            ips, nets = self._ips.get(contact.host, 0), self._subnets.get(net, 0)
            if node_id not in self._seeds and (ips >= self._per_ip or nets >= self._per_subnet):
                return  # this address (or its subnet) has its share of the shortlist
            self._learned.add(node_id)
            self._ips[contact.host], self._subnets[net] = ips + 1, nets + 1
        path.known[node_id] = (contact, hops)
        heapq.heappush(path.candidates, (self._distance(contact), node_id))

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered or timed out."""
        return self._in_flight

    @property
    def done(self) -> bool:
        """The result is final: nothing holds a slot (after :meth:`start`), or every path is
        settled (:meth:`_settled`) and the requests still in flight cannot change the result;
        slow peers are not worth waiting for.

        A peer silent past ``slow_after`` (several round trips) is most likely dead and no
        longer blocks: each path already went on to its next candidates and stopped by the
        distance of those that answered. Waiting for the timeout cost every lookup near a dead
        node the full timeout (under churn fewer than k of the few peers every answer names
        are alive). Only a lookup that heard from fewer than ``alpha`` peers (a tiny network,
        or our link is the slow one) waits for its slow peers.
        """
        if self._ended:
            return True
        enough = len(self._answered) >= min(self._alpha, self._k)
        if self._in_flight:
            return enough and all(self._settled(path) for path in self._paths)
        return enough or not any(path.slow for path in self._paths)

    def _settled(self, path: _Path) -> bool:
        """Whether ``path`` heard from the ``beam`` closest peers it can find: none of its
        requests in flight and none of its candidates is closer than the ``beam``-th closest
        that answered. Its farther requests still in flight cannot change which peers are
        closest, so the lookup does not wait for them (under churn, one of them dead cost a
        lookup ``slow_after``)."""
        want = self._want(path)
        if len(path.answered) < want:
            return not path.in_flight and self._top(path) is None
        bound = path.answered[want - 1]
        top = self._top(path)
        if top is not None and top <= bound:
            return False
        # FIND_VALUE: the beam closest that answered are enough (see the class docstring)
        return self._accept is not None or all(d > bound for d in path.flying.values())

    def _want(self, path: _Path) -> int:
        """How many of its closest peers ``path`` must hear from. FIND_NODE: ``beam``.
        FIND_VALUE: ``quorum`` while every value seen agrees; ``beam`` once its ``quorum``
        closest that answered (no closer candidate left) do not all hold that value (one
        missing: a new or dead replica), and on every path once any peer sent a refused value
        or another sequence (a liar or a stale replica: read all the replicas, as before)."""
        quorum = self._quorum
        if self._suspect:
            return self._beam
        if len(path.answered) < quorum:
            return quorum
        if self._best is not None:
            seq, holders, ids = self._best[0], self._holders, path.ids
            if all(holders.get(ids[d]) == seq for d in path.answered[:quorum]):
                return quorum
        top = self._top(path)
        if top is not None and top <= path.answered[quorum - 1]:
            return quorum  # closer peers to ask first: they may be the ones that agree
        return self._beam

    def _top(self, path: _Path) -> int | None:
        """The distance of ``path``'s best candidate still worth asking (None: none left);
        drops those another path asked and those ``avoid`` says are dead."""
        while path.candidates:
            distance, node_id = path.candidates[0]
            if node_id in self._path_of or (
                self._avoid is not None and node_id not in self._seeds and self._avoid(node_id)
            ):
                heapq.heappop(path.candidates)  # another path's, or known dead
                continue
            return distance
        return None

    def start(self) -> list[Contact]:
        """The first requests to send (``self.request`` to each)."""
        sends: list[Contact] = []
        for index in range(len(self._paths)):
            sends += self._next(index)
        return sends

    def on_reply(self, contact: Contact, reply: Reply | None) -> list[Contact]:
        """``contact`` answered ``reply`` (None: timed out or garbage); whom to ask next."""
        node_id = contact.node_id
        index = self._path_of.get(node_id)
        if index is None or node_id in self._answered or node_id in self._failed:
            return []  # not asked by us, or answered twice: ignored
        path = self._paths[index]
        path.heard = True
        if node_id in path.slow:
            if self._ended:
                return []  # the lookup ended without it
            del path.slow[node_id]
            self._slow -= 1
        else:
            path.in_flight -= 1
            self._in_flight -= 1
            del path.flying[node_id]
            sent = self._sent.pop(node_id)
            if reply is not None:
                bisect.insort(self._answered_sends, sent)
        hops = path.known[contact.node_id][1]
        contacts: tuple[Contact, ...] | None = None
        if isinstance(reply, Nodes) and self._accept is None:
            contacts = reply.contacts
        elif isinstance(reply, Value) and self._accept is not None:
            contacts = reply.contacts  # FIND_VALUE is answered by Value; empty: no record
            if reply.value:
                self._value(contact, reply.value)
        if contacts is None:  # timeout, or a reply that does not answer this request
            if reply is None:
                self._failed[contact.node_id] = contact
            else:
                self._liars[contact.node_id] = contact
            return self._next_all(index)
        distance = self._distance(contact)
        self._answered[contact.node_id] = (distance, contact, hops)
        bisect.insort(path.answered, distance)
        path.ids[distance] = node_id
        for named in contacts[:MAX_REPLY_CONTACTS]:
            self._learn(path, named, hops + 1)
        # Every path: this answer may overtake another path's requests (or, a newer value or
        # values that disagree, make paths that stopped early read on).
        return self._next_all(index)

    def on_slow(self, contact: Contact) -> list[Contact]:
        """``contact`` has been silent for longer than answers usually take: its path's slot
        goes to the next candidate now, not at the timeout. The lookup waits for its answer (or
        timeout) only while that answer could still change the result. Whom to ask next."""
        node_id = contact.node_id
        index = self._path_of.get(node_id)
        if index is None or node_id in self._answered or node_id in self._failed:
            return []
        path = self._paths[index]
        if node_id in path.slow or self._ended:
            return []
        path.heard = True
        path.slow[node_id] = path.flying.pop(node_id)
        del self._sent[node_id]
        self._slow += 1
        path.in_flight -= 1
        self._in_flight -= 1
        return self._next(index)

    def _alive(self) -> float:
        """The share of this lookup's requests that got an answer rather than a timeout or
        silence (1 until one did not): a path counts on that share of its requests in flight
        to fill its beam, so under churn it asks more of the close peers at once instead of
        one more after each dead one's ``slow_after``."""
        answered = len(self._answered) + len(self._liars)
        return (answered + 1) / (answered + len(self._failed) + self._slow + 1)

    def _value(self, contact: Contact, value: bytes) -> None:
        assert self._accept is not None
        if value not in self._checked:
            self._checked[value] = self._accept(value)
        verdict = self._checked[value]
        if verdict is None:
            self._liars[contact.node_id] = contact
            self._suspect = True
            return
        seq, record = verdict
        if self._best is not None and seq != self._best[0]:
            self._suspect = True
        self._holders[contact.node_id] = seq
        if self._best is None or seq > self._best[0]:
            self._best = (seq, record, value)

    def _next_all(self, first: int) -> list[Contact]:
        """:meth:`_next` for path ``first``, then for the others."""
        sends = self._next(first)
        for index in range(len(self._paths)):
            if index != first:
                sends += self._next(index)
        return sends

    def _overtaken(self, node_id: bytes) -> bool:
        """Whether OVERTAKEN requests sent after the one to ``node_id`` were answered."""
        later = self._answered_sends
        return len(later) - bisect.bisect_right(later, self._sent[node_id]) >= OVERTAKEN

    def _next(self, index: int) -> list[Contact]:
        """Fill path ``index`` up to ``alpha`` in flight with its best unasked candidates; a
        request that answers sent after it overtook holds no slot and is not counted on."""
        path = self._paths[index]
        sends: list[Contact] = []
        alpha = self._alpha if path.heard else self._start
        late = {i for i in path.flying if self._overtaken(i)}
        while path.in_flight - len(late) < alpha and self._queries < self._max_queries:
            distance = self._top(path)
            if distance is None:
                break
            node_id = path.candidates[0][1]
            want = self._want(path)
            closer = bisect.bisect_left(path.answered, distance)
            if closer >= want:
                break  # this path has heard from the beam closest it can find
            flying = sum(d < distance and i not in late for i, d in path.flying.items())
            if closer + self._alive() * flying >= want:
                break  # ... or will, if those in flight answer as often as others did
            heapq.heappop(path.candidates)
            path.flying[node_id] = distance
            self._sent[node_id] = self._queries
            self._path_of[node_id] = index
            path.in_flight += 1
            self._in_flight += 1
            self._queries += 1
            sends.append(path.known[node_id][0])
        return sends

    def result(self) -> LookupResult[T]:
        """The outcome so far; once taken, late answers are ignored."""
        self._ended = True
        best = heapq.nsmallest(self._k, self._answered.values(), key=lambda a: a[0])
        closest = tuple(c for _, c, _ in best)
        found: Found[T] | None = None
        repair: tuple[Contact, ...] = ()
        if self._best is not None:
            seq, record, value = self._best
            holders = tuple(
                self._answered[i][1]
                for i, s in self._holders.items()
                if s == seq and i in self._answered
            )
            found = Found(seq, record, value, holders)
            # Read on a quorum only, the k closest that answered reach past the replicas into
            # the peers that led to them: repair only those nearer than a replica we read.
            beam = self._suspect or any(self._want(p) == self._beam for p in self._paths)
            edge = max(self._answered[c.node_id][0] for c in holders)
            repair = tuple(
                c for _, c, _ in best
                if self._holders.get(c.node_id) != seq and (beam or self._distance(c) < edge)
            )
        return LookupResult(
            closest=closest,
            found=found,
            repair=repair,
            liars=tuple(self._liars.values()),
            failed=tuple(self._failed.values()),
            queries=self._queries,
            hops=max((h for _, _, h in best), default=0),
        )


class RttEstimate:
    """Round-trip times of the latest answers, and from them how long a lookup lets a silent
    peer hold a slot: ``SLOW_FACTOR`` times the 90th percentile, at least ``SLOW_MIN``, at
    most ``ceiling``. A fixed fraction of the RPC timeout made each dead peer cost a lookup that
    long (1.25 s) where answers take milliseconds. The window is short (16) and the driver
    reads it afresh while the lookup runs, so the answers of the lookup itself soon set it,
    not those of a busy moment long past (a node's last queries may date from its join):
    once ``FRESH_SAMPLES`` answers are under ``FRESH`` seconds old, only those count. (Counting
    the whole window, a lookup that sends its requests a few at a time kept the join storm's
    p90 for most of its run, and each dead peer cost it the ceiling: p99 1.26 s at 10 %
    churn in the benchmark.)"""

    def __init__(self, ceiling: float, size: int = 16) -> None:
        self._ceiling = ceiling
        self._samples: deque[tuple[float, float]] = deque(maxlen=size)  # (when, rtt)

    def add(self, rtt: float, now: float) -> None:
        self._samples.append((now, rtt))

    def slow_after(self, now: float) -> float:
        """The wait at ``now``; the ceiling until a few answers were measured."""
        recent = [rtt for when, rtt in self._samples if now - when <= FRESH]
        if len(recent) < FRESH_SAMPLES:
            if len(self._samples) < 8:
                return self._ceiling
            recent = [rtt for _, rtt in self._samples]
        ordered = sorted(recent)
        p90 = ordered[min(len(ordered) - 1, (9 * len(ordered)) // 10)]
        return min(self._ceiling, max(SLOW_MIN, SLOW_FACTOR * p90))


async def run_lookup(
    lookup: Lookup[T], query: Query, *, slow_after: float | Callable[[], float] | None = None
) -> LookupResult[T]:
    """Drive ``lookup`` over ``query``: each answer immediately releases the next request.

    ``query`` returns None for a timeout or an unusable answer; an exception counts as None.
    A request unanswered after ``slow_after`` seconds (a callable is asked again whenever the
    driver waits, e.g. :meth:`RttEstimate.slow_after` as answers come in) stops holding a slot
    (see :meth:`Lookup.on_slow`), so dead peers cost that long instead of the full timeout;
    the lookup ends when every request still holding a slot is settled.
    """
    loop = asyncio.get_running_loop()
    pending: dict[asyncio.Future[Reply | None], tuple[Contact, float]] = {}  # -> (c, sent)
    slow = float("inf")  # "sent" of a request already reported slow

    def wait_after() -> float:
        if slow_after is None:
            return float("inf")
        return slow_after() if callable(slow_after) else slow_after

    async def ask(contact: Contact) -> Reply | None:
        return await query(contact, lookup.request)

    def send(contacts: list[Contact]) -> None:
        for contact in contacts:
            pending[asyncio.ensure_future(ask(contact))] = (contact, loop.time())

    send(lookup.start())
    try:
        while pending and not lookup.done:
            after = wait_after()
            wait = min(sent for _, sent in pending.values()) + after - loop.time()
            done, _ = await asyncio.wait(
                pending,
                timeout=None if wait == float("inf") else max(0.0, wait),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for future in done:
                contact, _ = pending.pop(future)
                failed = future.cancelled() or future.exception() is not None
                send(lookup.on_reply(contact, None if failed else future.result()))
            now, after = loop.time(), wait_after()
            for future, (contact, sent) in list(pending.items()):
                if sent + after <= now:
                    pending[future] = (contact, slow)
                    send(lookup.on_slow(contact))
    finally:
        for future in pending:
            future.cancel()
    return lookup.result()
