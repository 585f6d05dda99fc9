"""A receiving node's words reach our log escaped: a reason with CR/LF or terminal escapes
cannot forge a log line."""

from __future__ import annotations

import logging

import pytest

from mailnode.delivery.outbound import RetryPolicy
from mailnode.store.sqlite import SqlStore
from mailnode.transfer import Outcome, Verdict
from tests.delivery.test_queue import Clock, FakeNet, _queue_one

FORGED = "busy\r\n2026-01-01 INFO mailnode: outbound id=x delivered\x1b[2J\x00"


@pytest.mark.parametrize("verdict", [Verdict.TEMPORARY, Verdict.PERMANENT, Verdict.ACCEPTED])
async def test_peer_reasons_are_escaped(store: SqlStore, caplog: pytest.LogCaptureFixture,
                                        verdict: Verdict) -> None:
    clock, net = Clock(), FakeNet(script=[Outcome(verdict, FORGED)])
    store.clock = clock
    queue, _, _ = await _queue_one(store, clock, net, RetryPolicy(10, 20, 10_000))
    caplog.set_level(logging.INFO, logger="mailnode")
    await queue.run_once()
    [line] = [r.getMessage() for r in caplog.records if r.name == "mailnode.delivery.outbound"]
    assert line.isprintable(), line
    assert "busy\\r\\n2026-01-01 INFO mailnode: outbound id=x delivered\\x1b[2J\\x00" in line
