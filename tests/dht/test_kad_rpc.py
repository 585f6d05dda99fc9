"""The sans-IO RPC engine: which datagrams become requests and replies, and which are dropped
(and why), with time passed in and no sockets."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from dht.kad.rpc import (
    Dropped,
    DropReason,
    IncomingReply,
    IncomingRequest,
    RpcBusy,
    RpcEngine,
)
from dht.limits import DhtLimits

A_ADDR = ("192.0.2.1", 4000)
B_ADDR = ("192.0.2.2", 4000)
ALICE, BOB, MALLORY = (Identity(bytes([n]) * 32) for n in (1, 2, 3))


def to_alice(identity: Identity, request_id: bytes, digest: bytes, reply: Reply) -> bytes:
    """``identity``'s answer to Alice, MACed with the key it shares with her."""
    return wire.encode_reply(wire.pair_keys(identity), ALICE.verify_key, request_id, digest, reply)


def contact(identity: Identity, address: tuple[str, int]) -> Contact:
    return Contact(identity.verify_key, *address)


def engines(timeout: float = 1.0) -> tuple[RpcEngine, RpcEngine]:
    return RpcEngine(ALICE, timeout=timeout), RpcEngine(BOB, timeout=timeout)


def incoming(event: object) -> IncomingRequest:
    assert isinstance(event, IncomingRequest), event
    return event


def dropped(event: object, reason: DropReason) -> None:
    assert isinstance(event, Dropped), event
    assert event.reason is reason


ANSWERS: list[tuple[Request, Reply]] = [
    (Ping(), Pong()),
    (FindNode(b"t" * 20), Nodes((contact(MALLORY, ("2001:db8::3", 9)),))),
    (FindValue(b"k" * 20), Value(b"record", (contact(MALLORY, ("198.51.100.3", 9)),))),
    (Store(b"k" * 20, b"record"), Stored(True)),
]


@pytest.mark.parametrize(("request_", "reply"), ANSWERS)
def test_each_request_gets_its_authenticated_reply(request_: Request, reply: Reply) -> None:
    alice, bob = engines()
    request_id, datagram = alice.request(contact(BOB, B_ADDR), request_, 0.0)
    asked = incoming(bob.receive(datagram, A_ADDR, 0.0))
    assert asked.request == request_ and asked.request_id == request_id
    # The requester is known by its key at the address the datagram came from.
    assert asked.contact == contact(ALICE, A_ADDR)
    answered = alice.receive(bob.respond(asked, reply), B_ADDR, 0.1)
    assert answered == IncomingReply(request_id, contact(BOB, B_ADDR), reply)
    assert alice.pending == 0


def test_a_reply_from_another_address_is_dropped_and_the_real_one_still_counts() -> None:
    alice, bob = engines()
    _, datagram = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    answer = bob.respond(incoming(bob.receive(datagram, A_ADDR, 0.0)), Pong())
    dropped(alice.receive(answer, ("192.0.2.99", 4000), 0.0), DropReason.WRONG_SENDER)
    dropped(alice.receive(answer, ("192.0.2.2", 4001), 0.0), DropReason.WRONG_SENDER)
    assert isinstance(alice.receive(answer, B_ADDR, 0.0), IncomingReply)
    # Answered once: the same reply again no longer matches anything.
    dropped(alice.receive(answer, B_ADDR, 0.0), DropReason.UNKNOWN_REQUEST)


def test_a_reply_made_with_another_key_is_dropped() -> None:
    alice, bob = engines()
    _, datagram = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    # Mallory saw the request and answers it from Bob's address with her own key ...
    packet = wire.decode(datagram)
    forged = to_alice(MALLORY, packet.request_id, wire.digest(datagram), Pong())
    dropped(alice.receive(forged, B_ADDR, 0.0), DropReason.WRONG_SENDER)
    # ... or claims Bob's key in the header: the tag gives her away.
    claimed = forged[:10] + BOB.verify_key + forged[42:]
    dropped(alice.receive(claimed, B_ADDR, 0.0), DropReason.BAD_SIGNATURE)
    assert alice.pending == 1
    # Bob's own answer still gets through.
    answer = bob.respond(incoming(bob.receive(datagram, A_ADDR, 0.0)), Pong())
    assert isinstance(alice.receive(answer, B_ADDR, 0.0), IncomingReply)


def test_a_reply_must_answer_our_exact_request() -> None:
    alice = RpcEngine(ALICE)
    first_id, first = alice.request(contact(BOB, B_ADDR), FindNode(b"1" * 20), 0.0)
    second_id, _ = alice.request(contact(BOB, B_ADDR), FindNode(b"2" * 20), 0.0)
    # Bob's authenticated answer to the first question, relabelled as the answer to the second.
    relabelled = to_alice(BOB, second_id, wire.digest(first), Nodes(()))
    dropped(alice.receive(relabelled, B_ADDR, 0.0), DropReason.BAD_SIGNATURE)
    unknown = to_alice(BOB, b"\0" * 8, wire.digest(first), Nodes(()))
    dropped(alice.receive(unknown, B_ADDR, 0.0), DropReason.UNKNOWN_REQUEST)
    wrong_kind = to_alice(BOB, first_id, wire.digest(first), Pong())
    dropped(alice.receive(wrong_kind, B_ADDR, 0.0), DropReason.WRONG_KIND)
    assert alice.pending == 2


def test_a_request_addressed_to_another_node_is_dropped() -> None:
    alice, bob = engines()
    _, datagram = alice.request(contact(MALLORY, B_ADDR), Ping(), 0.0)
    dropped(bob.receive(datagram, A_ADDR, 0.0), DropReason.BAD_SIGNATURE)


def test_a_replayed_request_is_dropped_from_any_address() -> None:
    alice, bob = engines()
    _, datagram = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    incoming(bob.receive(datagram, A_ADDR, 0.0))
    dropped(bob.receive(datagram, A_ADDR, 0.0), DropReason.REPLAYED)
    # A replayer cannot place Alice's key at its own address.
    dropped(bob.receive(datagram, ("203.0.113.5", 666), 0.0), DropReason.REPLAYED)


def test_our_own_requests_coming_back_are_dropped() -> None:
    alice = RpcEngine(ALICE)
    _, datagram = alice.request(contact(ALICE, A_ADDR), Ping(), 0.0)
    dropped(alice.receive(datagram, A_ADDR, 0.0), DropReason.FROM_SELF)


def test_requests_are_rate_limited_per_ip_before_any_key_is_derived_or_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = DhtLimits(requests_per_ip_second=1.0, requests_per_ip_burst=3)
    alice, bob = RpcEngine(ALICE), RpcEngine(BOB, limits=limits)
    checks = 0
    real = wire.verify_request

    def counting(packet: wire.Packet, key: bytes | None, own_key: bytes) -> bool:
        nonlocal checks
        checks += 1
        return real(packet, key, own_key)

    monkeypatch.setattr(wire, "verify_request", counting)
    # A flood of 100 requests with bad tags from one IP (several ports).
    bad = [alice.request(contact(MALLORY, B_ADDR), Ping(), 0.0)[1] for _ in range(100)]
    reasons = [bob.receive(d, ("198.51.100.7", 1000 + n), 0.0) for n, d in enumerate(bad)]
    assert [r.reason for r in reasons if isinstance(r, Dropped)].count(
        DropReason.RATE_LIMITED
    ) == 97
    assert checks == 3
    assert bob._pairs.derivations == 3  # and the key, never kept as no tag verified, 3 times
    assert len(bob._pairs) == 0
    # Another IP is not affected, and the flooding IP gets one token back per second.
    good = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)[1]
    incoming(bob.receive(good, A_ADDR, 0.0))
    again = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)[1]
    dropped(bob.receive(again, ("198.51.100.7", 1), 0.5), DropReason.RATE_LIMITED)
    incoming(bob.receive(again, ("198.51.100.7", 1), 1.5))


def test_a_spoofer_with_many_source_addresses_meets_the_overall_rate() -> None:
    limits = DhtLimits(requests_per_ip_second=1.0, requests_per_ip_burst=3)
    alice = RpcEngine(ALICE)
    bob = RpcEngine(BOB, limits=limits, requests_per_second=10.0)
    events = [
        bob.receive(alice.request(contact(BOB, B_ADDR), Ping(), 0.0)[1], (f"10.1.{n}.1", 1), 0.0)
        for n in range(100)
    ]
    assert sum(isinstance(e, IncomingRequest) for e in events) == 20  # the overall burst
    assert bob.dropped == {DropReason.OVERLOADED: 80}
    later = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)[1]
    incoming(bob.receive(later, ("10.2.0.1", 1), 0.1))  # one token back after 0.1 s


def test_an_ipv6_slash_64_is_one_source_and_tracked_sources_are_bounded() -> None:
    limits = DhtLimits(requests_per_ip_second=0.001, requests_per_ip_burst=2, tracked_ips=8)
    alice, bob = RpcEngine(ALICE), RpcEngine(BOB, limits=limits)

    def ping() -> bytes:
        return alice.request(contact(BOB, B_ADDR), Ping(), 0.0)[1]

    events = [bob.receive(ping(), (f"2001:db8::{n:x}", 5), 0.0) for n in range(1, 6)]
    assert [isinstance(e, IncomingRequest) for e in events] == [True, True, False, False, False]
    for n in range(50):
        bob.receive(ping(), (f"10.0.{n}.1", 5), 0.0)
    assert len(bob._buckets) == 8


def test_timeouts_deadlines_and_cancel() -> None:
    alice, bob = engines(timeout=2.0)
    assert alice.next_deadline() is None
    first, datagram = alice.request(contact(BOB, B_ADDR), Ping(), 10.0)
    second, _ = alice.request(contact(BOB, B_ADDR), Ping(), 11.0)
    third, _ = alice.request(contact(BOB, B_ADDR), Ping(), 10.5)  # a clock that stepped back
    assert alice.next_deadline() == 12.0
    assert alice.expire(11.9) == []
    assert alice.expire(12.0) == [first]
    assert alice.next_deadline() == 13.0
    alice.cancel(second)
    assert alice.expire(13.0) == [third]
    assert alice.next_deadline() is None
    # A reply after its request timed out is dropped, not delivered late.
    late = bob.respond(incoming(bob.receive(datagram, A_ADDR, 13.0)), Pong())
    dropped(alice.receive(late, B_ADDR, 13.0), DropReason.UNKNOWN_REQUEST)


def test_a_contact_must_be_an_ip_literal() -> None:
    with pytest.raises(wire.EncodeError, match="IP address literal"):
        RpcEngine(ALICE).request(Contact(BOB.verify_key, "localhost", 1), Ping(), 0.0)


def test_the_pending_table_is_bounded() -> None:
    alice = RpcEngine(ALICE, max_pending=2)
    alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    with pytest.raises(RpcBusy):
        alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    alice.expire(5.0)
    alice.request(contact(BOB, B_ADDR), Ping(), 5.0)


def test_request_ids_are_fresh_even_when_the_random_source_repeats() -> None:
    values = iter([b"\1" * 8, b"\1" * 8, b"\2" * 8])
    alice = RpcEngine(ALICE, random_bytes=lambda n: next(values))
    first, _ = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    second, _ = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    assert (first, second) == (b"\1" * 8, b"\2" * 8)


def test_a_reply_of_the_wrong_kind_is_refused_when_answering() -> None:
    alice, bob = engines()
    _, datagram = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    asked = incoming(bob.receive(datagram, A_ADDR, 0.0))
    with pytest.raises(wire.EncodeError, match="does not answer"):
        bob.respond(asked, Nodes(()))
    # The amplification bound holds even for a request recorded as smaller than it was.
    with pytest.raises(wire.EncodeError, match="amplification"):
        bob.respond(replace(asked, size=10), Pong())


def test_an_ipv4_mapped_source_is_the_same_peer() -> None:
    alice, bob = engines()
    _, datagram = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    asked = incoming(bob.receive(datagram, ("::ffff:192.0.2.1", 4000), 0.0))
    assert asked.contact == contact(ALICE, A_ADDR)
    answered = alice.receive(bob.respond(asked, Pong()), ("::ffff:192.0.2.2", 4000), 0.0)
    assert isinstance(answered, IncomingReply)


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.sampled_from([A_ADDR, ("::1", 1), ("not an ip", 0)]))
def test_any_bytes_from_anywhere_are_an_event_never_an_exception(
    data: bytes, address: tuple[str, int]
) -> None:
    alice = RpcEngine(ALICE)
    alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    event = alice.receive(data, address, 0.0)
    assert isinstance(event, Dropped)
    assert sum(alice.dropped.values()) == 1


def test_unsolicited_replies_are_dropped_before_their_body_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice = RpcEngine(ALICE)
    _, datagram = alice.request(contact(BOB, B_ADDR), Ping(), 0.0)
    parsed = 0
    real = wire.decode

    def counting(data: bytes) -> wire.Packet:
        nonlocal parsed
        parsed += 1
        return real(data)

    monkeypatch.setattr(wire, "decode", counting)
    full = tuple(contact(MALLORY, ("2001:db8::1", n)) for n in range(1, 21))
    unsolicited = to_alice(BOB, b"\7" * 8, wire.digest(datagram), Nodes(full))
    for _ in range(50):
        dropped(alice.receive(unsolicited, B_ADDR, 0.0), DropReason.UNKNOWN_REQUEST)
    assert parsed == 0


def test_strangers_keys_are_derived_at_a_bounded_rate_and_known_peers_pass_meanwhile() -> None:
    """A flood of valid requests from fresh keys, each from its own IP (within every per-IP
    bucket): deriving their keys is the expensive step, charged to its own bucket, while a
    peer whose key is cached is not held back; only keys whose tag verified are kept."""
    limits = DhtLimits(requests_per_ip_second=1.0, requests_per_ip_burst=3)
    bob = RpcEngine(BOB, limits=limits, derivations_per_second=10.0, pair_cache=32)
    alice = RpcEngine(ALICE)
    incoming(bob.receive(alice.request(contact(BOB, B_ADDR), Ping(), 0.0)[1], A_ADDR, 0.0))
    strangers = [RpcEngine(Identity(n.to_bytes(32, "big"))) for n in range(100, 160)]
    events = [s.request(contact(BOB, B_ADDR), Ping(), 0.0)[1] for s in strangers]
    results = [bob.receive(d, (f"10.3.{n}.1", 1), 0.0) for n, d in enumerate(events)]
    assert sum(isinstance(r, IncomingRequest) for r in results) == 19  # the burst, less Alice's
    assert bob.dropped == {DropReason.UNKNOWN_KEY: 41}
    assert bob._pairs.derivations == 20 and len(bob._pairs) == 20
    # Alice, known before the flood, still gets through (no derivation token left).
    incoming(bob.receive(alice.request(contact(BOB, B_ADDR), Ping(), 0.0)[1], A_ADDR, 0.0))
    assert bob._pairs.derivations == 20
    # A forged tag from a stranger costs a derivation but is not kept.
    forged = bytearray(strangers[-1].request(contact(BOB, B_ADDR), Ping(), 1.0)[1])
    forged[-1] ^= 1
    dropped(bob.receive(bytes(forged), ("10.4.0.1", 1), 1.0), DropReason.BAD_SIGNATURE)
    assert bob._pairs.derivations == 21 and len(bob._pairs) == 20


def test_a_probe_is_answered_but_its_senders_key_is_not_kept() -> None:
    alice, bob = engines()
    probe = alice.request(Contact(wire.ANY_KEY, *B_ADDR), Ping(), 0.0)[1]
    event = incoming(bob.receive(probe, A_ADDR, 0.0))
    assert event.to_anyone and len(bob._pairs) == 0
    pong = bob.respond(event, Pong())
    reply = alice.receive(pong, B_ADDR, 0.0)
    assert isinstance(reply, IncomingReply) and reply.contact == contact(BOB, B_ADDR)
    # The probe again (a replay, or a retry): answered again, learned from never.
    incoming(bob.receive(probe, A_ADDR, 0.0))
    assert len(bob._pairs) == 0
