"""Amplification: what one datagram from a new node id can make a node do.

Before the fix a ping from a fresh id made the node examine every held record and send a STORE
for each one inside the handler (25,000 STOREs for one 50-byte ping). Now the handler only queues
the contact; the hand-over is paced by :class:`dht.handover.Handover`.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kademlia.node import Node

from crypto.keys import Identity
from dht.handover import Handover
from dht.kad.contact import Contact
from dht.kad.messages import FindNode, Ping, Pong, Reply, Request, Store, Stored
from dht.limits import DEFAULT_LIMITS, DhtLimits
from dht.node import DhtNode
from dht.records import dht_key
from tests.dht.support import NodeFactory, eventually, make_record

HELD = 300  # records the victim holds (the amplification grew linearly with this)


async def _victim(make_node: NodeFactory, held: int = HELD, **limits: Any) -> DhtNode:
    """A node holding ``held`` records and knowing no one (so every newcomer is "close" to
    every record: the worst case for hand-over)."""
    node = await make_node(limits=replace(DEFAULT_LIMITS, **limits))
    for i in range(held):
        user = Identity(i.to_bytes(4, "big") * 8)
        node.storage.offer(dht_key(user.verify_key), make_record(user).encode())
    return node


class Calls:
    """Records what the node sends instead of sending it, and how often it searched its table."""

    def __init__(self, node: DhtNode, *, answer_pings: bool) -> None:
        self.stores: list[tuple[Contact, bytes]] = []
        self.pings: list[Contact] = []
        self.scanned = 0
        self._answer = answer_pings
        node._endpoint.query = self.query  # type: ignore[method-assign]
        closest = node._table.closest

        def counting_closest(*args: Any, **kwargs: Any) -> list[Contact]:
            self.scanned += 1
            return closest(*args, **kwargs)

        node._table.closest = counting_closest  # type: ignore[method-assign]

    async def query(self, contact: Contact, request: Request) -> Reply | None:
        if isinstance(request, Store):
            self.stores.append((contact, request.key))
            return Stored(True)
        assert isinstance(request, Ping), request
        self.pings.append(contact)
        return Pong() if self._answer else None


def _stranger(host: str) -> Contact:
    return Contact(os.urandom(32), host, 4000)


def _settled(node: DhtNode) -> bool:
    """Only the two upkeep loops left running: every ping, STORE and hand-over step is done."""
    return len(node._tasks) == 2


async def test_a_ping_from_a_fresh_id_costs_constant_work_in_its_handler(
    make_node: NodeFactory,
) -> None:
    node = await _victim(make_node)
    calls = Calls(node, answer_pings=False)
    for i in range(50):  # fresh ids, each from its own subnet (so the table takes them all)
        assert node._answer(_stranger(f"10.{i}.0.1"), Ping(), time.monotonic()) == Pong()
    # nothing was examined or sent inside the handlers
    assert calls.scanned == 0 and calls.stores == [] and calls.pings == []
    # and afterwards: each newcomer pinged back and by the hand-over (none answers), the full
    # bucket's head pinged once; no record examined, none sent
    await eventually(lambda: _settled(node), what="pings settled")
    assert calls.scanned == 0 and calls.stores == []
    assert len(calls.pings) <= 2 * 50 + 1


async def test_a_contact_that_never_answers_gets_no_records(make_node: NodeFactory) -> None:
    """A spoofed source address (a reflection victim) is pinged and sent nothing else."""
    node = await _victim(make_node)
    calls = Calls(node, answer_pings=False)
    stranger = _stranger("198.51.100.7")
    node._answer(stranger, Ping(), time.monotonic())
    await eventually(lambda: _settled(node), what="hand-over settled")
    assert 1 <= len(calls.pings) <= 2  # the ping back, and the hand-over's own
    assert {c.node_id for c in calls.pings} == {stranger.node_id}
    assert calls.stores == []
    assert calls.scanned == 0


async def test_a_contact_that_answers_gets_its_records_paced_and_capped(
    make_node: NodeFactory,
) -> None:
    node = await _victim(
        make_node, handover_per_contact=40, handover_scan_step=25, handover_stores_per_second=200
    )
    calls = Calls(node, answer_pings=True)
    newcomer = _stranger("198.51.100.8")
    node._answer(newcomer, Ping(), time.monotonic())
    assert calls.stores == []
    await eventually(lambda: _settled(node), what="hand-over finished")
    assert {c.node_id for c in calls.pings} == {newcomer.node_id}  # proved it answers first
    assert len(calls.stores) == 40  # the per-contact cap; the rest comes with republishing
    assert len({key for _, key in calls.stores}) == 40
    assert {c.node_id for c, _ in calls.stores} == {newcomer.node_id}


async def test_a_verified_newcomer_is_handed_every_record_it_should_hold(
    make_node: NodeFactory,
) -> None:
    """The paper's intent survives the pacing: all records end up at the new close node."""
    node = await _victim(
        make_node, held=60, handover_burst=10, handover_scan_step=7, handover_stores_per_second=200
    )
    calls = Calls(node, answer_pings=True)
    newcomer = _stranger("198.51.100.9")
    node._met(newcomer, time.monotonic())  # it answered one of our requests
    await eventually(lambda: _settled(node), timeout=10, what="hand-over finished")
    assert sorted(key for _, key in calls.stores) == sorted(node.storage.keys())
    assert calls.pings == []  # it had already answered us


async def test_the_waiting_queue_is_bounded(make_node: NodeFactory) -> None:
    node = await _victim(make_node, held=1, handover_pending=5)
    Calls(node, answer_pings=False)
    for i in range(40):
        node._answer(_stranger(f"10.{i}.0.1"), FindNode(os.urandom(20)), time.monotonic())
    assert node._peer is not None and node._peer.handover_pending() == 5


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
