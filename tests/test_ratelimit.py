"""Token buckets with a fake clock."""

from __future__ import annotations

from mailnode.ratelimit import RateLimiter


def test_burst_then_steady_rate_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # 6 a minute: one every 10 s
    assert [limiter.try_acquire("a") for _ in range(6)] == [0.0] * 6
    assert limiter.try_acquire("a") == 10.0
    assert limiter.try_acquire("b") == 0.0  # keys are independent
    now[0] += 5
    assert limiter.try_acquire("a") == 5.0
    now[0] += 5
    assert limiter.try_acquire("a") == 0.0
    now[0] += 3600
    assert [limiter.try_acquire("a") for _ in range(7)][-1] > 0  # refills only to the burst


def test_buckets_kept_are_bounded() -> None:
    """Keys chosen by strangers (their addresses) cannot grow the table without bound."""
    limiter = RateLimiter(1, clock=lambda: 0.0, max_keys=100)
    for key in range(10_000):
        assert limiter.try_acquire(key) == 0.0
    assert len(limiter._buckets) == 100
    assert limiter.try_acquire(9_999) > 0  # the most recent keys keep their state
