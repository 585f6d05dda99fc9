"""Sequence sets: parsing, ``*``, reversed ranges, uid semantics, and compact rendering."""

from __future__ import annotations

import pytest

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
