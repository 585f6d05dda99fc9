"""Several DhtNodes on loopback: publishing, lookups, replacement, churn and attacks."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
from kademlia.network import Server
from kademlia.storage import ForgetfulStorage

from crypto.keys import Identity
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
    server = mallory._server
    assert await server.set_digest(KEY, forged.encode()) == 0
    assert await server.set_digest(KEY, old.encode()) == 0  # replay of an older record
    for node in nodes:
        assert await node.lookup(ALICE.verify_key) == current


class StubbornStorage(ForgetfulStorage):  # type: ignore[misc]
    """Serves its lie for every key and ignores attempts to correct it."""

    def __init__(self) -> None:
        super().__init__()
        self.lie: bytes | None = None
        self.asked = 0

    def get(self, key: bytes, default: object = None) -> object:
        self.asked += 1
        return self.lie

    def __setitem__(self, key: bytes, value: object) -> None:
        pass


async def test_forged_and_stale_answers_are_not_believed(make_node: NodeFactory) -> None:
    """A peer running the unvalidating library serves junk; lookups still find the truth."""
    nodes = await start_network(make_node, 4)
    honest = make_record(ALICE, seq=2)
    await nodes[0].publish(honest)
    liar_storage = StubbornStorage()
    liar = Server(storage=liar_storage)
    await liar.listen(0, LOOPBACK)
    try:
        await liar.bootstrap([(LOOPBACK, nodes[0].port)])
        forged = dataclasses.replace(make_record(MALLORY, seq=50), user_key=ALICE.verify_key)
        expired = make_record(ALICE, seq=60, expires=int(time.time()) - 10)
        for lie in (forged, expired, make_record(ALICE, seq=1)):
            liar_storage.lie, liar_storage.asked = lie.encode(), 0
            for node in nodes[1:]:
                assert await node.lookup(ALICE.verify_key) == honest
            assert liar_storage.asked >= len(nodes) - 1  # every lookup heard the lie
    finally:
        liar.stop()


async def test_late_joining_node_receives_and_finds_records(make_node: NodeFactory) -> None:
    nodes = await start_network(make_node, SIZE)
    record = make_record(ALICE)
    await nodes[4].publish(record)
    late = await make_node([(LOOPBACK, nodes[1].port)], limits=LOOPBACK_LIMITS)
    # the closest holder hands the newcomer the record (welcome_if_new, fixed)
    await eventually(lambda: late.storage.record(KEY) == record, what="record handed over")
    assert await late.lookup(ALICE.verify_key) == record


async def test_held_records_are_republished(make_node: NodeFactory) -> None:
    nodes = await start_network(make_node, 4, refresh_interval=0.05, republish_interval=0.05)
    record = make_record(ALICE)
    nodes[2].storage.offer(KEY, record.encode())  # as if a peer had stored it only here
    await eventually(
        lambda: all(n.storage.record(KEY) == record for n in nodes), what="republished"
    )


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
        assert peer.peer_count() == 1
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
