"""Address records: encoding, signatures, expiry, and decoding of hostile bytes."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.keys import Identity
from dht.records import (
    MAX_ENDPOINTS,
    MAX_HOST_LENGTH,
    MAX_RECORD_SIZE,
    MAX_RELAY_ENDPOINTS,
    MAX_RELAYS,
    AddressRecord,
    RecordError,
    Relay,
    dht_key,
)
from dht.storage import MAX_VALUE_SIZE
from tests.dht.support import LOOPBACK, LOOPBACK_LIMITS, FakeClock, NodeFactory, start_network

ALICE = Identity(bytes([1]) * 32)
MALLORY = Identity(bytes([2]) * 32)
NODE_KEY = bytes(range(32))
NOW = 1_700_000_000
RELAYS = (
    Relay(bytes([7]) * 32, (("relay.example", 2700),)),
    Relay(bytes([8]) * 32, (("10.0.0.8", 2700), ("192.0.2.8", 4700))),
)
# A version 1 record as the code before version 2 encoded it (alice_record() of that time,
# endpoints mail.example:2525 and 127.0.0.1:25): old nodes' records must still be believed.
V1_RECORD = bytes.fromhex(
    "018a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c000102030405060708090a"
    "0b0c0d0e0f101112131415161718191a1b1c1d1e1f0000000000000007000000006553ff10020c6d61696c2e"
    "6578616d706c6509dd093132372e302e302e310019e978baee7fb241fddde8cf4807b9ca93eda33fe20cdb36"
    "683a9fac6cefa31f046ffd4ca566bbfd4adcb1a692614a9cc4d42dccc99685529ba13a6e6447188a05"
)


def alice_record(**kwargs: object) -> AddressRecord:
    args: dict[str, object] = {
        "node_key": NODE_KEY,
        "endpoints": [("mail.example", 2525), ("127.0.0.1", 25)],
        "seq": 7,
        "expires": NOW + 3600,
    }
    args.update(kwargs)
    return AddressRecord.create(ALICE, **args)  # type: ignore[arg-type]


VALID = alice_record().encode()
WITH_RELAYS = alice_record(relays=RELAYS).encode()
OUTBOUND_ONLY = alice_record(endpoints=(), relays=RELAYS, inbound=False).encode()


def test_round_trip_and_verify() -> None:
    record = alice_record()
    assert record.user_key == ALICE.verify_key
    assert record.endpoints == (("mail.example", 2525), ("127.0.0.1", 25))
    decoded = AddressRecord.decode(record.encode())
    assert decoded == record
    assert decoded.encode() == record.encode()
    decoded.verify(NOW)


def test_expired_record_is_refused_exactly_at_expiry() -> None:
    record = alice_record()
    record.verify(record.expires - 1)
    with pytest.raises(RecordError, match="expired"):
        record.verify(record.expires)


def test_wrong_signer_is_refused() -> None:
    forged = dataclasses.replace(
        AddressRecord.create(MALLORY, NODE_KEY, [("evil.example", 25)], 99, NOW + 3600),
        user_key=ALICE.verify_key,
    )
    with pytest.raises(RecordError, match="signature"):
        forged.verify(NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 8},
        {"expires": NOW + 7200},
        {"node_key": bytes(32)},
        {"endpoints": (("evil.example", 2525),)},
        {"relays": RELAYS[:1]},
        {"inbound": False},
        {"version": 1},  # the same fields under the old format and signing context
    ],
)
def test_changing_any_field_breaks_the_signature(change: dict[str, object]) -> None:
    tampered = dataclasses.replace(alice_record(), **change)  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="signature"):
        tampered.verify(NOW)


@given(
    st.sampled_from([VALID, WITH_RELAYS, OUTBOUND_ONLY, V1_RECORD]),
    st.integers(0, 2**16),
    st.integers(1, 255),
)
def test_flipping_any_byte_is_detected(valid: bytes, position: int, flip: int) -> None:
    index = position % len(valid)
    data = bytearray(valid)
    data[index] ^= flip
    with pytest.raises(RecordError):
        AddressRecord.decode(bytes(data)).verify(NOW)


@given(st.binary(max_size=3000))
def test_decoding_garbage_raises_only_record_error(data: bytes) -> None:
    try:
        record = AddressRecord.decode(data)
    except RecordError:
        return
    assert record.encode() == data


@given(
    st.sampled_from([VALID, WITH_RELAYS, OUTBOUND_ONLY, V1_RECORD]),
    st.integers(0, 2**16),
    st.integers(0, 2**16),
    st.binary(max_size=300),
)
def test_decoding_spliced_records_raises_only_record_error(
    valid: bytes, start: int, end: int, junk: bytes
) -> None:
    start, end = start % (len(valid) + 1), end % (len(valid) + 1)
    data = valid[:start] + junk + valid[end:]
    try:
        record = AddressRecord.decode(data)
    except RecordError:
        return
    assert record.encode() == data


hosts = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)


endpoint_lists = st.lists(
    st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=MAX_ENDPOINTS, unique=True
).map(tuple)
relay_lists = st.lists(
    st.builds(
        Relay,
        st.binary(min_size=32, max_size=32).filter(lambda key: key != NODE_KEY),
        st.lists(
            st.tuples(hosts, st.integers(1, 65535)),
            min_size=1,
            max_size=MAX_RELAY_ENDPOINTS,
            unique=True,
        ).map(tuple),
    ),
    max_size=MAX_RELAYS,
    unique_by=lambda relay: relay.node_key,
)


@given(
    endpoint_lists,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    relay_lists,
    st.booleans(),
)
def test_any_valid_record_round_trips(
    endpoints: tuple[tuple[str, int], ...],
    seq: int,
    expires: int,
    relays: list[Relay],
    inbound: bool,
) -> None:
    if not inbound:
        endpoints = endpoints[:1] if seq % 2 else ()  # with or without endpoints
    record = AddressRecord.create(
        ALICE, NODE_KEY, endpoints, seq, expires, relays=relays, inbound=inbound
    )
    data = record.encode()
    assert data[0] == 2 and len(data) <= MAX_RECORD_SIZE
    decoded = AddressRecord.decode(data)
    assert decoded == record and decoded.encode() == data
    assert decoded.relays == tuple(relays) and decoded.inbound is inbound
    decoded.verify(-1)


def largest_record(seq: int = 7) -> AddressRecord:
    """Every count and every host at its maximum."""

    def hosts(tag: str, count: int) -> list[tuple[str, int]]:
        return [(f"{tag}{i}".ljust(MAX_HOST_LENGTH, "h"), 65535) for i in range(count)]

    relays = [
        Relay(bytes([0x80 + i]) * 32, tuple(hosts(f"r{i}-", MAX_RELAY_ENDPOINTS)))
        for i in range(MAX_RELAYS)
    ]
    return alice_record(endpoints=hosts("n", MAX_ENDPOINTS), relays=relays, seq=seq)


def test_largest_record_fits_one_dht_value() -> None:
    data = largest_record().encode()
    assert len(data) == MAX_RECORD_SIZE <= MAX_VALUE_SIZE
    assert AddressRecord.decode(data) == largest_record()


def test_new_records_are_version_2_with_relays_and_inbound_flag() -> None:
    record = AddressRecord.decode(WITH_RELAYS)
    assert WITH_RELAYS[0] == 2 and record.version == 2
    assert record.relays == RELAYS and record.inbound is True
    record.verify(NOW)
    outbound = AddressRecord.decode(OUTBOUND_ONLY)
    assert outbound.endpoints == () and outbound.inbound is False
    assert outbound.encode() == OUTBOUND_ONLY
    outbound.verify(NOW)
    # the defaults: no relays, dialable
    plain = AddressRecord.decode(VALID)
    assert plain.relays == () and plain.inbound is True and plain.version == 2


def test_version_1_records_still_decode_verify_and_re_encode() -> None:
    record = AddressRecord.decode(V1_RECORD)
    assert record.version == 1
    assert record.user_key == ALICE.verify_key and record.node_key == NODE_KEY
    assert record.endpoints == (("mail.example", 2525), ("127.0.0.1", 25))
    assert (record.seq, record.expires) == (7, NOW + 3600)
    assert record.relays == () and record.inbound is True
    record.verify(NOW)
    assert record.encode() == V1_RECORD
    # the same fields as a version 2 record are a different (and differently signed) record
    assert record != AddressRecord.decode(VALID) and VALID != V1_RECORD


def test_version_1_cannot_carry_relays_or_refuse_inbound() -> None:
    record = AddressRecord.decode(V1_RECORD)
    for change in ({"relays": RELAYS}, {"inbound": False}):
        with pytest.raises(RecordError, match="version 1"):
            dataclasses.replace(record, **change)


def test_a_relay_byte_changed_breaks_the_signature() -> None:
    at = WITH_RELAYS.index(b"relay.example")
    data = WITH_RELAYS[:at] + b"R" + WITH_RELAYS[at + 1 :]
    tampered = AddressRecord.decode(data)  # still well formed: only the signature tells
    assert tampered.relays[0].endpoints == (("Relay.example", 2700),)
    with pytest.raises(RecordError, match="signature"):
        tampered.verify(NOW)
    key_at = WITH_RELAYS.index(bytes([8]) * 32)
    swapped = WITH_RELAYS[:key_at] + bytes([9]) * 32 + WITH_RELAYS[key_at + 32 :]
    with pytest.raises(RecordError, match="signature"):
        AddressRecord.decode(swapped).verify(NOW)


def test_the_inbound_flag_is_signed() -> None:
    flags_at = 1 + 32 + 32 + 8 + 8
    assert WITH_RELAYS[flags_at] == 0
    data = WITH_RELAYS[:flags_at] + b"\x01" + WITH_RELAYS[flags_at + 1 :]
    assert AddressRecord.decode(data).inbound is False
    with pytest.raises(RecordError, match="signature"):
        AddressRecord.decode(data).verify(NOW)


def relay(key: int = 7, endpoints: object = (("relay.example", 2700),)) -> Relay:
    return Relay(bytes([key]) * 32, endpoints)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: relay(endpoints=()), "endpoints"),
        (lambda: relay(endpoints=tuple((f"h{i}", 1) for i in range(5))), "endpoints"),
        (lambda: relay(endpoints=[("relay.example", 2700)]), "tuple"),
        (lambda: relay(endpoints=(("a", 1), ("a", 1))), "duplicate"),
        (lambda: relay(endpoints=(("rel ay", 1),)), "spaces"),
        (lambda: relay(endpoints=(("relay", 0),)), "port"),
        (lambda: Relay(b"short", (("relay", 1),)), "node_key"),
        (lambda: alice_record(relays=[relay(i) for i in range(MAX_RELAYS + 1)]), "relays"),
        (lambda: alice_record(relays=[relay(), relay()]), "duplicate relays"),
        (lambda: alice_record(relays=[Relay(NODE_KEY, (("x", 1),))]), "own relay"),
        (lambda: alice_record(relays=[("relay.example", 2700)]), "Relay"),
        (lambda: alice_record(endpoints=()), "endpoints"),  # a dialled node needs one
        (lambda: alice_record(inbound=1), "inbound"),
    ],
)
def test_bad_relays_and_flags_are_refused(make: object, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        make()  # type: ignore[operator]


def with_relay_count(count: int) -> bytes:
    """WITH_RELAYS with its relay count byte replaced (the rest left as it was)."""
    at = WITH_RELAYS.index(bytes([7]) * 32) - 1
    assert WITH_RELAYS[at] == len(RELAYS)
    return WITH_RELAYS[:at] + bytes([count]) + WITH_RELAYS[at + 1 :]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (VALID[:81] + b"\x02" + VALID[82:], "flag bits"),
        (VALID[:81] + b"\x80" + VALID[82:], "flag bits"),
        (VALID[:81], "header"),
        (with_relay_count(MAX_RELAYS + 1), "relay count"),
        (with_relay_count(1), "trailing"),
        (WITH_RELAYS[: WITH_RELAYS.index(bytes([7]) * 32) + 10], "relays"),
        (OUTBOUND_ONLY[:81] + b"\x00" + OUTBOUND_ONLY[82:], "endpoint count 0"),
        (V1_RECORD[:81] + b"\x00" + V1_RECORD[82:], "endpoint count"),
        (V1_RECORD + b"\x00", "trailing"),
    ],
)
def test_decode_says_what_is_wrong_with_relays_and_flags(data: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        AddressRecord.decode(data)


@pytest.mark.parametrize(
    ("endpoints", "reason"),
    [
        ([], "endpoints"),
        ([(f"h{i}", 25) for i in range(MAX_ENDPOINTS + 1)], "endpoints"),
        ([("h" * (MAX_HOST_LENGTH + 1), 25)], "characters"),
        ([("", 25)], "characters"),
        ([("mail example", 25)], "spaces"),
        ([("mäil.example", 25)], "ASCII"),
        ([("mail.example", 0)], "port"),
        ([("mail.example", 65536)], "port"),
        ([("a", 25), ("a", 25)], "duplicate"),
    ],
)
def test_bad_endpoints_are_refused(endpoints: list[tuple[str, int]], reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        alice_record(endpoints=endpoints)


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"seq": -1}, "seq"), ({"expires": 2**64}, "expires"), ({"node_key": b"short"}, "node_key")],
)
def test_bad_fields_are_refused(change: dict[str, object], reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        alice_record(**change)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x03" + VALID[1:], "version"),
        (b"\x00" + VALID[1:], "version"),
        (VALID[:40], "header"),
        (VALID[:-1], "signature"),
        (VALID + b"\x00", "trailing"),
        (VALID[:82] + b"\x00" + VALID[83:], "endpoint count"),
        (b"\x01" * (MAX_RECORD_SIZE + 1), "exceeds"),
    ],
)
def test_decode_says_what_is_wrong(data: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        AddressRecord.decode(data)


def test_dht_key_is_domain_separated_and_checked() -> None:
    key = dht_key(ALICE.verify_key)
    assert len(key) == 20
    assert key == dht_key(ALICE.verify_key)
    assert key != hashlib.sha1(ALICE.verify_key).digest()
    assert key != dht_key(MALLORY.verify_key)
    with pytest.raises(RecordError):
        dht_key(b"short")


async def test_records_with_relays_and_old_records_travel_through_the_dht(
    make_node: NodeFactory,
) -> None:
    """An old version 1 record, the largest legal record (relays and all) replacing it, and an
    outbound-only record are stored at every peer and fetched by a node that joined later."""
    clock = FakeClock(NOW)
    nodes = await start_network(make_node, 4, clock=clock)
    old = AddressRecord.decode(V1_RECORD)  # seq 7
    largest = largest_record(seq=8)
    carol = Identity(bytes([3]) * 32)
    outbound = AddressRecord.create(
        carol, NODE_KEY, (), 1, NOW + 3600, relays=RELAYS, inbound=False
    )
    assert await nodes[3].publish(old) == 3  # every peer took the STORE datagram
    late = await make_node([(LOOPBACK, nodes[2].port)], clock=clock, limits=LOOPBACK_LIMITS)
    assert await late.lookup(ALICE.verify_key) == old
    assert await nodes[0].publish(largest) == 4  # the user's node was upgraded
    assert len(largest.encode()) == MAX_RECORD_SIZE
    assert await nodes[1].publish(outbound) == 4
    later = await make_node([(LOOPBACK, nodes[2].port)], clock=clock, limits=LOOPBACK_LIMITS)
    for node in (late, later):
        assert await node.lookup(ALICE.verify_key) == largest
        assert await node.lookup(carol.verify_key) == outbound
