"""Fixtures for DHT tests: nodes on 127.0.0.1 with port 0, always stopped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from dht.node import DhtNode
from tests.dht.support import LOOPBACK, NodeFactory


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    """Start DhtNodes on loopback; every one is stopped at the end, whatever happened."""
    nodes: list[DhtNode] = []

    async def make(bootstrap: Sequence[tuple[str, int]] = (), **kwargs: Any) -> DhtNode:
        kwargs.setdefault("rpc_timeout", 1.0)
        node = DhtNode(**kwargs)
        nodes.append(node)
        await node.start(LOOPBACK, 0, bootstrap)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            await node.aclose()
