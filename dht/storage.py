"""This node's share of the DHT: address records it holds for others, validated on the way in.

kademlia's ``ForgetfulStorage`` stores any value under any key, so any peer could overwrite
anyone's record. :class:`RecordStore` accepts a value only if it is a correctly signed, unexpired
:class:`~dht.records.AddressRecord` stored under its own :func:`~dht.records.dht_key` and newer
than what is already held, and forgets records when they expire.

Valid records are cheap to make (any key pair signs its own), so validity alone does not stop one
client from filling the store with junk that never expires. Every stored record therefore counts
against the address that sent it (per IP and per /24 or /64; this node's own records are exempt),
and a record may not expire more than :data:`MAX_RECORD_TTL` (plus clock skew) from now.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kademlia.storage import IStorage

from dht.limits import DEFAULT_LIMITS, MAX_RECORD_TTL, DhtLimits, subnet
from dht.records import DHT_KEY_SIZE, AddressRecord, RecordError, dht_key

log = logging.getLogger(__name__)

# Anything larger cannot be a record; also the payload limit of one kademlia datagram.
MAX_VALUE_SIZE = 8192
# Leeway for a publisher whose clock is ahead of ours.
MAX_CLOCK_SKEW = 3600


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
    origin: str | None  # IP address that stored this version; None for our own records


class RecordStore(IStorage):  # type: ignore[misc]  # kademlia is untyped
    """Validated, expiring record storage with kademlia's ``IStorage`` interface."""

    def __init__(
        self,
        clock: Callable[[], float],
        max_records: int = 100_000,
        limits: DhtLimits = DEFAULT_LIMITS,
    ) -> None:
        self._clock = clock
        self._max_records = max_records
        self._limits = limits
        self._data: dict[bytes, _Entry] = {}
        self._per_ip: Counter[str] = Counter()
        self._per_subnet: Counter[str] = Counter()
        # (expires, key) for every stored version; stale pairs are skipped when they come up.
        # Lets quotas free up at expiry without scanning the whole store per STORE.
        self._expiry: list[tuple[int, bytes]] = []

    def now(self) -> float:
        """The store's clock, for validating what it serves."""
        return self._clock()

    def offer(self, key: object, value: object, origin: str | None = None) -> bool:
        """Store ``value`` if valid and newer; True if stored (or already held identically).

        ``origin`` is the IP address that sent it (None: published by this node, exempt from
        the quotas). Raises RecordError, saying why, if the value is refused.
        """
        now = self._clock()
        record = validated(key, value, now)
        assert isinstance(key, bytes) and isinstance(value, bytes)  # checked by validated()
        self.cull()
        if record.expires > now + MAX_RECORD_TTL + MAX_CLOCK_SKEW:
            raise RecordError(f"record expires more than {MAX_RECORD_TTL} seconds from now")
        current = self._live(key, now)
        if current is not None:
            if record.seq < current.record.seq:
                raise RecordError(f"seq {record.seq} is older than stored {current.record.seq}")
            if record.seq == current.record.seq:
                if value != current.value:
                    raise RecordError(f"a different record with seq {record.seq} is stored")
                current.refreshed = now
                return True
        elif origin is not None and len(self._data) >= self._max_records:
            raise RecordError("record store is full")
        if origin is not None:
            self._check_quota(origin, current)
        if current is not None:
            self._remove(key)
        self._data[key] = _Entry(value, record, now, origin)
        heapq.heappush(self._expiry, (record.expires, key))
        if len(self._expiry) > 2 * len(self._data) + 1024:  # many replaced versions
            self._expiry = [(e.record.expires, k) for k, e in self._data.items()]
            heapq.heapify(self._expiry)
        if origin is not None:
            self._per_ip[origin] += 1
            self._per_subnet[subnet(origin)] += 1
        return True

    def _check_quota(self, origin: str, replaced: _Entry | None) -> None:
        """Refuse a new record from ``origin`` once its IP or subnet holds its share."""
        net = subnet(origin)
        held_ip, held_net = self._per_ip[origin], self._per_subnet[net]
        if replaced is not None and replaced.origin is not None:  # a newer version replaces it
            held_ip -= replaced.origin == origin
            held_net -= subnet(replaced.origin) == net
        if held_ip >= self._limits.records_per_ip:
            raise RecordError(f"{origin} already stored {held_ip} records here")
        if held_net >= self._limits.records_per_subnet:
            raise RecordError(f"{net} already stored {held_net} records here")

    def _remove(self, key: bytes) -> None:
        entry = self._data.pop(key)
        if entry.origin is not None:
            net = subnet(entry.origin)
            self._per_ip[entry.origin] -= 1
            self._per_subnet[net] -= 1
            if self._per_ip[entry.origin] <= 0:
                del self._per_ip[entry.origin]
            if self._per_subnet[net] <= 0:
                del self._per_subnet[net]

    def held_from(self, origin: str) -> int:
        """How many held records ``origin`` (an IP address) stored here."""
        return self._per_ip[origin]

    def keys(self) -> list[bytes]:
        """A snapshot of the held keys, without culling (cheap; the hand-over walks it)."""
        return list(self._data)

    def has_records(self) -> bool:
        """Whether anything is held, expired records included (cheaper than ``len``)."""
        return bool(self._data)

    def _live(self, key: bytes, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.record.is_expired(now):
            log.debug("dropping expired record under %s", key.hex())
            self._remove(key)
            return None
        return entry

    def record(self, key: bytes) -> AddressRecord | None:
        """The live record under ``key``, if any."""
        entry = self._live(key, self._clock())
        return None if entry is None else entry.record

    def cull(self) -> int:
        """Drop expired records; returns how many. Costs O(log n) per expired record."""
        now = self._clock()
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            expires, key = heapq.heappop(self._expiry)
            entry = self._data.get(key)
            if entry is not None and entry.record.expires == expires:
                self._remove(key)
                dropped += 1
        return dropped

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
