"""The DHT datagram codec: exact round trips, strict decoding, MACs that bind (to both keys, the
direction and the request answered), and sizes that leave no amplification."""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import (
    MAX_REPLY_CONTACTS,
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
from dht.records import MAX_RECORD_SIZE

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))
CAROL = Identity(bytes(range(2, 34)))
MALLORY = Identity(bytes(range(3, 35)))
A_PAIRS, B_PAIRS = wire.pair_keys(ALICE), wire.pair_keys(BOB)
AB = A_PAIRS.shared(BOB.verify_key)
"""The key Alice and Bob share: the same whoever derives it."""
RID = b"\x01\x02\x03\x04\x05\x06\x07\x08"
MAX_IPV6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def _unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """IPv4-mapped addresses are sent as IPv4, so they do not round-trip as themselves, and
    IPv4-compatible ones (::a.b.c.d, deprecated) are refused."""
    assert isinstance(address, ipaddress.IPv6Address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if "." in socket.inet_ntop(socket.AF_INET6, address.packed):
        return "2001:db8::1"
    return str(address)


ids = st.binary(min_size=20, max_size=20)
values = st.binary(max_size=MAX_RECORD_SIZE)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(_unmapped),
)
contacts = st.builds(Contact, st.binary(min_size=32, max_size=32), hosts, st.integers(1, 65535))
contact_lists = st.lists(contacts, max_size=MAX_REPLY_CONTACTS).map(tuple)
requests: st.SearchStrategy[Request] = st.one_of(
    st.just(Ping()),
    st.builds(FindNode, ids),
    st.builds(FindValue, ids),
    st.builds(Store, ids, values),
)
replies: st.SearchStrategy[Reply] = st.one_of(
    st.just(Pong()),
    st.builds(Nodes, contact_lists),
    st.builds(Value, values, contact_lists),
    st.builds(Stored, st.booleans()),
)


def request_datagram(request: Request) -> bytes:
    return wire.encode_request(A_PAIRS, BOB.verify_key, RID, request)


def reply_datagram(reply: Reply, request: bytes = b"the request") -> bytes:
    return wire.encode_reply(B_PAIRS, ALICE.verify_key, RID, wire.digest(request), reply)


def bob_accepts(datagram: bytes) -> bool:
    """Bob checks a request to him, with the key he shares with the sender it names."""
    packet = wire.decode(datagram)
    return wire.verify_request(packet, B_PAIRS.shared(packet.sender_key), BOB.verify_key)


def alice_accepts(datagram: bytes, request: bytes = b"the request") -> bool:
    """Alice checks a reply to her request, with the key she shares with the sender it names."""
    packet = wire.decode(datagram)
    key = A_PAIRS.shared(packet.sender_key)
    return wire.verify_reply(packet, key, ALICE.verify_key, wire.digest(request))


def big_contact(n: int) -> Contact:
    return Contact(bytes([n]) * 32, MAX_IPV6, 65535)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_requests_round_trip_and_verify(request: Request) -> None:
    datagram = request_datagram(request)
    packet = wire.decode(datagram)
    assert packet.message == request
    assert packet.is_request and packet.request_id == RID
    assert packet.sender_key == ALICE.verify_key
    assert wire.verify_request(packet, AB, BOB.verify_key)
    assert bob_accepts(datagram)
    # Addressed to Bob: the same datagram is worthless to anyone else.
    carol = wire.pair_keys(CAROL).shared(ALICE.verify_key)
    assert not wire.verify_request(packet, carol, CAROL.verify_key)
    assert not wire.verify_request(packet, AB, CAROL.verify_key)
    # ... and as a request to Alice herself (reflected), with the very key it was made with.
    assert not wire.verify_request(packet, AB, ALICE.verify_key)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(replies)
def test_replies_round_trip_and_verify(reply: Reply) -> None:
    datagram = reply_datagram(reply, b"request one")
    packet = wire.decode(datagram)
    assert packet.message == reply
    assert not packet.is_request
    assert packet.sender_key == BOB.verify_key
    assert wire.verify_reply(packet, AB, ALICE.verify_key, wire.digest(b"request one"))
    # Bound to the request it answers: it does not verify as the answer to another one.
    assert not wire.verify_reply(packet, AB, ALICE.verify_key, wire.digest(b"request two"))
    # ... nor as an answer to Bob (reflected back to him).
    assert not wire.verify_reply(packet, AB, BOB.verify_key, wire.digest(b"request one"))


@settings(max_examples=300)
@given(st.binary(max_size=2 * wire.FIND_NODE_SIZE))
def test_random_bytes_are_a_clean_decode_error(data: bytes) -> None:
    with contextlib.suppress(wire.DecodeError):
        wire.decode(data)


KINDS = [
    wire.KIND_PING,
    wire.KIND_FIND_NODE,
    wire.KIND_FIND_VALUE,
    wire.KIND_STORE,
    wire.KIND_PONG,
    wire.KIND_NODES,
    wire.KIND_VALUE,
    wire.KIND_STORED,
    0x00,
    0xFF,
]


@settings(max_examples=500)
@given(st.sampled_from(KINDS), st.binary(max_size=3000))
def test_random_bodies_behind_a_valid_header_are_clean(kind: int, body: bytes) -> None:
    """Random bodies reach the body parsers (a random header rarely would)."""
    try:
        packet = wire.decode(bytes([wire.VERSION, kind]) + RID + ALICE.verify_key + body)
    except wire.DecodeError:
        return
    assert packet.kind == kind


def _mutations() -> st.SearchStrategy[tuple[bytes, int, int, str]]:
    samples = [
        request_datagram(Ping()),
        request_datagram(FindNode(b"t" * 20)),
        request_datagram(FindValue(b"k" * 20)),
        request_datagram(Store(b"k" * 20, b"a value")),
        reply_datagram(Pong()),
        reply_datagram(Nodes((big_contact(1), Contact(b"\2" * 32, "10.0.0.2", 4000)))),
        reply_datagram(Value(b"record", (big_contact(3),))),
        reply_datagram(Stored(True)),
    ]
    return st.tuples(
        st.sampled_from(samples),
        st.integers(0, 10_000),
        st.integers(0, 255),
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]),
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_a_mutated_datagram_is_rejected_cleanly(case: tuple[bytes, int, int, str]) -> None:
    """Any change is either a DecodeError or fails verification; nothing else is raised."""
    original, position, byte, how = case
    at = position % len(original)
    if how == "flip":
        mutated = original[:at] + bytes([original[at] ^ (byte or 1)]) + original[at + 1 :]
    elif how == "set":
        mutated = original[:at] + bytes([byte]) + original[at + 1 :]
    elif how == "insert":
        mutated = original[:at] + bytes([byte]) + original[at:]
    elif how == "delete":
        mutated = original[:at] + original[at + 1 :]
    elif how == "truncate":
        mutated = original[:at]
    else:
        mutated = original + bytes([byte])
    if mutated == original:
        return
    try:
        packet = wire.decode(mutated)
    except wire.DecodeError:
        return
    if packet.is_request:
        assert not wire.verify_request(packet, AB, BOB.verify_key)
    else:
        assert not wire.verify_reply(packet, AB, ALICE.verify_key, wire.digest(b"the request"))


def test_a_reply_made_with_another_key_does_not_verify() -> None:
    """Mallory claims Bob's key in the header, but can only MAC with keys she shares."""
    honest = reply_datagram(Pong())
    assert alice_accepts(honest)
    mallory = wire.pair_keys(MALLORY)
    forged = wire.encode_reply(mallory, ALICE.verify_key, RID, wire.digest(b"the request"), Pong())
    claimed = forged[:10] + BOB.verify_key + forged[42:]
    assert alice_accepts(forged)  # as Mallory's own answer: fine, and not Bob's
    assert not alice_accepts(claimed)
    # The keys she can compute are not the one Alice and Bob share.
    assert AB not in (mallory.shared(ALICE.verify_key), mallory.shared(BOB.verify_key))


def test_a_request_claiming_anothers_key_does_not_verify() -> None:
    """The forged-key case for requests: Mallory's request relabelled with Alice's key."""
    mallory = wire.pair_keys(MALLORY)
    own = wire.encode_request(mallory, BOB.verify_key, RID, FindNode(bytes(20)))
    assert bob_accepts(own)
    claimed = own[:10] + ALICE.verify_key + own[42:]
    assert not bob_accepts(claimed)


def test_a_request_replayed_to_another_node_does_not_verify() -> None:
    """Alice's request to Bob, captured and sent to Carol (who shares another key with Alice)."""
    datagram = request_datagram(FindValue(bytes(20)))
    packet = wire.decode(datagram)
    carol = wire.pair_keys(CAROL)
    assert bob_accepts(datagram)
    assert not wire.verify_request(packet, carol.shared(ALICE.verify_key), CAROL.verify_key)


def test_a_datagram_reflected_back_does_not_verify() -> None:
    """Alice's request to Bob, sent back to Alice relabelled as Bob's (same shared key): the
    sender's key comes first in what is MACed, so the direction does not match."""
    request = request_datagram(FindNode(bytes(20)))
    relabelled = request[:10] + BOB.verify_key + request[42:]
    packet = wire.decode(relabelled)
    assert not wire.verify_request(packet, AB, ALICE.verify_key)
    # A reply of Bob's, sent back to Bob as the reply from Alice to his own request.
    reply = reply_datagram(Pong())
    back = wire.decode(reply[:10] + ALICE.verify_key + reply[42:])
    assert not wire.verify_reply(back, AB, BOB.verify_key, wire.digest(b"the request"))


def test_a_request_tag_is_no_reply_tag() -> None:
    """Requests and replies are MACed under different contexts: bytes that are both a valid
    request and a valid reply cannot be made by relabelling the kind."""
    request = bytearray(request_datagram(Ping()))
    request[1] = wire.KIND_PONG
    packet = wire.decode(bytes(request))
    assert not wire.verify_reply(packet, AB, BOB.verify_key, wire.digest(b"the request"))


def test_a_key_that_is_not_a_curve_point_fails_cleanly() -> None:
    """No key can be shared with it: the sender cannot be answered and its datagrams cannot
    verify (the RPC engine drops them before any MAC)."""
    with pytest.raises(wire.EncodeError):
        wire.encode_request(A_PAIRS, b"\xff" * 32, RID, Ping())
    with pytest.raises(wire.EncodeError):
        wire.encode_reply(B_PAIRS, bytes(32), RID, wire.digest(b"r"), Pong())  # small order


def test_a_probe_carries_no_tag_and_only_a_zero_tag_passes() -> None:
    probe = wire.encode_request(A_PAIRS, wire.ANY_KEY, RID, Ping())
    assert probe[-16:] == bytes(16) and probe[1] == wire.KIND_PROBE
    assert wire.verify_request(wire.decode(probe), None, BOB.verify_key)
    assert not wire.verify_request(wire.decode(probe[:-1] + b"\1"), None, BOB.verify_key)
    # A Ping to Bob relabelled as a probe keeps its tag: refused.
    ping = bytearray(request_datagram(Ping()))
    ping[1] = wire.KIND_PROBE
    assert not wire.verify_request(wire.decode(bytes(ping)), AB, BOB.verify_key)


def _resigned(unsigned: bytes) -> bytes:
    """A datagram body the codec never makes, with a valid-length tag, to reach decode."""
    return unsigned + bytes(16)


def _head(kind: int) -> bytes:
    return bytes([wire.VERSION, kind]) + RID + ALICE.verify_key


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (b"", "too short"),
        (bytes(57), "too short"),
        (bytes(wire.MAX_DATAGRAM_SIZE + 1), "too long"),
        (_resigned(bytes([1, wire.KIND_PING]) + RID + ALICE.verify_key), "version"),
        (_resigned(_head(0x7F)), "unknown message kind"),
        (_resigned(_head(wire.KIND_PING) + b"\0"), "trailing"),
        (_resigned(_head(wire.KIND_PONG) + b"\0"), "trailing"),
        (_resigned(_head(wire.KIND_FIND_NODE) + bytes(20)), "padded"),
        (
            _resigned(_head(wire.KIND_FIND_NODE) + b"\1" * (wire.FIND_NODE_SIZE - wire.OVERHEAD)),
            "padding",
        ),
        (_resigned(_head(wire.KIND_FIND_VALUE) + bytes(20)), "padded"),
        (_resigned(_head(wire.KIND_STORE) + bytes(20) + b"\0\5abc"), "too short"),
        (
            _resigned(_head(wire.KIND_STORE) + bytes(20) + b"\x19\x19" + bytes(6425)),
            "exceeds",
        ),
        (_resigned(_head(wire.KIND_NODES) + bytes([MAX_REPLY_CONTACTS + 1])), "exceed"),
        (_resigned(_head(wire.KIND_NODES) + b"\1" + bytes(32) + b"\5" + bytes(6)), "family"),
        (
            _resigned(_head(wire.KIND_NODES) + b"\1" + bytes(32) + b"\4\x7f\0\0\1\0\0"),
            "port 0",
        ),
        (
            _resigned(
                _head(wire.KIND_NODES)
                + b"\1"
                + bytes(32)
                + b"\6"
                + ipaddress.IPv6Address("::ffff:1.2.3.4").packed
                + b"\0\1"
            ),
            "sent as IPv4",
        ),
        (
            _resigned(
                _head(wire.KIND_NODES) + b"\1" + bytes(32) + b"\6" + bytes(12) + b"\1\2\3\4\0\1"
            ),
            "sent as IPv4",
        ),
        (_resigned(_head(wire.KIND_VALUE) + b"\0\0"), "too short"),
        (_resigned(_head(wire.KIND_STORED) + b"\2"), "0 or 1"),
        (_resigned(_head(wire.KIND_STORED)), "too short"),
    ],
)
def test_hostile_datagrams_are_decode_errors(datagram: bytes, why: str) -> None:
    with pytest.raises(wire.DecodeError, match=why):
        wire.decode(datagram)


def test_the_sizes_of_each_kind() -> None:
    """The figures the module docstring states, and the 1,200-byte budget for contacts."""
    assert len(request_datagram(Ping())) == wire.PING_SIZE == 58
    assert len(reply_datagram(Pong())) == 58
    assert len(request_datagram(FindNode(bytes(20)))) == wire.FIND_NODE_SIZE == 360
    assert len(request_datagram(FindValue(bytes(20)))) == wire.FIND_VALUE_SIZE == 2502
    assert len(reply_datagram(Stored(False))) == 59
    full = tuple(big_contact(n) for n in range(MAX_REPLY_CONTACTS))
    nodes = reply_datagram(Nodes(full))
    assert len(nodes) == wire.MAX_NODES_SIZE == 1079 <= 1200
    v4 = tuple(Contact(bytes([n]) * 32, "192.0.2.1", 1) for n in range(MAX_REPLY_CONTACTS))
    assert len(reply_datagram(Nodes(v4))) == 58 + 1 + 20 * 39
    store = request_datagram(Store(bytes(20), bytes(MAX_RECORD_SIZE)))
    assert len(store) == wire.MAX_STORE_SIZE


def test_no_reply_exceeds_three_times_its_request() -> None:
    """The largest reply of each kind against the smallest request that gets it."""
    full = tuple(big_contact(n) for n in range(MAX_REPLY_CONTACTS))
    largest: list[tuple[Request, Reply]] = [
        (Ping(), Pong()),
        (FindNode(bytes(20)), Nodes(full)),
        (FindValue(bytes(20)), Value(bytes(MAX_RECORD_SIZE), full)),
        (Store(bytes(20), b""), Stored(True)),
    ]
    for request, reply in largest:
        asked = request_datagram(request)
        answer = reply_datagram(reply, asked)
        assert len(answer) <= wire.reply_budget(len(asked)) == 3 * len(asked)


def test_an_ipv4_mapped_contact_is_sent_as_ipv4() -> None:
    mapped = Contact(b"\1" * 32, "::ffff:192.0.2.7", 9)
    packet = wire.decode(reply_datagram(Nodes((mapped,))))
    assert packet.message == Nodes((Contact(b"\1" * 32, "192.0.2.7", 9),))


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (Nodes((Contact(b"\1" * 32, "node.example", 9),)), "IP address literal"),
        (Nodes((Contact(b"\1" * 32, "fe80::1%eth0", 9),)), "IP address literal"),
        (Nodes((Contact(b"\1" * 32, "192.0.2.1", 0),)), "port"),
        (Nodes((Contact(b"\1" * 32, "::1.2.3.4", 1),)), "IPv4-compatible"),
        (Nodes(tuple(big_contact(n) for n in range(MAX_REPLY_CONTACTS + 1))), "at most"),
        (Value(bytes(MAX_RECORD_SIZE + 1), ()), "at most"),
    ],
)
def test_what_cannot_be_sent_is_an_encode_error(reply: Reply, why: str) -> None:
    with pytest.raises(wire.EncodeError, match=why):
        reply_datagram(reply)


def test_bad_targets_and_ids_are_encode_errors() -> None:
    with pytest.raises(wire.EncodeError, match="20 bytes"):
        request_datagram(FindNode(b"short"))
    with pytest.raises(wire.EncodeError, match="8 bytes"):
        wire.encode_request(A_PAIRS, BOB.verify_key, b"id", Ping())


def test_decoded_contacts_are_remembered_by_their_bytes_and_the_memo_is_bounded() -> None:
    """Repeated contacts decode to equal values through the memo, junk never enters it, and
    it never holds more than its bound, whatever strangers send."""
    full = tuple(big_contact(n) for n in range(MAX_REPLY_CONTACTS))
    v4 = tuple(Contact(bytes([n]) * 32, "192.0.2.1", n + 1) for n in range(MAX_REPLY_CONTACTS))
    for contacts in (full, v4):
        datagram = reply_datagram(Nodes(contacts))
        assert wire.decode(datagram).message == Nodes(contacts)
        assert wire.decode(datagram).message == Nodes(contacts)  # from the memo
    # A remembered contact followed by a bad one: still a DecodeError.
    remembered = reply_datagram(Nodes(v4[:1]))[43 : 43 + 39]  # after header and count
    unknown_family = bytes(32) + b"\5" + bytes(6)
    for tail in (unknown_family, remembered[:-1], b""):
        with pytest.raises(wire.DecodeError):
            wire.decode(_resigned(_head(wire.KIND_NODES) + b"\2" + remembered + tail))
    for n in range(wire._DECODED_MAX + 10):
        one = Contact(n.to_bytes(32, "big"), "198.51.100.1", 1)
        assert wire.decode(reply_datagram(Nodes((one,)))).message == Nodes((one,))
        assert len(wire._DECODED) <= wire._DECODED_MAX
