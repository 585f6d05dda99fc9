"""Several DhtNodes on loopback: publishing, lookups, replacement, churn and attacks."""

from __future__ import annotations

import dataclasses
import os
import socket
import time

import pytest

from crypto.keys import Identity
from dht.kad.contact import Contact
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
from dht.kad.rpc import RpcEngine
from dht.kad.udp import UdpEndpoint
from dht.node import DhtNode
from dht.records import RecordError, dht_key
from tests.dht.support import (
    LOOPBACK,
    LOOPBACK_LIMITS,
    FakeClock,
    NodeFactory,
    eventually,
    make_record,
    start_network,
)

ALICE = Identity(bytes([1]) * 32)
MALLORY = Identity(bytes([2]) * 32)
KEY = dht_key(ALICE.verify_key)
SIZE = 6


async def test_published_record_is_found_by_every_node(make_node: NodeFactory) -> None:
    nodes = await start_network(make_node, SIZE)
    record = make_record(ALICE)
    assert await nodes[2].publish(record) == SIZE - 1
    for node in nodes:
        assert await node.lookup(ALICE.verify_key) == record
    assert await nodes[0].lookup(MALLORY.verify_key) is None


async def test_higher_seq_replaces_lower(make_node: NodeFactory) -> None:
    nodes = await start_network(make_node, SIZE)
    first, second = make_record(ALICE, seq=1), make_record(ALICE, seq=2)
    await nodes[1].publish(first)
    assert await nodes[3].publish(second) == SIZE - 1  # e.g. the user moved to another node
    for node in nodes:
        assert await node.lookup(ALICE.verify_key) == second
    with pytest.raises(RecordError, match="older"):
        await nodes[3].publish(first)


async def test_others_cannot_overwrite_or_roll_back_a_record(make_node: NodeFactory) -> None:
    nodes = await start_network(make_node, SIZE)
    old, current = make_record(ALICE, seq=1), make_record(ALICE, seq=2)
    await nodes[0].publish(old)
    await nodes[0].publish(current)
    mallory = await make_node([(LOOPBACK, nodes[1].port)], limits=LOOPBACK_LIMITS)
    forged = dataclasses.replace(make_record(MALLORY, seq=100), user_key=ALICE.verify_key)
    with pytest.raises(RecordError, match="signature"):
        await mallory.publish(forged)
    # bypassing its own node's checks does not help either: every peer refuses
    assert await mallory._store_at_closest(KEY, forged.encode()) == 0
    assert await mallory._store_at_closest(KEY, old.encode()) == 0  # replay of an older record
    for node in nodes:
        assert await node.lookup(ALICE.verify_key) == current


class Liar:
    """A peer with a key of its own that serves its lie for every key and ignores attempts to
    correct it (what a node without record validation would do)."""

    def __init__(self) -> None:
        self.lie = b""
        self.asked = 0
        self.endpoint = UdpEndpoint(RpcEngine(Identity(os.urandom(32))), self.answer)

    def answer(self, sender: Contact, request: Request, now: float) -> Reply:
        if isinstance(request, Ping):
            return Pong()
        if isinstance(request, FindNode):
            return Nodes(())
        if isinstance(request, FindValue):
            self.asked += 1
            return Value(self.lie, ())
        assert isinstance(request, Store)
        return Stored(True)

    async def join(self, nodes: list[DhtNode]) -> None:
        """Make every node know it: it asks each one something (they ping it back)."""
        for node in nodes:
            contact = await self.endpoint.probe((LOOPBACK, node.port))
            assert contact is not None
            assert isinstance(await self.endpoint.query(contact, FindNode(os.urandom(20))), Nodes)
        liar_id = Contact(self.endpoint.engine.key, *self.endpoint.address).node_id
        await eventually(lambda: all(liar_id in n.contact_ids() for n in nodes), what="liar known")


async def test_forged_and_stale_answers_are_not_believed(make_node: NodeFactory) -> None:
    """A peer that serves junk is heard by every lookup; lookups still find the truth."""
    nodes = await start_network(make_node, 4)
    honest = make_record(ALICE, seq=2)
    await nodes[0].publish(honest)
    liar = Liar()
    await liar.endpoint.start(LOOPBACK, 0)
    try:
        forged = dataclasses.replace(make_record(MALLORY, seq=50), user_key=ALICE.verify_key)
        expired = make_record(ALICE, seq=60, expires=int(time.time()) - 10)
        for lie in (forged, expired, make_record(ALICE, seq=1)):
            await liar.join(nodes)  # again: a peer that lied is dropped from the table
            liar.lie, liar.asked = lie.encode(), 0
            for node in nodes[1:]:
                assert await node.lookup(ALICE.verify_key) == honest
            assert liar.asked >= len(nodes) - 1  # every lookup heard the lie
    finally:
        await liar.endpoint.close()


async def test_late_joining_node_receives_and_finds_records(make_node: NodeFactory) -> None:
    nodes = await start_network(make_node, SIZE)
    record = make_record(ALICE)
    await nodes[4].publish(record)
    late = await make_node([(LOOPBACK, nodes[1].port)], limits=LOOPBACK_LIMITS)
    # the closest holder hands the newcomer the record (welcome_if_new, fixed)
    await eventually(lambda: late.storage.record(KEY) == record, what="record handed over")
    assert await late.lookup(ALICE.verify_key) == record


async def test_own_records_are_republished(make_node: NodeFactory) -> None:
    """A node that joined after the publish, and that no hand-over reached, gets the record
    when its owner republishes it (each republish_interval, on the record clock)."""
    clock = FakeClock(time.time())
    limits = dataclasses.replace(LOOPBACK_LIMITS, handover_per_contact=0)  # no hand-over
    kwargs = {"clock": clock, "limits": limits, "refresh_interval": 0.05,
              "republish_interval": 600.0}
    nodes = await start_network(make_node, 4, **kwargs)
    record = make_record(ALICE, now=clock.now)
    assert await nodes[2].publish(record) == 3
    late = await make_node([(LOOPBACK, nodes[1].port)], **kwargs)
    await eventually(lambda: nodes[2].node_id in late.contact_ids()
                     or late.node_id in nodes[2].contact_ids(), what="the owner meets it")
    assert late.storage.record(KEY) is None
    clock.now += 600
    await eventually(lambda: late.storage.record(KEY) == record, what="republished")


async def test_records_expire_across_the_network(make_node: NodeFactory) -> None:
    clock = FakeClock()
    nodes = await start_network(make_node, 4, clock=clock)
    record = make_record(ALICE, expires=int(clock.now) + 600)
    assert await nodes[0].publish(record) == 3
    assert await nodes[3].lookup(ALICE.verify_key) == record
    clock.now += 600
    for node in nodes:
        assert await node.lookup(ALICE.verify_key) is None
        assert len(node.storage) == 0


async def test_bootstrap_peer_that_comes_later(make_node: NodeFactory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))  # holds the port and never answers
        port = silent.getsockname()[1]
        joiner = await make_node([(LOOPBACK, port)], rpc_timeout=0.2, bootstrap_interval=0.05)
        assert joiner.peer_count() == 0
    # the peer comes up on that port later; the joiner retries by itself
    peer = DhtNode(rpc_timeout=0.5)
    try:
        await peer.start(LOOPBACK, port, [])
        await eventually(lambda: joiner.peer_count() == 1, what="re-bootstrap")
        assert joiner.peers() == [(LOOPBACK, port)]
        # The joiner counts the peer once its answer arrives; the peer adds the joiner when
        # it has handled the request, which may be a moment later (it failed under load).
        await eventually(lambda: peer.peer_count() == 1, what="the peer learns the joiner")
    finally:
        await peer.aclose()


async def test_publish_alone_keeps_own_copy(make_node: NodeFactory) -> None:
    node = await make_node()
    record = make_record(ALICE)
    assert await node.publish(record) == 0
    assert await node.lookup(ALICE.verify_key) == record


async def test_stop_cancels_everything(make_node: NodeFactory) -> None:
    nodes = await start_network(make_node, 3)
    await nodes[0].publish(make_record(ALICE))
    node = nodes[1]
    await node.aclose()
    assert len(node._tasks) == 0
    with pytest.raises(RuntimeError):
        await node.lookup(ALICE.verify_key)
    node.stop()  # idempotent
    DhtNode().stop()  # never started


async def test_lookup_gathers_past_the_first_answer(make_node: NodeFactory) -> None:
    """Only the node farthest from the key has the newest record; it still wins.

    The library's crawl stopped at the first round with any value (here: the closest node's
    older record) — with alpha=1 that round asks just one node.
    """
    nodes = await start_network(make_node, 5, alpha=1)
    querier, holders = nodes[0], nodes[1:]
    farthest = max(
        holders, key=lambda n: int.from_bytes(n.node_id, "big") ^ int.from_bytes(KEY, "big")
    )
    old, new = make_record(ALICE, seq=1), make_record(ALICE, seq=2)
    for node in holders:
        node.storage.offer(KEY, (new if node is farthest else old).encode())
    assert await querier.lookup(ALICE.verify_key) == new
    # the close nodes that answered with the old record are sent the new one
    await eventually(lambda: all(n.storage.record(KEY) == new for n in holders), what="repair")


async def test_bootstrap_by_host_name(make_node: NodeFactory) -> None:
    first = await make_node()
    second = await make_node([("localhost", first.port)])
    assert second.peers() == [(LOOPBACK, first.port)]


async def test_a_dead_peer_the_lookup_did_not_wait_for_is_still_marked(
    make_node: NodeFactory,
) -> None:
    """A lookup ends without waiting for a silent peer once enough others answered; its request
    runs on to the timeout, so the table marks the dead peer and later lookups skip it (when
    the lookup cancelled it, the table never learned and every lookup asked it again)."""
    nodes = await start_network(make_node, 7)
    querier, dead = nodes[0], nodes[3]
    others = {n.node_id for n in nodes[1:]}
    await eventually(lambda: querier.contact_ids() == others, what="the querier knows all")
    await dead.aclose()
    assert await querier.lookup(ALICE.verify_key) is None  # asks all six, five answer
    await eventually(
        lambda: querier.contact_ids() == others - {dead.node_id}, what="the dead one marked"
    )
