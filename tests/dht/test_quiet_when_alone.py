"""A node without peers (a first quickstart) must not print a line per retry: the owner's
"shown once" password would scroll away. One INFO line when it is alone, one when it joins."""

from __future__ import annotations

import logging

import pytest

from crypto.keys import Identity
from tests.dht.support import LOOPBACK, NodeFactory, eventually, make_record


def _info(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "dht.kad.node" and r.levelno >= logging.INFO]


async def test_an_isolated_node_says_once_that_it_is_alone_then_that_it_joined(
        make_node: NodeFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dht.kad.node")
    alone = await make_node()
    caplog.clear()
    for seq in range(1, 6):  # the publisher's retries while no peer is known
        assert await alone.publish(make_record(Identity(bytes([7]) * 32), seq=seq)) == 0
        await alone._retry_bootstrap()  # the periodic check
    lines = _info(caplog)
    assert [line for line in lines if "no DHT peers known" in line] == lines  # nothing else
    assert len(lines) == 1 and "no bootstrap peers configured" in lines[0]
    assert any("0 of 0 close peers" in r.getMessage() for r in caplog.records
               if r.levelno == logging.DEBUG)  # still there for -v

    caplog.clear()
    other = await make_node(bootstrap=[(LOOPBACK, alone.port)])
    await eventually(lambda: alone.peer_count() == 1, 5, "the newcomer to be known")
    await alone._retry_bootstrap()
    await alone._retry_bootstrap()
    joined = [line for line in _info(caplog) if "joined the DHT" in line]
    assert joined == ["joined the DHT: 1 peers known"]
    assert other.peer_count() == 1
