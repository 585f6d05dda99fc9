"""Probes: how a node known only by its address (a bootstrap peer) becomes a contact. A Ping to
ANY_KEY is answered with a Pong MACed by whoever is there, which proves its key; the prober
learns that key, and the answerer learns nothing from the probe (it could be a replay)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from crypto.keys import Identity
from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import FindNode, Ping, Pong, Reply, Request
from dht.kad.rpc import ANY_KEY, Dropped, DropReason, IncomingReply, IncomingRequest, RpcEngine
from dht.kad.udp import UdpEndpoint

A_ADDR = ("192.0.2.1", 4000)
B_ADDR = ("192.0.2.2", 4000)
ALICE, BOB, MALLORY = (Identity(bytes([n]) * 32) for n in (1, 2, 3))
LOOPBACK = "127.0.0.1"


def probe_to(engine: RpcEngine, address: tuple[str, int]) -> bytes:
    return engine.request(Contact(ANY_KEY, *address), Ping(), 0.0)[1]


def test_a_probe_reveals_and_proves_the_answerers_key() -> None:
    alice, bob = RpcEngine(ALICE), RpcEngine(BOB)
    event = bob.receive(probe_to(alice, B_ADDR), A_ADDR, 0.0)
    assert isinstance(event, IncomingRequest) and event.to_anyone
    assert event.request == Ping()
    reply = alice.receive(bob.respond(event, Pong()), B_ADDR, 0.1)
    assert isinstance(reply, IncomingReply)
    assert reply.contact == Contact(BOB.verify_key, *B_ADDR)
    assert reply.reply == Pong()


def test_an_ordinary_request_is_not_to_anyone() -> None:
    alice, bob = RpcEngine(ALICE), RpcEngine(BOB)
    datagram = alice.request(Contact(BOB.verify_key, *B_ADDR), Ping(), 0.0)[1]
    event = bob.receive(datagram, A_ADDR, 0.0)
    assert isinstance(event, IncomingRequest) and not event.to_anyone


def test_a_probe_answered_from_another_address_or_forged_is_dropped() -> None:
    alice, bob, mallory = RpcEngine(ALICE), RpcEngine(BOB), RpcEngine(MALLORY)
    probe = probe_to(alice, B_ADDR)
    event = bob.receive(probe, A_ADDR, 0.0)
    assert isinstance(event, IncomingRequest)
    pong = bob.respond(event, Pong())
    elsewhere = alice.receive(pong, ("192.0.2.9", 4000), 0.1)
    assert isinstance(elsewhere, Dropped) and elsewhere.reason is DropReason.WRONG_SENDER
    # Mallory saw the probe and answers first from B's address, signing with her key over a
    # made-up request: the signature binds the reply to the probe's digest, so it fails.
    fake = IncomingRequest(event.request_id, event.contact, Ping(), b"\0" * 32, event.size, True)
    forged = alice.receive(mallory.respond(fake, Pong()), B_ADDR, 0.1)
    assert isinstance(forged, Dropped) and forged.reason is DropReason.BAD_SIGNATURE
    assert isinstance(alice.receive(pong, B_ADDR, 0.1), IncomingReply)  # the real one still counts


def test_a_probe_relabelled_as_a_ping_fails_its_tag() -> None:
    alice, bob = RpcEngine(ALICE), RpcEngine(BOB)
    probe = bytearray(probe_to(alice, B_ADDR))
    probe[1] = wire.KIND_PING  # now checked against bob's key: its zero tag is refused
    event = bob.receive(bytes(probe), A_ADDR, 0.0)
    assert isinstance(event, Dropped) and event.reason is DropReason.BAD_SIGNATURE


def test_only_a_ping_may_go_to_an_unknown_key() -> None:
    with pytest.raises(wire.EncodeError):
        RpcEngine(ALICE).request(Contact(ANY_KEY, *B_ADDR), FindNode(bytes(20)), 0.0)


async def test_probe_over_udp_learns_the_key_without_involving_the_handler() -> None:
    seen: list[Request] = []

    def handler(sender: Contact, request: Request, now: float) -> Reply:
        seen.append(request)
        return Pong()

    prober = UdpEndpoint(RpcEngine(ALICE, timeout=0.3), handler)
    target = UdpEndpoint(RpcEngine(BOB, timeout=0.3), handler)
    await prober.start(LOOPBACK, 0)
    await target.start(LOOPBACK, 0)
    try:
        found = await prober.probe(target.address)
        assert found == Contact(BOB.verify_key, *target.address)
        assert seen == []  # the answerer's node never saw it: nothing learned from a probe
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind((LOOPBACK, 0))
            assert await prober.probe(silent.getsockname()[:2]) is None
        assert prober.engine.pending == 0
        # a cancelled probe leaves nothing pending either
        task = asyncio.ensure_future(prober.probe((LOOPBACK, 9)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert prober.engine.pending == 0
    finally:
        await prober.close()
        await target.close()

