"""Sequence sets (RFC 3501 §9 ``sequence-set``): ``1,3:5,7:*`` over numbers or uids."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

_RANGE = re.compile(rb"(\d+|\*)(?::(\d+|\*))?")
MAX_NUMBER = 0xFFFFFFFF


class SequenceSetError(ValueError):
    """Text that is not a sequence set."""


@dataclass(frozen=True)
class SequenceSet:
    """Ranges as ``(low, high)`` pairs where ``None`` stands for ``*`` (the largest value).

    A client controls how many ranges there are (tens of thousands fit in one line) and how
    wide they are (``1:4294967295``), so every selection works on the ranges normalised once
    (sorted, merged) and never on every number a range spans: cost grows with the number of
    ranges and the size of the result, not with their product.
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    _merged: dict[int, tuple[list[int], list[int]]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)
    """Normalised ranges per value of ``*``: (sorted starts, matching ends), disjoint."""

    @classmethod
    def parse(cls, raw: bytes) -> SequenceSet:
        """Parse the wire form; numbers must be 1..2^32-1."""
        if not raw:
            raise SequenceSetError("empty sequence set")
        ranges: list[tuple[int | None, int | None]] = []
        for part in raw.split(b","):
            m = _RANGE.fullmatch(part)
            if m is None:
                raise SequenceSetError("invalid sequence set")
            low = _number(m.group(1))
            high = _number(m.group(2)) if m.group(2) is not None else low
            ranges.append((low, high))
        return cls(tuple(ranges))

    def __str__(self) -> str:
        def one(v: int | None) -> str:
            return "*" if v is None else str(v)

        return ",".join(one(lo) if lo == hi else f"{one(lo)}:{one(hi)}" for lo, hi in self.ranges)

    def _normalised(self, largest: int) -> tuple[list[int], list[int]]:
        """Disjoint, ascending ``(starts, ends)`` with ``*`` read as ``largest``; cached, so
        SEARCH's per-message :meth:`contains` costs a bisection, not a pass over the ranges."""
        cached = self._merged.get(largest)
        if cached is not None:
            return cached
        bounds = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            bounds.append((min(a, b), max(a, b)))
        bounds.sort()
        starts: list[int] = []
        ends: list[int] = []
        for a, b in bounds:
            if ends and a <= ends[-1] + 1:
                ends[-1] = max(ends[-1], b)
            else:
                starts.append(a)
                ends.append(b)
        if len(self._merged) >= 4:  # a set is used with one or two values of "*"
            self._merged.clear()
        self._merged[largest] = (starts, ends)
        return starts, ends

    def has_explicit_above(self, limit: int) -> bool:
        """Whether a range made only of literal numbers exceeds ``limit``; such sets are
        invalid. Ranges ending in ``*`` are clamped instead, so ``1:*`` on an empty mailbox
        simply selects nothing (clients send it after selecting empty mailboxes)."""
        return any(lo is not None and hi is not None and max(lo, hi) > limit
                   for lo, hi in self.ranges)

    def seqs(self, count: int) -> list[int]:
        """Sequence numbers 1..count selected by this set, ascending, without duplicates."""
        if count == 0:
            return []
        out: list[int] = []
        for a, b in zip(*self._normalised(count), strict=True):
            if a > count:
                break
            out.extend(range(a, min(b, count) + 1))
        return out

    def uids(self, existing: Sequence[int]) -> list[int]:
        """Existing uids (ascending list) selected by this set; ``*`` is the largest uid."""
        if not existing:
            return []
        out: list[int] = []
        for a, b in zip(*self._normalised(existing[-1]), strict=True):
            if a > existing[-1]:
                break
            out.extend(existing[bisect_left(existing, a):bisect_right(existing, b)])
        return out

    def uid_targets(self, existing: Sequence[int]) -> list[tuple[int, int]]:
        """``(sequence number, uid)`` of what :meth:`uids` selects: the positions come from
        the same bisection, not from a search per uid."""
        if not existing:
            return []
        out: list[tuple[int, int]] = []
        for a, b in zip(*self._normalised(existing[-1]), strict=True):
            if a > existing[-1]:
                break
            lo, hi = bisect_left(existing, a), bisect_right(existing, b)
            out.extend(zip(range(lo + 1, hi + 1), existing[lo:hi], strict=True))
        return out

    def contains(self, value: int, largest: int) -> bool:
        """Membership test, ``*`` meaning ``largest`` (used by SEARCH)."""
        starts, ends = self._normalised(largest)
        i = bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]


def _number(raw: bytes) -> int | None:
    if raw == b"*":
        return None
    if len(raw) > 10:
        raise SequenceSetError("number too large")
    value = int(raw)
    if not 1 <= value <= MAX_NUMBER:
        raise SequenceSetError("sequence numbers start at 1")
    return value


def compress(values: Sequence[int]) -> str:
    """Render numbers compactly as ``1:3,7`` (for COPYUID and friends); keeps the given order."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}:{values[j]}")
        i = j + 1
    return ",".join(parts)
