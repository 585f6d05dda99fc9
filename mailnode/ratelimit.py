"""Token buckets: a steady rate with room for a burst, per key (e.g. per user)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``per_minute`` events per key on average and bursts up to the same number.

    At most ``max_keys`` buckets are kept (least recently used dropped first), so keys that
    strangers choose (their addresses) cannot grow it without bound.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 65536) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, _Bucket] = OrderedDict()

    def _bucket(self, key: object) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket

    def try_acquire(self, key: object) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        bucket = self._bucket(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate if self.rate > 0 else float("inf")
