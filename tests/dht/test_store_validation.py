"""Store and read validation at the RPC level, over real UDP sockets on 127.0.0.1.

The attacker is a peer with a key of its own (found by a probe of the target's address): it
can send any store request a stranger on the network could.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import AsyncIterator

import pytest

from crypto.keys import Identity
from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import FindValue, Ping, Pong, Reply, Request, Store, Stored, Value
from dht.kad.rpc import DropReason, RpcEngine
from dht.kad.udp import UdpEndpoint
from dht.node import DhtNode
from dht.records import MAX_RECORD_SIZE, RecordError, dht_key
from dht.storage import MAX_VALUE_SIZE, RecordStore
from tests.dht.support import LOOPBACK, FakeClock, NodeFactory, eventually, make_record

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([3]) * 32)
MALLORY = Identity(bytes([2]) * 32)
KEY = dht_key(ALICE.verify_key)


class Attacker:
    """A peer with its own key speaking the wire protocol to one target, without any of the
    checks an honest node makes on what it sends."""

    def __init__(self) -> None:
        self.endpoint = UdpEndpoint(RpcEngine(Identity(os.urandom(32))), self.answer)
        self.target: Contact | None = None

    @staticmethod
    def answer(sender: Contact, request: Request, now: float) -> Reply | None:
        return Pong() if isinstance(request, Ping) else None

    async def ask(self, request: Request) -> Reply:
        assert self.target is not None
        reply = await self.endpoint.query(self.target, request)
        assert reply is not None, "target did not answer"
        return reply

    async def store(self, key: bytes, value: bytes) -> bool:
        reply = await self.ask(Store(key, value))
        assert isinstance(reply, Stored)
        return reply.accepted

    async def find_value(self, key: bytes) -> bytes:
        """The value the target holds under ``key`` (empty: none)."""
        reply = await self.ask(FindValue(key))
        assert isinstance(reply, Value)
        return reply.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def target(make_node: NodeFactory, clock: FakeClock) -> DhtNode:
    return await make_node(clock=clock)


@pytest.fixture
async def attacker(target: DhtNode) -> AsyncIterator[Attacker]:
    attacker = Attacker()
    await attacker.endpoint.start(LOOPBACK, 0)
    try:
        attacker.target = await attacker.endpoint.probe((LOOPBACK, target.port))
        assert attacker.target is not None
        yield attacker
    finally:
        await attacker.endpoint.close()


async def test_valid_record_is_stored_and_served(
    target: DhtNode, attacker: Attacker, clock: FakeClock
) -> None:
    record = make_record(ALICE, now=clock.now)
    assert await attacker.store(KEY, record.encode()) is True
    assert target.storage.record(KEY) == record
    assert await attacker.find_value(KEY) == record.encode()


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
    assert await attacker.find_value(KEY) == b""  # neighbours instead of a value
    assert target.storage.record(KEY) is None
    assert len(target.storage) == 0


@pytest.mark.parametrize(
    "value",
    [b"not a record", b"", b"\x01" * MAX_RECORD_SIZE],
)
async def test_junk_is_refused(target: DhtNode, attacker: Attacker, value: bytes) -> None:
    """Keys that are not 20 bytes, values that are not bytes or too long cannot even be put
    on the wire (test_kad_wire: such datagrams are malformed); what can be sent is refused."""
    assert await attacker.store(KEY, value) is False
    assert len(target.storage) == 0


def test_oversized_value_is_refused_by_the_store() -> None:
    store = RecordStore(FakeClock())
    with pytest.raises(RecordError, match="exceeds"):
        store.offer(KEY, b"\x01" * (MAX_VALUE_SIZE + 1))


async def test_malformed_datagrams_and_requests_do_not_hurt_the_node(
    target: DhtNode, attacker: Attacker
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for junk in (b"", b"\x00", b"\x00" + os.urandom(40), b"\x01" * 30, os.urandom(100),
                     bytes([wire.VERSION, wire.KIND_STORE]) + os.urandom(200)):
            raw.sendto(junk, (LOOPBACK, target.port))
    assert isinstance(await attacker.ask(Ping()), Pong)  # still answering
    await eventually(lambda: target.peer_count() == 1, what="attacker in routing table")
    dropped = target._engine.dropped
    await eventually(lambda: dropped[DropReason.MALFORMED] == 6, what="junk dropped")
