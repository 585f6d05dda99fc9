"""Paced hand-over of held records to new close contacts (section 2.5 of the Kademlia paper).

The library did the hand-over inline: on the first datagram from an unknown node id it examined
every held record and sent a STORE for each one the newcomer should hold, so one ping from a
fresh id made a node holding 10,000 records spend seconds of CPU and send 10,000 STOREs, possibly
to a spoofed source address. Here the datagram only queues the contact (constant work). A contact
that has not answered one of our requests is pinged first, so records only go to an address that
answers. Each :meth:`Handover.step` then examines a bounded slice of the held records and sends
STOREs from one global token bucket, with a cap per contact; whatever a contact misses reaches it
through the hourly republish. Pure code: time is passed in, the caller does the I/O.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from kademlia.node import Node

from dht.limits import DhtLimits, TokenBucket


class _State(enum.Enum):
    UNVERIFIED = enum.auto()  # only sent us requests: its source address may be spoofed
    PINGING = enum.auto()  # asked to prove it answers at its address
    READY = enum.auto()  # answered us: hand it what it should hold


@dataclass
class _Job:
    contact: Node
    state: _State
    keys: list[bytes] | None = None  # snapshot of held keys, taken when its scan starts
    position: int = 0
    sent: int = 0


@dataclass(frozen=True)
class Step:
    """What to send now, and when to step again (None: only once something is offered)."""

    pings: list[Node] = field(default_factory=list)
    stores: list[tuple[Node, bytes]] = field(default_factory=list)
    delay: float | None = None


class Handover:
    """The queue of contacts waiting for records, and the budgets that pace it."""

    def __init__(self, limits: DhtLimits, now: float) -> None:
        self._limits = limits
        self._budget = TokenBucket(limits.handover_stores_per_second, limits.handover_burst, now)
        self._jobs: OrderedDict[bytes, _Job] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def offer(self, contact: Node, *, verified: bool) -> bool:
        """Queue ``contact``; False if it is already queued or the queue is full."""
        if contact.id in self._jobs or len(self._jobs) >= self._limits.handover_pending:
            return False
        self._jobs[contact.id] = _Job(contact, _State.READY if verified else _State.UNVERIFIED)
        return True

    def answered(self, node_id: bytes, ok: bool) -> None:
        """The outcome of the ping sent to prove ``node_id`` answers at its address."""
        job = self._jobs.get(node_id)
        if job is None or job.state is not _State.PINGING:
            return
        if ok:
            job.state = _State.READY
        else:
            del self._jobs[node_id]

    def forget(self, node_id: bytes) -> None:
        self._jobs.pop(node_id, None)

    def step(
        self,
        now: float,
        keys: Callable[[], list[bytes]],
        wanted: Callable[[Node, bytes], bool],
    ) -> Step:
        """Spend the budgets available at ``now``: verification pings, then one contact's scan.

        ``keys`` gives the held keys (called once per contact), ``wanted(contact, key)`` says
        whether ``contact`` should be handed ``key``. At most ``handover_scan_step`` keys are
        examined and each ping or STORE costs one token.
        """
        limits = self._limits
        pings: list[Node] = []
        waiting = False  # an unverified contact is waiting for a token
        for job in self._jobs.values():
            if job.state is _State.UNVERIFIED:
                if self._budget.take(now):
                    job.state = _State.PINGING
                    pings.append(job.contact)
                else:
                    waiting = True
        stores: list[tuple[Node, bytes]] = []
        starved = False
        ready = next((j for j in self._jobs.values() if j.state is _State.READY), None)
        if ready is not None:
            starved = self._scan(ready, now, keys, wanted, stores)
        delays = []
        if waiting or starved:
            delays.append(max(limits.handover_step_interval, self._budget.delay(now)))
        if not starved and any(j.state is _State.READY for j in self._jobs.values()):
            delays.append(limits.handover_step_interval)
        return Step(pings, stores, min(delays) if delays else None)

    def _scan(
        self,
        job: _Job,
        now: float,
        keys: Callable[[], list[bytes]],
        wanted: Callable[[Node, bytes], bool],
        stores: list[tuple[Node, bytes]],
    ) -> bool:
        """Examine the next slice of ``job``'s keys; True if it stopped for lack of tokens."""
        limits = self._limits
        if job.keys is None:
            job.keys = keys()
        scanned = 0
        while (
            job.position < len(job.keys)
            and scanned < limits.handover_scan_step
            and job.sent < limits.handover_per_contact
        ):
            key = job.keys[job.position]
            if wanted(job.contact, key):
                if not self._budget.take(now):
                    return True
                stores.append((job.contact, key))
                job.sent += 1
            job.position += 1
            scanned += 1
        if job.position >= len(job.keys) or job.sent >= limits.handover_per_contact:
            del self._jobs[job.contact.id]
        return False
