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
    AddressRecord,
    RecordError,
    dht_key,
)

ALICE = Identity(bytes([1]) * 32)
MALLORY = Identity(bytes([2]) * 32)
NODE_KEY = bytes(range(32))
NOW = 1_700_000_000


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
    ],
)
def test_changing_any_field_breaks_the_signature(change: dict[str, object]) -> None:
    tampered = dataclasses.replace(alice_record(), **change)  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="signature"):
        tampered.verify(NOW)


@given(st.integers(0, len(VALID) - 1), st.integers(1, 255))
def test_flipping_any_byte_is_detected(index: int, flip: int) -> None:
    data = bytearray(VALID)
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


@given(st.integers(0, len(VALID)), st.integers(0, len(VALID)), st.binary(max_size=300))
def test_decoding_spliced_records_raises_only_record_error(
    start: int, end: int, junk: bytes
) -> None:
    data = VALID[:start] + junk + VALID[end:]
    try:
        record = AddressRecord.decode(data)
    except RecordError:
        return
    assert record.encode() == data


hosts = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)


@given(
    st.lists(
        st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=MAX_ENDPOINTS, unique=True
    ),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
def test_any_valid_record_round_trips(
    endpoints: list[tuple[str, int]], seq: int, expires: int
) -> None:
    record = AddressRecord.create(ALICE, NODE_KEY, endpoints, seq, expires)
    assert AddressRecord.decode(record.encode()) == record


def test_largest_record_fits_one_datagram() -> None:
    endpoints = [(f"{i}" + "h" * (MAX_HOST_LENGTH - 1), 65535) for i in range(MAX_ENDPOINTS)]
    data = alice_record(endpoints=endpoints).encode()
    assert len(data) == MAX_RECORD_SIZE < 8192


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
        (b"\x02" + VALID[1:], "version"),
        (VALID[:40], "header"),
        (VALID[:-1], "signature"),
        (VALID + b"\x00", "trailing"),
        (VALID[:81] + b"\x00" + VALID[82:], "endpoint count"),
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
