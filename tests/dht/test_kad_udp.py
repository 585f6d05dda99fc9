"""The asyncio UDP adapter on real loopback sockets: queries and answers, forged replies ignored,
floods rate-limited, garbage harmless, and nothing left running after close."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from crypto.keys import Identity
from dht.kad import wire
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
from dht.kad.rpc import DropReason, RpcEngine
from dht.kad.udp import UdpEndpoint
from dht.limits import DhtLimits
from tests.dht.support import eventually

LOOPBACK = "127.0.0.1"
ALICE, BOB, MALLORY = (Identity(os.urandom(32)) for _ in range(3))


def to_alice(identity: Identity, request_id: bytes, digest: bytes, reply: Reply) -> bytes:
    """``identity``'s answer to Alice, MACed with the key it shares with her."""
    return wire.encode_reply(wire.pair_keys(identity), ALICE.verify_key, request_id, digest, reply)
Address = tuple[str, int]


class Answers:
    """A handler that answers every request and remembers who asked what."""

    def __init__(self) -> None:
        self.seen: list[tuple[Contact, Request]] = []

    def __call__(self, sender: Contact, request: Request, now: float) -> Reply:
        self.seen.append((sender, request))
        if isinstance(request, Ping):
            return Pong()
        if isinstance(request, FindNode):
            return Nodes((sender,))
        if isinstance(request, FindValue):
            return Value(b"the record for " + request.key, (sender,))
        return Stored(True)


class RawPeer(asyncio.DatagramProtocol):
    """A plain socket a test speaks through, to send what no honest endpoint would."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait((data, (str(addr[0]), int(addr[1]))))

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    def send(self, data: bytes, address: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, address)

    async def next(self) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.received.get(), 5)


EndpointFactory = Callable[..., Awaitable[UdpEndpoint]]
RawFactory = Callable[..., Awaitable[RawPeer]]


@pytest.fixture
async def endpoint() -> AsyncIterator[EndpointFactory]:
    started: list[UdpEndpoint] = []

    async def make(
        identity: Identity, handler: Any = None, host: str = LOOPBACK, **kwargs: Any
    ) -> UdpEndpoint:
        udp = UdpEndpoint(RpcEngine(identity, **kwargs), handler or Answers())
        started.append(udp)
        await udp.start(host, 0)
        return udp

    try:
        yield make
    finally:
        for udp in started:
            await udp.close()


@pytest.fixture
async def raw() -> AsyncIterator[RawFactory]:
    peers: list[RawPeer] = []

    async def make(host: str = LOOPBACK) -> RawPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=(host, 0))
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            assert peer.transport is not None
            peer.transport.close()


def at(udp: UdpEndpoint, identity: Identity) -> Contact:
    return Contact(identity.verify_key, *udp.address)


async def exchange_all_four(endpoint: EndpointFactory, host: str) -> None:
    answers = Answers()
    alice = await endpoint(ALICE, host=host)
    bob = await endpoint(BOB, answers, host=host)
    bob_contact = at(bob, BOB)
    assert await alice.query(bob_contact, Ping()) == Pong()
    assert await alice.query(bob_contact, FindNode(b"t" * 20)) == Nodes((at(alice, ALICE),))
    assert await alice.query(bob_contact, FindValue(b"k" * 20)) == Value(
        b"the record for " + b"k" * 20, (at(alice, ALICE),)
    )
    assert await alice.query(bob_contact, Store(b"k" * 20, b"v")) == Stored(True)
    # Bob knew Alice by her key at the address she sent from, for each request.
    assert [sender for sender, _ in answers.seen] == [at(alice, ALICE)] * 4
    assert alice.engine.pending == 0


async def test_two_endpoints_exchange_all_four_requests(endpoint: EndpointFactory) -> None:
    await exchange_all_four(endpoint, LOOPBACK)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_the_same_over_ipv6(endpoint: EndpointFactory) -> None:
    await exchange_all_four(endpoint, "::1")


async def forge_replies(
    alice: UdpEndpoint, bob_socket: RawPeer, elsewhere: RawPeer
) -> tuple[bytes, bytes]:
    """Receive Alice's ping at Bob's address and answer it three wrong ways; returns the
    request id and the request datagram."""
    datagram, alice_address = await bob_socket.next()
    request_id = wire.decode(datagram).request_id
    digest = wire.digest(datagram)
    # MACed with the wrong key, from the right address.
    bob_socket.send(to_alice(MALLORY, request_id, digest, Pong()), alice_address)
    # MACed with the right key for another request id.
    bob_socket.send(to_alice(BOB, b"\0" * 8, digest, Pong()), alice_address)
    # Right key and id, from another source address.
    elsewhere.send(to_alice(BOB, request_id, digest, Pong()), alice_address)
    await eventually(lambda: sum(alice.engine.dropped.values()) == 3, what="forgeries dropped")
    assert alice.engine.dropped == {DropReason.WRONG_SENDER: 2, DropReason.UNKNOWN_REQUEST: 1}
    return request_id, datagram


async def test_forged_replies_are_ignored_and_the_real_one_is_taken(
    endpoint: EndpointFactory, raw: RawFactory
) -> None:
    alice = await endpoint(ALICE, timeout=30.0)
    bob_socket, elsewhere = await raw(), await raw()
    query = asyncio.create_task(alice.query(Contact(BOB.verify_key, *bob_socket.address), Ping()))
    request_id, datagram = await forge_replies(alice, bob_socket, elsewhere)
    assert not query.done()
    real = to_alice(BOB, request_id, wire.digest(datagram), Pong())
    bob_socket.send(real, alice.address)
    assert await asyncio.wait_for(query, 5) == Pong()


async def test_with_only_forged_replies_the_query_times_out_cleanly(
    endpoint: EndpointFactory, raw: RawFactory
) -> None:
    alice = await endpoint(ALICE, timeout=0.5)
    bob_socket, elsewhere = await raw(), await raw()
    query = asyncio.create_task(alice.query(Contact(BOB.verify_key, *bob_socket.address), Ping()))
    await forge_replies(alice, bob_socket, elsewhere)
    assert await asyncio.wait_for(query, 5) is None
    assert alice.engine.pending == 0
    assert alice.engine.next_deadline() is None


async def test_a_flood_from_one_ip_is_rate_limited(
    endpoint: EndpointFactory, raw: RawFactory
) -> None:
    answers = Answers()
    limits = DhtLimits(requests_per_ip_second=0.001, requests_per_ip_burst=5)
    bob = await endpoint(BOB, answers, limits=limits)
    flooder = await raw()
    signer = RpcEngine(MALLORY, max_pending=100)
    for _ in range(40):
        flooder.send(signer.request(at(bob, BOB), Ping(), 0.0)[1], bob.address)
    await eventually(lambda: bob.engine.dropped[DropReason.RATE_LIMITED] == 35, what="flood")
    assert len(answers.seen) == 5
    for _ in range(5):
        data, _ = await flooder.next()
        assert wire.decode(data).message == Pong()
    assert flooder.received.empty()


async def test_garbage_never_raises_and_the_endpoint_keeps_answering(
    endpoint: EndpointFactory, raw: RawFactory
) -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    alice, bob = await endpoint(ALICE), await endpoint(BOB)
    sender = await raw()
    valid = RpcEngine(MALLORY).request(at(bob, BOB), FindNode(b"x" * 20), 0.0)[1]
    # (asyncio does not send empty datagrams; the engine's tests cover b"".)
    garbage = [b"\0", os.urandom(105), os.urandom(2000), valid[:-1], valid + b"\0"]
    garbage += [bytes([wire.VERSION, kind]) + os.urandom(300) for kind in range(256)]
    # In batches: a loopback socket's receive buffer drops what the loop has not read yet.
    for start in range(0, len(garbage), 16):
        for data in garbage[start : start + 16]:
            sender.send(data, bob.address)
        sent = min(start + 16, len(garbage))
        await eventually(
            lambda sent=sent: sum(bob.engine.dropped.values()) == sent,  # type: ignore[misc]
            what="garbage dropped",
        )
    # Reply kinds are matched on their header first: an unknown id is dropped unparsed.
    assert set(bob.engine.dropped) == {DropReason.MALFORMED, DropReason.UNKNOWN_REQUEST}
    assert await alice.query(at(bob, BOB), Ping()) == Pong()
    assert errors == []


async def test_close_ends_waiting_queries_and_leaves_nothing_running(
    endpoint: EndpointFactory, raw: RawFactory
) -> None:
    alice = await endpoint(ALICE, timeout=30.0)
    silent = await raw()
    query = asyncio.create_task(alice.query(Contact(BOB.verify_key, *silent.address), Ping()))
    await silent.next()  # the request went out; nobody answers
    assert alice.engine.next_deadline() is not None
    await alice.close()
    assert await asyncio.wait_for(query, 5) is None
    assert alice._timer is None and not alice._waiting
    assert await alice.query(Contact(BOB.verify_key, *silent.address), Ping()) is None


async def test_a_cancelled_query_is_forgotten(endpoint: EndpointFactory, raw: RawFactory) -> None:
    alice = await endpoint(ALICE, timeout=30.0)
    silent = await raw()
    query = asyncio.create_task(alice.query(Contact(BOB.verify_key, *silent.address), Ping()))
    await silent.next()
    query.cancel()
    with pytest.raises(asyncio.CancelledError):
        await query
    assert alice.engine.pending == 0 and not alice._waiting
