"""Amplification: what one datagram from a new node id can make a node do.

Before the fix a ping from a fresh id made the node examine every held record and send a STORE
for each one inside the handler (25,000 STOREs for one 50-byte ping). Now the handler only queues
the contact; the hand-over is paced by :class:`dht.handover.Handover`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kademlia.node import Node

from crypto.keys import Identity
from dht.handover import Handover
from dht.limits import DEFAULT_LIMITS, DhtLimits
from dht.protocol import DhtProtocol
from dht.records import dht_key
from dht.storage import RecordStore
from dht.tasks import TaskSet
from tests.dht.support import FakeClock, eventually, make_record

HELD = 300  # records the victim holds (the amplification grew linearly with this)


def _victim(clock: FakeClock, held: int = HELD, **limits: Any) -> DhtProtocol:
    """A socketless protocol holding ``held`` records and knowing no one (so every newcomer is
    "close" to every record: the worst case for hand-over)."""
    store = RecordStore(clock)
    for i in range(held):
        user = Identity(i.to_bytes(4, "big") * 8)
        store.offer(dht_key(user.verify_key), make_record(user, now=clock.now).encode())
    return DhtProtocol(
        Node(os.urandom(20)),
        store,
        20,
        tasks=TaskSet(),
        rpc_timeout=1.0,
        limits=replace(DEFAULT_LIMITS, **limits),
    )


class Calls:
    """Records what the protocol sends instead of sending it."""

    def __init__(self, protocol: DhtProtocol, *, answer_pings: bool) -> None:
        self.stores: list[tuple[Node, bytes]] = []
        self.pings: list[Node] = []
        self.scanned = 0
        self._answer = answer_pings
        protocol.call_store = self.call_store
        protocol.call_ping = self.call_ping  # type: ignore[method-assign]
        nearest = protocol.router.nearest

        def counting_nearest(*args: Any, **kwargs: Any) -> list[Node]:
            self.scanned += 1
            return nearest(*args, **kwargs)

        protocol.router.nearest = counting_nearest  # type: ignore[method-assign]

    async def call_store(self, node: Node, key: bytes, value: bytes) -> tuple[bool, bool]:
        self.stores.append((node, key))
        return True, True

    async def call_ping(self, node_to_ask: Node) -> tuple[bool, Any]:
        node = node_to_ask
        self.pings.append(node)
        return (True, node.id) if self._answer else (False, None)


async def test_a_ping_from_a_fresh_id_costs_constant_work_in_its_handler() -> None:
    protocol = _victim(FakeClock())
    calls = Calls(protocol, answer_pings=False)
    for i in range(50):  # fresh ids, each from its own subnet (so the table takes them all)
        answer = protocol.rpc_ping((f"10.{i}.0.1", 4000), os.urandom(20))
        assert answer == protocol.source_node.id
    # nothing was examined or sent inside the handlers; at most one worker was started
    assert calls.scanned == 0 and calls.stores == [] and calls.pings == []
    assert len(protocol._tasks) <= 1


async def test_a_contact_that_never_answers_gets_no_records() -> None:
    """A spoofed source address (a reflection victim) is pinged once and sent nothing else."""
    protocol = _victim(FakeClock())
    calls = Calls(protocol, answer_pings=False)
    protocol.rpc_ping(("198.51.100.7", 4000), os.urandom(20))
    await eventually(lambda: len(protocol._tasks) == 0, what="hand-over settled")
    assert len(calls.pings) == 1
    assert calls.stores == []
    assert calls.scanned == 0


async def test_a_contact_that_answers_gets_its_records_paced_and_capped() -> None:
    protocol = _victim(
        FakeClock(), handover_per_contact=40, handover_scan_step=25, handover_stores_per_second=200
    )
    calls = Calls(protocol, answer_pings=True)
    newcomer = Node(os.urandom(20), "198.51.100.8", 4000)
    protocol.rpc_ping((newcomer.ip, newcomer.port), newcomer.id)
    assert calls.stores == []
    await eventually(lambda: len(protocol._tasks) == 0, what="hand-over finished")
    assert [n.id for n in calls.pings] == [newcomer.id]  # proved it answers, then got records
    assert len(calls.stores) == 40  # the per-contact cap; the rest comes with republishing
    assert len({key for _, key in calls.stores}) == 40
    assert {n.id for n, _ in calls.stores} == {newcomer.id}


async def test_a_verified_newcomer_is_handed_every_record_it_should_hold() -> None:
    """The paper's intent survives the pacing: all records end up at the new close node."""
    protocol = _victim(
        FakeClock(),
        held=60,
        handover_burst=10,
        handover_scan_step=7,
        handover_stores_per_second=200,
    )
    calls = Calls(protocol, answer_pings=True)
    newcomer = Node(os.urandom(20), "198.51.100.9", 4000)
    protocol.welcome_if_new(newcomer, verified=True)
    await eventually(lambda: len(protocol._tasks) == 0, timeout=10, what="hand-over finished")
    assert sorted(key for _, key in calls.stores) == sorted(protocol._store.keys())
    assert calls.pings == []  # it had already answered us


async def test_the_waiting_queue_is_bounded() -> None:
    protocol = _victim(FakeClock(), held=1, handover_pending=5)
    Calls(protocol, answer_pings=False)
    for i in range(40):
        protocol.rpc_find_node((f"10.{i}.0.1", 4000), os.urandom(20), os.urandom(20))
    assert protocol.handover_pending() == 5


# the planner alone, with time passed in


def _contacts(count: int) -> list[Node]:
    return [Node(os.urandom(20), "192.0.2.1", 5000 + i) for i in range(count)]


def test_an_unverified_contact_is_pinged_before_anything_is_sent() -> None:
    handover = Handover(DEFAULT_LIMITS, now=0.0)
    contact = _contacts(1)[0]
    keys = [os.urandom(20) for _ in range(10)]
    assert handover.offer(contact, verified=False)
    assert not handover.offer(contact, verified=False)  # already queued
    step = handover.step(0.0, lambda: keys, lambda c, k: True)
    assert step.pings == [contact] and step.stores == [] and step.delay is None
    assert handover.step(1.0, lambda: keys, lambda c, k: True).stores == []
    handover.answered(contact.id, ok=True)
    assert len(handover.step(1.0, lambda: keys, lambda c, k: True).stores) == 10
    assert len(handover) == 0

    handover.offer(contact, verified=False)
    handover.step(2.0, lambda: keys, lambda c, k: True)
    handover.answered(contact.id, ok=False)  # silence: dropped, nothing sent
    assert len(handover) == 0
    assert handover.step(3.0, lambda: keys, lambda c, k: True).stores == []


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(1.0, 50.0),
    burst=st.integers(1, 30),
    scan_step=st.integers(1, 40),
    per_contact=st.integers(1, 100),
    contacts=st.integers(1, 6),
    key_count=st.integers(0, 200),
    verified=st.lists(st.booleans(), min_size=6, max_size=6),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=300),
)
def test_stores_and_scanning_stay_within_budget(
    rate: float,
    burst: int,
    scan_step: int,
    per_contact: int,
    contacts: int,
    key_count: int,
    verified: list[bool],
    gaps: list[float],
) -> None:
    limits = DhtLimits(
        handover_stores_per_second=rate,
        handover_burst=burst,
        handover_scan_step=scan_step,
        handover_per_contact=per_contact,
    )
    handover = Handover(limits, now=0.0)
    keys = [os.urandom(20) for _ in range(key_count)]
    wanted_keys = set(keys[::2])
    people = _contacts(contacts)
    for person, ok in zip(people, verified, strict=False):
        handover.offer(person, verified=ok)
    sent: dict[bytes, list[bytes]] = {p.id: [] for p in people}
    spent = 0  # pings and stores: every datagram the hand-over sends
    now = 0.0
    for gap in gaps:
        now += gap
        examined = 0

        def wanted(contact: Node, key: bytes) -> bool:
            nonlocal examined
            examined += 1
            return key in wanted_keys

        step = handover.step(now, lambda: list(keys), wanted)
        assert examined <= scan_step  # bounded work per step
        for person in step.pings:
            handover.answered(person.id, ok=True)
        for person, key in step.stores:
            assert key in wanted_keys
            sent[person.id].append(key)
        spent += len(step.pings) + len(step.stores)
        assert spent <= burst + rate * now + 1e-6  # the global token bucket
    for person in people:
        assert len(sent[person.id]) <= per_contact
        assert len(set(sent[person.id])) == len(sent[person.id])
    # given enough time, every contact gets what it should hold (up to its cap)
    for _ in range(10 * (key_count + contacts) + 10):
        now += 1.0
        step = handover.step(now, lambda: list(keys), lambda c, k: k in wanted_keys)
        for person in step.pings:
            handover.answered(person.id, ok=True)
        for person, key in step.stores:
            sent[person.id].append(key)
    assert len(handover) == 0
    for person in people:
        assert len(sent[person.id]) == min(per_contact, len(wanted_keys))
