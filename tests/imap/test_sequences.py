"""Sequence sets: parsing, ``*``, reversed ranges, uid semantics, and compact rendering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import utf7
from mailnode.imap.sequences import SequenceSet, SequenceSetError, compress


@pytest.mark.parametrize(("raw", "count", "expected"), [
    (b"1", 5, [1]),
    (b"1:3", 5, [1, 2, 3]),
    (b"3:1", 5, [1, 2, 3]),
    (b"2,4:*", 5, [2, 4, 5]),
    (b"*", 5, [5]),
    (b"*:4", 5, [4, 5]),
    (b"1:*", 0, []),
    (b"1,1,2", 3, [1, 2]),
])
def test_seqs(raw: bytes, count: int, expected: list[int]) -> None:
    assert SequenceSet.parse(raw).seqs(count) == expected


def test_uids_ignore_missing_and_star_is_largest() -> None:
    uids = [3, 7, 9, 20]
    assert SequenceSet.parse(b"1:8").uids(uids) == [3, 7]
    assert SequenceSet.parse(b"*").uids(uids) == [20]
    # RFC 3501: "n:*" includes the largest uid even when n is above it.
    assert SequenceSet.parse(b"100:*").uids(uids) == [20]
    assert SequenceSet.parse(b"1:*").uids([]) == []


def test_explicit_numbers_out_of_range_are_detected() -> None:
    assert SequenceSet.parse(b"1:6").has_explicit_above(5)
    assert not SequenceSet.parse(b"1:*").has_explicit_above(5)


@pytest.mark.parametrize("raw", [b"", b"0", b"1:", b":2", b"a", b"1,,2", b"99999999999", b"1:0"])
def test_invalid(raw: bytes) -> None:
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(raw)


def test_round_trip_text_and_compress() -> None:
    assert str(SequenceSet.parse(b"1:3,5,7:*")) == "1:3,5,7:*"
    assert compress([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"
    assert compress([]) == ""


@pytest.mark.parametrize("name", ["INBOX", "Entw\u00fcrfe", "a&b", "\u65e5\u672c\u8a9e/x",
                                  "~peter"])
def test_mailbox_names_round_trip_through_modified_utf7(name: str) -> None:
    wire = utf7.encode(name)
    assert all(b < 0x7F for b in wire)
    assert utf7.decode(wire) == name


def test_known_modified_utf7() -> None:
    assert utf7.encode("Entw\u00fcrfe") == b"Entw&APw-rfe"
    assert utf7.encode("a&b") == b"a&-b"


# --- hostile sets: the result equals a plain reference, and the work does not multiply ------

def reference_seqs(seqset: SequenceSet, count: int) -> list[int]:
    return [n for n in range(1, count + 1) if reference_contains(seqset, n, count)]


def reference_uids(seqset: SequenceSet, existing: list[int]) -> list[int]:
    largest = existing[-1] if existing else 0
    return [u for u in existing if reference_contains(seqset, u, largest)]


def reference_contains(seqset: SequenceSet, value: int, largest: int) -> bool:
    for lo, hi in seqset.ranges:
        a = largest if lo is None else lo
        b = largest if hi is None else hi
        if min(a, b) <= value <= max(a, b):
            return True
    return False


_BOUND = st.one_of(st.none(), st.integers(1, 60))
_SETS = st.lists(st.tuples(_BOUND, _BOUND), min_size=1, max_size=12).map(
    lambda ranges: SequenceSet(tuple(ranges)))


@settings(max_examples=300, deadline=None)
@given(_SETS, st.integers(0, 50))
def test_seqs_equal_reference(seqset: SequenceSet, count: int) -> None:
    assert seqset.seqs(count) == reference_seqs(seqset, count)


@settings(max_examples=300, deadline=None)
@given(_SETS, st.lists(st.integers(1, 70), max_size=30, unique=True).map(sorted))
def test_uids_and_contains_equal_reference(seqset: SequenceSet, existing: list[int]) -> None:
    assert seqset.uids(existing) == reference_uids(seqset, existing)
    largest = existing[-1] if existing else 0
    for value in range(1, 75):
        assert seqset.contains(value, largest) == reference_contains(seqset, value, largest)


@settings(max_examples=100, deadline=None)
@given(_SETS)
def test_parse_round_trips(seqset: SequenceSet) -> None:
    assert SequenceSet.parse(str(seqset).encode()) == seqset


def test_thousands_of_whole_range_copies_select_each_message_once() -> None:
    # The shape a hostile client sends: 6,000 copies of 1:4294967295 (fits in a 64 KiB line).
    raw = b",".join([b"1:4294967295"] * 6000)
    seqset = SequenceSet.parse(raw)
    existing = list(range(1, 100_001))
    assert seqset.uids(existing) == existing
    assert seqset.seqs(100_000) == existing
    assert seqset.contains(99_999, 100_000)
    assert len(seqset._normalised(100_000)[0]) == 1  # merged into one range


def test_thousands_of_single_numbers_against_many_messages() -> None:
    raw = b",".join(b"%d" % n for n in range(1, 20_000, 2))
    seqset = SequenceSet.parse(raw)
    existing = list(range(1, 100_001))
    assert seqset.uids(existing) == list(range(1, 20_000, 2))
    assert seqset.seqs(100_000) == list(range(1, 20_000, 2))
    assert [n for n in range(1, 30) if seqset.contains(n, 100_000)] == list(range(1, 30, 2))
