"""The DHT node on loopback UDP: joining by address (probe), anchors, a restart without the
bootstrap node, floods of ids from one address, hand-over only to addresses that answer."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from crypto.keys import Identity
from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import Ping
from dht.kad.node import PROVE_TRIES, DhtNode
from dht.kad.rpc import RpcEngine
from dht.limits import DEFAULT_LIMITS
from dht.records import dht_key
from tests.dht.support import LOOPBACK, LOOPBACK_LIMITS, eventually, make_record

Factory = Callable[..., Awaitable[DhtNode]]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    nodes: list[DhtNode] = []

    async def start(
        bootstrap: Sequence[tuple[str, int]] = (), *, port: int = 0, **kwargs: Any
    ) -> DhtNode:
        kwargs.setdefault("rpc_timeout", 1.0)
        node = DhtNode(**kwargs)
        nodes.append(node)
        await node.start(LOOPBACK, port, bootstrap)
        return node

    try:
        yield start
    finally:
        for node in nodes:
            await node.aclose()


async def network(make: Factory, size: int, **kwargs: Any) -> list[DhtNode]:
    kwargs.setdefault("limits", LOOPBACK_LIMITS)
    first = await make(**kwargs)
    nodes = [first] + [await make([(LOOPBACK, first.port)], **kwargs) for _ in range(size - 1)]
    await eventually(lambda: all(n.peer_count() >= 1 for n in nodes), what="all joined")
    return nodes


async def test_a_peer_known_by_address_only_is_probed_and_both_sides_learn_each_other(
    make: Factory,
) -> None:
    first = await make()
    second = await make([(LOOPBACK, first.port)])
    assert second.peers() == [(LOOPBACK, first.port)]
    assert second.contact_ids() == {first.node_id}
    assert second.contact_address(first.node_id) == (LOOPBACK, first.port)
    # the first learnt the second from its requests, and proved it with a ping back
    await eventually(lambda: first.peers() == [(LOOPBACK, second.port)], what="ping back")
    assert first.contact_ids() == {second.node_id}


async def test_probing_a_silent_address_or_ourselves_finds_nobody(make: Factory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        node = await make(rpc_timeout=0.2)
        assert await node.bootstrap([silent.getsockname()[:2], (LOOPBACK, node.port)]) == 0
    assert node.peers() == [] and node.contact_ids() == set()


async def test_a_restarted_node_rejoins_through_its_saved_peers_without_its_bootstrap_node(
    make: Factory,
) -> None:
    nodes = await network(make, 8)
    boot, rest = nodes[0], nodes[1:]
    users = [Identity(os.urandom(32)) for _ in rest]
    records = [make_record(u) for u in users]
    for node, record in zip(rest, records, strict=True):
        assert await node.publish(record) >= 1
    leaving = rest[0]
    saved = leaving.peers()
    assert len(saved) >= 2  # more than its bootstrap node
    identity = leaving._identity
    await leaving.aclose()
    await boot.aclose()
    back = await make(saved, identity=identity, limits=LOOPBACK_LIMITS)
    assert back.node_id == leaving.node_id
    assert back.peer_count() >= 1
    assert boot.node_id not in back.contact_ids()
    for user, record in zip(users, records, strict=True):
        assert await back.lookup(user.verify_key) == record


async def test_protected_peers_are_anchors_first_in_peers_and_kept_through_a_flood(
    make: Factory,
) -> None:
    boot = await make()
    node = await make(protected_peers=[(LOOPBACK, boot.port)])
    address = (LOOPBACK, node.port)
    # 40 sockets on one IP, 5 fresh ids each: every request answered, few become contacts
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))
            sock.setblocking(False)
            for _ in range(5):
                engine = RpcEngine(Identity(os.urandom(32)))
                target = Contact(node._identity.verify_key, *address)
                sock.sendto(engine.request(target, Ping(), 0.0)[1], address)
        await eventually(
            lambda: node._engine.dropped.total() + len(node._table.contacts()) > 0,
            what="the flood to arrive",
        )
        await node.bootstrap([(LOOPBACK, boot.port)])
        held = [c for c in node._table.contacts() if c.node_id != boot.node_id]
        assert len(held) <= DEFAULT_LIMITS.contacts_per_ip
        assert len({c.address for c in held}) == len(held)  # one id per socket at most
        assert node.peers()[0] == (LOOPBACK, boot.port)
        assert node._table.is_anchor(boot.node_id)
        # none of the flooders answered the ping back: none is listed (or saved)
        await eventually(lambda: node._engine.pending == 0, what="ping backs to time out")
        assert node.peers() == [(LOOPBACK, boot.port)]
    finally:
        for sock in socks:
            sock.close()


async def test_friends_protected_while_running_become_anchors(make: Factory) -> None:
    first = await make()
    node = await make([(LOOPBACK, first.port)])
    assert not node._table.is_anchor(first.node_id)
    node.protect([(LOOPBACK, first.port)])
    assert node._table.is_anchor(first.node_id)


async def test_a_spoofed_newcomer_is_handed_no_records(make: Factory) -> None:
    """A request from a fresh id at an address that never answers (a spoofed source): the
    node holding records pings it and sends nothing else; no STORE, no amplification."""
    node = await make(rpc_timeout=0.3)
    for i in range(50):
        node.storage.offer(*_held(i))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind((LOOPBACK, 0))
        raw.settimeout(2.0)
        engine = RpcEngine(Identity(os.urandom(32)))
        ping = engine.request(Contact(node._identity.verify_key, LOOPBACK, node.port), Ping(), 0.0)
        raw.sendto(ping[1], (LOOPBACK, node.port))
        await eventually(lambda: node._peer is not None and node._peer.handover_pending() == 0
                         and node._engine.pending == 0 and node._table.contacts() != [],
                         what="the hand-over to give up")
        raw.setblocking(False)
        received = []
        while True:
            try:
                received.append(raw.recv(wire.MAX_DATAGRAM_SIZE))
            except BlockingIOError:
                break
    kinds = [datagram[1] for datagram in received]
    assert kinds.count(wire.KIND_PONG) == 1
    assert set(kinds) <= {wire.KIND_PONG, wire.KIND_PING}
    assert kinds.count(wire.KIND_PING) <= PROVE_TRIES  # the hand-over's proof, retried once
    assert sum(map(len, received)) <= wire.AMPLIFICATION * len(ping[1])


def _held(i: int) -> tuple[bytes, bytes]:
    user = Identity(i.to_bytes(32, "big"))
    return dht_key(user.verify_key), make_record(user).encode()


async def test_stop_leaves_nothing_running(make: Factory) -> None:
    nodes = await network(make, 3)
    await nodes[1].publish(make_record(Identity(os.urandom(32))))
    node = nodes[1]
    await node.aclose()
    assert len(node._tasks) == 0
    with pytest.raises(RuntimeError):
        await node.lookup(os.urandom(32))
    node.stop()  # idempotent
    DhtNode().stop()  # never started
    await asyncio.sleep(0)


async def test_a_restart_makes_only_protected_saved_peers_anchors(make: Factory) -> None:
    """peers.json lists anchors first, then strangers that answered. A restarted node joins
    through all of them, but only the configured ones (bootstrap peers, friends) are anchors
    again: a stranger that once answered must not become permanent and exempt from the caps
    by having been saved."""
    friend, stranger = await make(), await make()
    node = await make([(LOOPBACK, friend.port), (LOOPBACK, stranger.port)],
                      protected_peers=[(LOOPBACK, friend.port)])
    saved, port = node.peers(), node.port
    assert saved[0] == (LOOPBACK, friend.port) and (LOOPBACK, stranger.port) in saved
    await node.aclose()
    again = await make(saved, port=port, identity=node._identity,
                       protected_peers=[(LOOPBACK, friend.port)])
    assert again._table.is_anchor(friend.node_id)
    assert stranger.node_id in again._table and not again._table.is_anchor(stranger.node_id)
    assert again.peers()[0] == (LOOPBACK, friend.port)
