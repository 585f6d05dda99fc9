"""The routing-table and hand-over fixes, checked without a network."""

from __future__ import annotations

import os
import random
from typing import Any

from kademlia.node import Node
from kademlia.utils import digest

from crypto.keys import Identity
from dht.protocol import DhtProtocol
from dht.records import dht_key
from dht.storage import RecordStore
from dht.tasks import TaskSet
from tests.dht.support import LOOPBACK_LIMITS, FakeClock, eventually, make_record

ALICE = Identity(bytes([1]) * 32)
KEY = dht_key(ALICE.verify_key)


def _xor(node_id: bytes, value: int) -> bytes:
    return (int.from_bytes(node_id, "big") ^ value).to_bytes(20, "big")


def _protocol(own_id: bytes, ksize: int, clock: FakeClock) -> DhtProtocol:
    """A protocol without a socket; all its contacts are on 127.0.0.1, so caps are raised."""
    return DhtProtocol(
        Node(own_id),
        RecordStore(clock),
        ksize,
        tasks=TaskSet(),
        rpc_timeout=1.0,
        limits=LOOPBACK_LIMITS,
    )


async def test_find_neighbors_returns_the_exact_k_closest() -> None:
    rng = random.Random(1234)
    protocol = _protocol(rng.randbytes(20), 5, FakeClock())
    protocol.call_ping = _noop  # type: ignore[method-assign,assignment]  # full bucket pings head
    contacts = [Node(rng.randbytes(20), "127.0.0.1", 1000 + i) for i in range(300)]
    for contact in contacts:
        protocol.router.add_contact(contact)
    known = protocol.router.all_nodes()
    assert len(known) > 20
    for _ in range(50):
        target = Node(rng.randbytes(20))
        expected = sorted(known, key=target.distance_to)[:5]
        assert protocol.router.find_neighbors(target) == expected


async def _noop(*args: Any) -> None:
    return None


async def test_new_close_node_is_handed_the_record() -> None:
    """The library measured closeness to digest(key); arrange that this gives the wrong answer."""
    clock = FakeClock()
    own_id = _xor(KEY, 1 << 100)  # close to the key
    protocol = _protocol(own_id, 3, clock)
    record = make_record(ALICE, now=clock.now)
    protocol._store.offer(KEY, record.encode())
    # three known nodes next to digest(KEY), i.e. far from the key itself
    rehashed = digest(KEY)
    for i in range(1, 4):
        protocol.router.add_contact(Node(_xor(rehashed, i), "127.0.0.1", 2000 + i))
    sent: list[tuple[Any, bytes, bytes]] = []

    async def call_store(node: Any, key: bytes, value: bytes) -> tuple[bool, bool]:
        sent.append((node, key, value))
        return True, True

    protocol.call_store = call_store
    newcomer = Node(_xor(KEY, 1), "127.0.0.1", 3000)  # the closest node there is
    protocol.welcome_if_new(newcomer, verified=True)  # it answered one of our calls
    await eventually(lambda: len(sent) == 1, what="hand-over")
    assert sent == [(newcomer, KEY, record.encode())]
    assert newcomer in protocol.router.all_nodes()

    # a far newcomer is not given it, and neither is an already known node
    protocol.welcome_if_new(Node(_xor(rehashed, 4), "127.0.0.1", 3001), verified=True)
    protocol.welcome_if_new(newcomer, verified=True)
    await eventually(lambda: len(protocol._tasks) == 0, what="hand-over finished")
    assert len(sent) == 1


async def test_only_the_closest_holder_hands_over() -> None:
    clock = FakeClock()
    protocol = _protocol(_xor(KEY, 1 << 150), 3, clock)
    protocol._store.offer(KEY, make_record(ALICE, now=clock.now).encode())
    protocol.router.add_contact(Node(_xor(KEY, 1 << 20), "127.0.0.1", 2000))  # closer than us
    sent: list[Any] = []

    async def call_store(*args: Any) -> tuple[bool, bool]:
        sent.append(args)
        return True, True

    protocol.call_store = call_store
    protocol.welcome_if_new(Node(os.urandom(20), "127.0.0.1", 3000), verified=True)
    protocol.welcome_if_new(Node(_xor(KEY, 1), "127.0.0.1", 3001), verified=True)
    await eventually(lambda: len(protocol._tasks) == 0, what="hand-over finished")
    assert sent == []
