"""This node's share of the DHT: address records it holds for others, validated on the way in.

kademlia's ``ForgetfulStorage`` stores any value under any key, so any peer could overwrite
anyone's record. :class:`RecordStore` accepts a value only if it is a correctly signed, unexpired
:class:`~dht.records.AddressRecord` stored under its own :func:`~dht.records.dht_key` and newer
than what is already held, and forgets records when they expire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kademlia.storage import IStorage

from dht.records import DHT_KEY_SIZE, AddressRecord, RecordError, dht_key

log = logging.getLogger(__name__)

# Anything larger cannot be a record; also the payload limit of one kademlia datagram.
MAX_VALUE_SIZE = 8192


def validated(key: object, value: object, now: float) -> AddressRecord:
    """The record ``value`` if it may live under ``key`` at time ``now``; else RecordError.

    Used wherever bytes from the network are stored or believed.
    """
    if not isinstance(key, bytes) or len(key) != DHT_KEY_SIZE:
        raise RecordError(f"a DHT key is {DHT_KEY_SIZE} bytes")
    if not isinstance(value, bytes):
        raise RecordError("a DHT value is bytes")
    if len(value) > MAX_VALUE_SIZE:
        raise RecordError(f"value of {len(value)} bytes exceeds {MAX_VALUE_SIZE}")
    record = AddressRecord.decode(value)
    if dht_key(record.user_key) != key:
        raise RecordError("record stored under another user's key")
    record.verify(now)
    return record


@dataclass
class _Entry:
    value: bytes
    record: AddressRecord
    refreshed: float  # clock time this value was last stored or republished


class RecordStore(IStorage):  # type: ignore[misc]  # kademlia is untyped
    """Validated, expiring record storage with kademlia's ``IStorage`` interface."""

    def __init__(self, clock: Callable[[], float], max_records: int = 100_000) -> None:
        self._clock = clock
        self._max_records = max_records
        self._data: dict[bytes, _Entry] = {}

    def now(self) -> float:
        """The store's clock, for validating what it serves."""
        return self._clock()

    def offer(self, key: object, value: object) -> bool:
        """Store ``value`` if valid and newer; True if stored (or already held identically).

        Raises RecordError, saying why, if the value is refused.
        """
        now = self._clock()
        record = validated(key, value, now)
        assert isinstance(key, bytes) and isinstance(value, bytes)  # checked by validated()
        current = self._live(key, now)
        if current is not None:
            if record.seq < current.record.seq:
                raise RecordError(f"seq {record.seq} is older than stored {current.record.seq}")
            if record.seq == current.record.seq:
                if value != current.value:
                    raise RecordError(f"a different record with seq {record.seq} is stored")
                current.refreshed = now
                return True
        elif len(self._data) >= self._max_records:
            self.cull()
            if len(self._data) >= self._max_records:
                raise RecordError("record store is full")
        self._data[key] = _Entry(value, record, now)
        return True

    def _live(self, key: bytes, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.record.is_expired(now):
            log.debug("dropping expired record under %s", key.hex())
            del self._data[key]
            return None
        return entry

    def record(self, key: bytes) -> AddressRecord | None:
        """The live record under ``key``, if any."""
        entry = self._live(key, self._clock())
        return None if entry is None else entry.record

    def cull(self) -> int:
        """Drop expired records; returns how many."""
        now = self._clock()
        expired = [k for k, e in self._data.items() if e.record.is_expired(now)]
        for key in expired:
            del self._data[key]
        return len(expired)

    def touch(self, key: bytes) -> None:
        """Note that ``key`` was just republished, so it is not due again for a while."""
        entry = self._data.get(key)
        if entry is not None:
            entry.refreshed = self._clock()

    # kademlia's IStorage interface

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.offer(key, value)

    def __getitem__(self, key: bytes) -> bytes:
        entry = self._live(key, self._clock())
        if entry is None:
            raise KeyError(key)
        return entry.value

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        entry = self._live(key, self._clock())
        return default if entry is None else entry.value

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        self.cull()
        cutoff = self._clock() - seconds_old
        return [(k, e.value) for k, e in self._data.items() if e.refreshed <= cutoff]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.cull()
        return iter([(k, e.value) for k, e in self._data.items()])

    def __len__(self) -> int:
        self.cull()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._live(key, self._clock()) is not None
