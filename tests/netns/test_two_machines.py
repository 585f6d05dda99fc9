"""Two machines (network namespaces joined by a bridge): federating with the documented
settings, and mail to a machine that is off."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailnode.runstate import read_status
from tests.e2e.nodes import cli, wait_until
from tests.netns.machines import (
    CHECK_INBOX,
    PASSWORD,
    SEND,
    Machine,
    bridged,
    federate,
    needs_namespaces,
)

pytestmark = [pytest.mark.xdist_group("netns"), needs_namespaces]


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[Machine, Machine]]:
    with bridged(tmp_path, 2, "10.87.0") as (a, b):
        yield a, b


def test_two_machines_federate_with_defaults(machines: tuple[Machine, Machine]) -> None:
    a, b = machines
    alice, bob = federate(a, b)
    # Each publishes the address the other reaches it at: not 127.0.1.1, not 0.0.0.0.
    for m in (a, b):
        status = read_status(m.data_dir)
        assert status is not None
        assert status["endpoints"] == [[m.address, 2700]], json.dumps(status)
    shown = cli(a.data_dir, "status")
    assert f"{a.address}:2700" in shown and "WARNING" not in shown
    a.run(sys.executable, "-c", SEND, "2587", alice, bob, PASSWORD)
    got = b.run(sys.executable, "-c", CHECK_INBOX, "2143", "60", PASSWORD, timeout=90)
    assert "Subject: across machines" in got and "hello b" in got
    assert f"header.from={alice}" in got


def test_mail_to_a_machine_that_is_off_waits_and_arrives(
        machines: tuple[Machine, Machine]) -> None:
    """B is off when alice writes: the message is accepted (250) and queued on A, and
    reaches bob once B is back."""
    a, b = machines
    # Retry every second, so the test does not wait out a real backoff.
    alice, bob = federate(a, b, {"retry_initial = 60.0": "retry_initial = 1.0",
                                 "retry_max = 3600.0": "retry_max = 2.0"})
    b.stop()
    a.run(sys.executable, "-c", SEND, "2587", alice, bob, PASSWORD)  # 250 while B is off
    queued = cli(a.data_dir, "queue")
    assert bob in queued, queued
    b.start()
    got = b.run(sys.executable, "-c", CHECK_INBOX, "2143", "60", PASSWORD, timeout=90)
    assert "Subject: across machines" in got
    wait_until(lambda: "queue is empty" in cli(a.data_dir, "queue"), 30, "A's queue to empty")


def test_mail_to_a_machine_whose_record_expired_is_queued_and_delivered(
        machines: tuple[Machine, Machine]) -> None:
    """B is off for longer than its record lives: the address is still accepted (250),
    queued, and delivered when B is back and has published again."""
    a, b = machines
    alice, bob = federate(a, b, {"retry_initial = 60.0": "retry_initial = 1.0",
                                 "retry_max = 3600.0": "retry_max = 2.0",
                                 "record_ttl = 86400.0": "record_ttl = 4.0",
                                 "republish_interval = 3600.0": "republish_interval = 2.0"})
    b.stop()
    gone = time.time()
    wait_until(lambda: time.time() > gone + 5, 10, "bob's record to expire")
    a.run(sys.executable, "-c", SEND, "2587", alice, bob, PASSWORD)  # 250 all the same
    assert bob in cli(a.data_dir, "queue")
    b.start()
    got = b.run(sys.executable, "-c", CHECK_INBOX, "2143", "60", PASSWORD, timeout=90)
    assert "Subject: across machines" in got
    wait_until(lambda: "queue is empty" in cli(a.data_dir, "queue"), 30, "A's queue to empty")
