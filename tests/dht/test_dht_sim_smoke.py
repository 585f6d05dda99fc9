"""The DHT benchmark's harness at small scale: it builds a network, publishes and judges lookups.

Thirty nodes in one worker process. The figures the bench prints are only worth something if a
healthy network scores 100 % and a liar's answer is judged as what it is, so both are asserted
here for mailnode, whose lookups validate and keep the highest seq. The kademlia baseline
believes whatever it is told, which is what the bench shows and not a property to pin.
"""

from __future__ import annotations

import multiprocessing
import time

from bench.dht_sim import Config, Population, run
from dht.records import dht_key

USERS = 30


def config(impls: tuple[str, ...], scenarios: tuple[str, ...]) -> Config:
    return Config(
        nodes=USERS, procs=1, lookups=30, impls=impls, scenarios=scenarios, seed=7,
        concurrency=8, rate=100.0, rpc_timeout=1.0, expires=int(time.time()) + 3600,
        churn=(0.0,),
    )


def test_every_lookup_finds_the_newest_record_without_churn() -> None:
    rows = run(config(("kademlia", "mailnode"), ("churn",)))
    assert [(r.impl, r.scenario) for r in rows] == [
        ("kademlia", "0% churn"), ("mailnode", "0% churn")]
    kademlia, mailnode = rows
    assert mailnode.outcomes == {"ok": 30}
    # kademlia overwrites whatever it is sent, so a late hand-over of the first record can
    # replace the second at some node: it may answer stale, but it finds every record
    assert kademlia.outcomes["ok"] + kademlia.outcomes["stale"] == 30
    for row in rows:
        assert row.publish_failures == 0
        assert len(row.latencies) == len(row.rpcs) == 30
    assert not multiprocessing.active_children()  # the workers are gone


def test_mailnode_believes_no_forged_or_stale_record() -> None:
    rows = run(config(("mailnode",), ("forge", "stale")))
    assert [r.scenario for r in rows] == ["10% forge", "10% stale"]
    for row in rows:
        assert row.outcomes == {"ok": 30}, row.scenario
    assert not multiprocessing.active_children()


def test_the_judge_tells_forged_stale_and_missing_apart() -> None:
    population = Population(seed=1, count=8, expires=int(time.time()) + 3600)
    now = time.time()
    newest = population.record(0, 2).encode()
    assert population.judge(0, newest, now) == "ok"
    assert population.judge(0, None, now) == "missing"
    assert population.judge(0, population.record(1, 2).encode(), now) == "forged"
    assert population.judge(0, newest[:-1] + bytes([newest[-1] ^ 1]), now) == "forged"
    for user, user_key in enumerate(population.user_keys):  # both kinds of forgery occur
        assert population.judge(user, population.stale(dht_key(user_key)), now) == "stale"
        assert population.judge(user, population.forged(dht_key(user_key)), now) == "forged"
