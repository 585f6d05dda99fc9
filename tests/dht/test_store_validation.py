"""Store and read validation at the RPC level, over real UDP sockets on 127.0.0.1.

The attacker is kademlia's own, unvalidating protocol: it can send any store request a
stranger on the network could.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.storage import ForgetfulStorage

from crypto.keys import Identity
from dht.node import DhtNode
from dht.records import RecordError, dht_key
from dht.storage import MAX_VALUE_SIZE, RecordStore
from tests.dht.support import LOOPBACK, FakeClock, NodeFactory, eventually, make_record

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([3]) * 32)
MALLORY = Identity(bytes([2]) * 32)
KEY = dht_key(ALICE.verify_key)


class Attacker:
    """A raw kademlia protocol endpoint that sends RPCs to one target."""

    def __init__(
        self, protocol: Any, transport: asyncio.DatagramTransport, target: tuple[str, int]
    ):
        self.protocol = protocol
        self.transport = transport
        self.target = target
        self.id = os.urandom(20)

    async def store(self, key: object, value: object) -> Any:
        ok, answer = await self.protocol.store(self.target, self.id, key, value)
        assert ok, "target did not answer"
        return answer

    async def find_value(self, key: bytes) -> Any:
        ok, answer = await self.protocol.find_value(self.target, self.id, key)
        assert ok, "target did not answer"
        return answer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def target(make_node: NodeFactory, clock: FakeClock) -> DhtNode:
    return await make_node(clock=clock)


@pytest.fixture
async def attacker(target: DhtNode) -> AsyncIterator[Attacker]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: KademliaProtocol(Node(os.urandom(20)), ForgetfulStorage(), 20),
        local_addr=(LOOPBACK, 0),
    )
    protocol._wait_timeout = 2.0
    try:
        yield Attacker(protocol, transport, (LOOPBACK, target.port))
    finally:
        for _, timeout in protocol._outstanding.values():
            timeout.cancel()
        transport.close()


async def test_valid_record_is_stored_and_served(
    target: DhtNode, attacker: Attacker, clock: FakeClock
) -> None:
    record = make_record(ALICE, now=clock.now)
    assert await attacker.store(KEY, record.encode()) is True
    assert target.storage.record(KEY) == record
    answer = await attacker.find_value(KEY)
    assert answer["value"] == record.encode()


async def test_forged_record_is_refused(
    target: DhtNode, attacker: Attacker, clock: FakeClock
) -> None:
    mallory = make_record(MALLORY, seq=99, now=clock.now)
    forged = dataclasses.replace(mallory, user_key=ALICE.verify_key)
    assert await attacker.store(KEY, forged.encode()) is False
    assert target.storage.record(KEY) is None


async def test_record_under_another_users_key_is_refused(
    target: DhtNode, attacker: Attacker, clock: FakeClock
) -> None:
    record = make_record(ALICE, now=clock.now)
    bob_key = dht_key(BOB.verify_key)
    assert await attacker.store(bob_key, record.encode()) is False
    assert target.storage.record(bob_key) is None


async def test_lower_or_conflicting_seq_is_refused(
    target: DhtNode, attacker: Attacker, clock: FakeClock
) -> None:
    newer = make_record(ALICE, seq=5, now=clock.now)
    assert await attacker.store(KEY, newer.encode()) is True
    assert await attacker.store(KEY, make_record(ALICE, seq=4, now=clock.now).encode()) is False
    same_seq = make_record(ALICE, seq=5, endpoints=[("elsewhere", 25)], now=clock.now)
    assert await attacker.store(KEY, same_seq.encode()) is False
    assert await attacker.store(KEY, newer.encode()) is True  # idempotent re-store
    assert target.storage.record(KEY) == newer
    newest = make_record(ALICE, seq=6, now=clock.now)
    assert await attacker.store(KEY, newest.encode()) is True
    assert target.storage.record(KEY) == newest


async def test_expired_record_is_refused(
    target: DhtNode, attacker: Attacker, clock: FakeClock
) -> None:
    expired = make_record(ALICE, expires=int(clock.now) - 1)
    assert await attacker.store(KEY, expired.encode()) is False
    assert target.storage.record(KEY) is None


async def test_stored_record_dies_at_expiry(
    target: DhtNode, attacker: Attacker, clock: FakeClock
) -> None:
    record = make_record(ALICE, expires=int(clock.now) + 60)
    assert await attacker.store(KEY, record.encode()) is True
    clock.now += 60
    answer = await attacker.find_value(KEY)
    assert isinstance(answer, list)  # neighbours instead of a value
    assert target.storage.record(KEY) is None
    assert len(target.storage) == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (KEY, b"not a record"),
        (KEY, 12345),
        (KEY, {"value": b"x"}),
        (KEY, None),
        (b"short", b"x"),
        ("a string key", b"x"),
        (KEY, b"\x01" * 8000),
    ],
)
async def test_junk_is_refused(
    target: DhtNode, attacker: Attacker, key: object, value: object
) -> None:
    assert await attacker.store(key, value) is False
    assert len(target.storage) == 0


def test_oversized_value_is_refused_by_the_store() -> None:
    store = RecordStore(FakeClock())
    with pytest.raises(RecordError, match="exceeds"):
        store.offer(KEY, b"\x01" * (MAX_VALUE_SIZE + 1))


async def test_malformed_datagrams_and_requests_do_not_hurt_the_node(
    target: DhtNode, attacker: Attacker
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for junk in (b"", b"\x00", b"\x00" + os.urandom(40), b"\x01" * 30, os.urandom(100)):
            raw.sendto(junk, (LOOPBACK, target.port))
    # wrong argument counts and types for real RPC names: no answer, or an empty one
    bad_calls = [
        attacker.protocol.store(attacker.target, attacker.id),
        attacker.protocol.find_node(attacker.target, b"bad id", 7),
        attacker.protocol.find_value(attacker.target, attacker.id, None),
        attacker.protocol.no_such_rpc(attacker.target),
    ]
    ok, node_id = await attacker.protocol.ping(attacker.target, attacker.id)
    assert ok and node_id == target.node_id
    await eventually(lambda: target.peer_count() == 1, what="attacker in routing table")
    assert await bad_calls[2] == (True, [])
    for call in bad_calls:
        call.cancel()
