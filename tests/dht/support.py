"""Helpers for DHT tests: a fake clock, condition waits, records and small networks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from crypto.keys import Identity
from dht.limits import DhtLimits
from dht.node import DhtNode
from dht.records import AddressRecord

LOOPBACK = "127.0.0.1"
# Every test node shares 127.0.0.1, which the default per-IP contact caps (built to stop one
# address from filling a routing table) would hold to two per bucket: networks of more than
# three loopback nodes raise them explicitly (and the per-IP request rate with them).
LOOPBACK_LIMITS = DhtLimits(
    contacts_per_ip_bucket=1000,
    contacts_per_ip=1000,
    contacts_per_subnet_bucket=1000,
    contacts_per_subnet=1000,
    requests_per_ip_second=1e6,
    requests_per_ip_burst=1_000_000,
)
NODE_KEY = bytes(range(32))


class NodeFactory(Protocol):
    def __call__(
        self, bootstrap: Sequence[tuple[str, int]] = (), **kwargs: Any
    ) -> Awaitable[DhtNode]: ...


class FakeClock:
    """Unix time that only moves when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def eventually(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` holds, failing after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def make_record(
    user: Identity,
    *,
    seq: int = 1,
    expires: int | None = None,
    endpoints: Sequence[tuple[str, int]] = (("127.0.0.1", 2525),),
    now: float | None = None,
) -> AddressRecord:
    if expires is None:
        expires = int((time.time() if now is None else now) + 3600)
    return AddressRecord.create(user, NODE_KEY, endpoints, seq, expires)


async def start_network(make_node: NodeFactory, size: int, **kwargs: Any) -> list[DhtNode]:
    """``size`` nodes that joined through the first one (with :data:`LOOPBACK_LIMITS`)."""
    kwargs.setdefault("limits", LOOPBACK_LIMITS)
    first = await make_node(**kwargs)
    rest = [await make_node([(LOOPBACK, first.port)], **kwargs) for _ in range(size - 1)]
    nodes = [first, *rest]
    await eventually(lambda: all(n.peer_count() >= 1 for n in nodes), what="all nodes joined")
    return nodes
