"""A thousand DHT nodes on loopback UDP: lookups through churn and attack, implementations side
by side.

Each node runs in one of ``--procs`` worker processes (one asyncio loop each, so both cores
work) and listens on an IP of its own (127.a.b.1: every node is its own /24, as strangers on the
internet are, so per-IP and per-subnet defences see what they would see there); the eclipse
attackers share one IP, ATTACKER_HOST, with a port each. Nodes join in growing batches, each
through up to three random earlier nodes. Every node is also a user with a fresh Ed25519
identity: it publishes its signed :class:`~dht.records.AddressRecord` (seq 1), then republishes
a newer one (seq 2, the round every later judgement is against). Each implementation gets two
networks, built alike (the same seed gives every implementation the same nodes, victims and
lookups):

- ``churn``: lookups with 0 %, then 10 %, then 30 % of the nodes killed without warning (no
  time to repair in between); lookers are live nodes, targets any user (a dead user's record
  must still be found: mail is queued for it);
- the attacks ``forge``, ``stale``, ``drop``, ``eclipse`` in this order on the second
  network: 10 % of the nodes (the same liars for the first three, another 10 % on the one
  attacker IP for the eclipse) turn malicious (see :class:`bench.dht_sim_impls.Attack`), the
  lookups run, and they turn honest again. Lookers are honest nodes; each attack's targets
  are its own quarter of the honest users, so what one attack planted (kademlia caches the
  value a lookup believed at the nodes it asked) cannot count in another's row. Dropped
  nodes may have been evicted from routing tables before the eclipse runs.

A lookup succeeds if it returns exactly the owner's newest record; "forged" counts answers that
are not a valid record for the user (bad signature, another user's record), "stale" valid but
older ones, "missing" nothing (or no answer within LOOKUP_TIMEOUT). Columns: ``RPCs`` is the
mean number of requests the looking-up node sent while its lookup ran (its background work in
that time, e.g. hand-over STOREs, included); ``p50 x`` the p50 over the first
implementation's in the same row; ``KiB/node`` a worker's RSS growth from building and filling
its nodes, over their number; ``build s`` joining plus both publish rounds; ``pub fail`` how
many of those publishes failed or timed out (over both rounds); ``lookups s`` the
row's wall time; ``sybil`` the share of the honest nodes' routing-table contacts on the
attacker IP once the eclipse nodes have announced themselves.

Before each row's lookups every worker collects garbage once and freezes what is left
(``gc.freeze``), for every implementation: with hundreds of nodes in one process a full
collection otherwise stalled them all for up to a second, which a one-node process does not
see (found by helper ``dhtp50``'s trace of each lookup's critical path).

Lookups start at a fixed ``--rate`` per worker (open loop: a slow lookup does not hold back
the next). The default, 5 per second per process, is below what two cores sustain for today's
mailnode nodes at 1,000 (at 20 per second their own RPC timeouts started to fire); latency
still includes queueing behind other nodes' work on a shared CPU, so it is an upper bound on
what an idle node would see.
Implementations are adapters in :mod:`bench.dht_sim_impls` (how to add one is described there).

Run: ``python -m bench.dht_sim --nodes 1000 --procs 2 --lookups 500 --impl kademlia,mailnode
--scenarios all``; ``--quick`` for a small network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import random
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from bench.dht_sim_impls import IMPLEMENTATIONS, Attack, FakeContact, SimNode
from crypto.keys import Identity
from dht.records import AddressRecord, RecordError, dht_key
from dht.storage import validated

ATTACKER_HOST = "127.255.0.1"
NODE_KEY = bytes(range(32))
SCENARIOS = ("churn", "forge", "stale", "drop", "eclipse")
CHURN = (0.0, 0.10, 0.30)
MALICIOUS_SHARE = 0.10
BOOTSTRAP_PEERS = 3
MAX_BATCH = 100  # nodes joining at once, over all workers
LOOKUP_TIMEOUT = 60.0
PUBLISH_CONCURRENCY = 16  # per worker
PUBLISH_TIMEOUT = 120.0
CALL_TIMEOUT = 1800.0  # one command to the workers; a hung run ends instead of waiting forever
NEWEST = 2  # the republish round's seq
SYBILS_PER_ANSWER = 20
ANNOUNCED_IDS = 8  # fake ids an eclipse node announces to each contact it knows
Address = tuple[str, int]


def host_for(index: int) -> str:
    """Node ``index``'s own IP, in a /24 of its own (any 127/8 address is loopback on Linux)."""
    return f"127.{1 + index // 250}.{index % 250}.1"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Config:
    nodes: int
    procs: int
    lookups: int
    impls: tuple[str, ...]
    scenarios: tuple[str, ...]
    seed: int
    concurrency: int  # publishes in flight per worker
    rate: float  # lookups started per second per worker, whether or not earlier ones finished
    rpc_timeout: float
    expires: int  # unix time the records expire (the same in every process)
    churn: tuple[float, ...] = CHURN  # shares of nodes dead, one row each, in this order


class Population:
    """Every user's identity and records, derived from the run's seed so all processes agree
    (Ed25519 signatures are deterministic, so the same record has the same bytes everywhere)."""

    def __init__(self, seed: int, count: int, expires: int) -> None:
        rng = random.Random(seed)
        self.keys = [Identity(rng.randbytes(32)) for _ in range(count)]
        self.user_keys = [user.verify_key for user in self.keys]
        self._by_dht_key = {dht_key(k): i for i, k in enumerate(self.user_keys)}
        self._expires = expires
        self._records: dict[tuple[int, int], AddressRecord] = {}
        self._forged: dict[int, bytes] = {}
        self._attacker = Identity(rng.randbytes(32))

    def record(self, user: int, seq: int) -> AddressRecord:
        if (user, seq) not in self._records:
            self._records[user, seq] = AddressRecord.create(
                self.keys[user], NODE_KEY, [(f"u{user}.example", 2525)], seq, self._expires
            )
        return self._records[user, seq]

    def stale(self, key: bytes) -> bytes | None:
        """The owner's first record: valid, but older than the one it republished."""
        user = self._by_dht_key.get(key)
        return None if user is None else self.record(user, 1).encode()

    def forged(self, key: bytes) -> bytes | None:
        """For half the keys a record in the user's name signed by the attacker (with a seq
        far above the owner's), for the other half the attacker's own valid record."""
        user = self._by_dht_key.get(key)
        if user is None:
            return None
        if user not in self._forged:
            mine = AddressRecord.create(
                self._attacker, NODE_KEY, [("evil.example", 25)], NEWEST + 1000, self._expires
            )
            if key[0] & 1:
                mine = dataclasses.replace(mine, user_key=self.user_keys[user])
            self._forged[user] = mine.encode()
        return self._forged[user]

    def judge(self, user: int, value: bytes | None, now: float) -> str:
        newest = self.record(user, NEWEST).encode()
        if value is None:
            return "missing"
        if value == newest:
            return "ok"
        try:
            record = validated(dht_key(self.user_keys[user]), value, now)
        except RecordError:
            return "forged"
        return "stale" if record.seq < NEWEST else "forged"


class Worker:
    """The nodes of one process and the commands the coordinator sends it."""

    def __init__(self, config: Config, impl: str) -> None:
        self._config = config
        self._make = IMPLEMENTATIONS[impl]
        self._population = Population(config.seed, config.nodes, config.expires)
        self._nodes: dict[int, SimNode] = {}
        self._busy: dict[int, asyncio.Lock] = {}
        self._base_rss = rss_kib()

    async def cmd_start(self, batch: list[tuple[int, str, list[Address]]]) -> list[Any]:
        async def one(index: int, host: str, bootstrap: list[Address]) -> tuple[int, Address]:
            node = self._make(self._config.rpc_timeout)
            self._nodes[index] = node
            return index, await node.start(host, 0, bootstrap)

        return list(await asyncio.gather(*(one(*entry) for entry in batch)))

    async def cmd_publish(self, seq: int) -> int:
        """Every node publishes its user's record ``seq``; returns how many publishes failed."""
        limit = asyncio.Semaphore(self._config.concurrency)

        async def one(index: int, node: SimNode) -> bool:
            async with limit:
                try:
                    await asyncio.wait_for(
                        node.publish(self._population.record(index, seq)), PUBLISH_TIMEOUT
                    )
                except Exception:
                    return False
                return True

        done = await asyncio.gather(*(one(i, n) for i, n in list(self._nodes.items())))
        return done.count(False)

    async def cmd_kill(self, indices: list[int]) -> None:
        for index in indices:
            await self._nodes.pop(index).stop()

    async def cmd_malicious(
        self, indices: list[int], kind: str | None, attackers: list[Address]
    ) -> None:
        population = self._population

        def sybils(key: bytes) -> list[FakeContact]:
            return [
                (key[:5] + random.randbytes(15), host, port)
                for host, port in random.choices(attackers, k=SYBILS_PER_ANSWER)
            ]

        def announce(node_id: bytes) -> list[bytes]:
            return [node_id[:5] + random.randbytes(15) for _ in range(ANNOUNCED_IDS)]

        if kind is None:
            attack = None
        else:
            lie = {"forge": population.forged, "stale": population.stale}.get(
                kind, lambda key: None)
            attack = Attack(kind, lie=lie, sybils=sybils, announce=announce)
        await asyncio.gather(*(self._nodes[i].make_malicious(attack) for i in indices))

    async def cmd_lookups(self, pairs: list[tuple[int, int]]) -> list[tuple[str, float, int]]:
        async def one(delay: float, looker: int, target: int) -> tuple[str, float, int]:
            await asyncio.sleep(delay)
            node = self._nodes[looker]
            async with self._busy.setdefault(looker, asyncio.Lock()):
                before = node.rpcs_sent()
                start = time.perf_counter()
                try:
                    value = await asyncio.wait_for(
                        node.lookup(self._population.user_keys[target]), LOOKUP_TIMEOUT
                    )
                except Exception:  # a timeout or a crash in the implementation: not found
                    value = None
                latency = time.perf_counter() - start
                rpcs = node.rpcs_sent() - before
            return self._population.judge(target, value, time.time()), latency, rpcs

        rate = self._config.rate
        # One process holds hundreds of nodes (a real node's process holds one): a full
        # collection walks all their objects, up to a second with 500 nodes, and stalls every
        # node in the process. What exists now (the built network) is left out of collections,
        # for every implementation alike; what the lookups create is collected as usual.
        gc.collect()
        gc.freeze()
        return list(await asyncio.gather(*(one(k / rate, *pair) for k, pair in enumerate(pairs))))

    async def cmd_stats(self, honest: list[int]) -> dict[str, int]:
        hosts = [h for i in honest if i in self._nodes for h in self._nodes[i].contact_hosts()]
        return {
            "nodes": len(self._nodes),
            "rss_growth": rss_kib() - self._base_rss,
            "contacts": len(hosts),
            "attacker_contacts": hosts.count(ATTACKER_HOST),
        }

    async def cmd_stop(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.stop()


async def _serve(conn: Connection, config: Config, impl: str) -> None:
    worker = Worker(config, impl)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()

    def readable() -> None:
        try:
            while conn.poll():
                inbox.put_nowait(conn.recv())
        except (EOFError, OSError):  # the coordinator is gone: stop
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop", ()))

    loop.add_reader(conn.fileno(), readable)
    conn.send(("ok", None))
    try:
        while True:
            name, args = await inbox.get()
            try:
                result = await getattr(worker, f"cmd_{name}")(*args)
                reply: tuple[str, Any] = ("ok", result)
            except Exception:
                reply = ("error", traceback.format_exc())
            if name == "stop":
                break
            conn.send(reply)
    finally:
        await worker.cmd_stop()
    with contextlib.suppress(OSError):
        conn.send(("ok", None))


def _worker_main(conn: Connection, config: Config, impl: str) -> None:
    # Timeouts and dropped contacts are the point of the exercise, not news: keep stderr quiet.
    logging.disable(logging.CRITICAL)
    asyncio.run(_serve(conn, config, impl))


class Cluster:
    """The worker processes of one network; node i lives in worker i % procs."""

    def __init__(self, config: Config, impl: str) -> None:
        self.procs = config.procs
        context = multiprocessing.get_context("fork")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        try:
            for _ in range(config.procs):
                parent, child = context.Pipe()
                process = context.Process(
                    target=_worker_main, args=(child, config, impl), daemon=True
                )
                process.start()
                child.close()
                self._conns.append(parent)
                self._processes.append(process)
            for conn in self._conns:
                self._receive(conn)
        except BaseException:
            self.close()
            raise

    def owner(self, index: int) -> int:
        return index % self.procs

    def split(self, indices: Iterable[int]) -> list[list[int]]:
        parts: list[list[int]] = [[] for _ in range(self.procs)]
        for index in indices:
            parts[self.owner(index)].append(index)
        return parts

    def call(self, name: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send each worker its command and wait for every answer (in any order, so a worker
        never blocks on a full pipe while its nodes have work to do for the others)."""
        for conn, arg in zip(self._conns, args, strict=True):
            conn.send((name, arg))
        results: list[Any] = [None] * self.procs
        pending = {id(conn): n for n, conn in enumerate(self._conns)}
        deadline = time.monotonic() + CALL_TIMEOUT
        while pending:
            ready = wait([self._conns[n] for n in pending.values()],
                         max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"workers did not finish {name!r} in {CALL_TIMEOUT:.0f} s")
            for ready_conn in ready:
                assert isinstance(ready_conn, Connection)
                results[pending.pop(id(ready_conn))] = self._receive(ready_conn)
        return results

    def everyone(self, name: str, *args: Any) -> list[Any]:
        return self.call(name, [args] * self.procs)

    @staticmethod
    def _receive(conn: Connection) -> Any:
        status, value = conn.recv()
        if status != "ok":
            raise RuntimeError(f"a worker failed:\n{value}")
        return value

    def close(self) -> None:
        """Stop the nodes, then the processes; whatever happened, none is left running."""
        try:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.send(("stop", ()))
            for process in self._processes:
                process.join(10)
        finally:
            for process in self._processes:
                if process.is_alive():
                    process.terminate()
                    process.join(5)
                if process.is_alive():
                    process.kill()
                    process.join()
            for conn in self._conns:
                conn.close()


@dataclass
class Row:
    impl: str
    scenario: str
    outcomes: Counter[str]
    latencies: list[float]
    rpcs: list[int]
    kib_per_node: float
    build_s: float
    lookup_s: float
    publish_failures: int
    attacker_share: float | None = None

    @property
    def success(self) -> float:
        return self.outcomes["ok"] / max(1, sum(self.outcomes.values()))

    def percentile(self, p: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else 0.0
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]


def build(cluster: Cluster, config: Config, rng: random.Random, attackers: set[int],
          ) -> dict[int, Address]:
    """Start every node, in batches that double up to MAX_BATCH; each joins through up to
    BOOTSTRAP_PEERS random nodes started before it."""
    addresses: dict[int, Address] = {}
    started: list[int] = []
    batch = 1
    while len(started) < config.nodes:
        chunk = range(len(started), min(config.nodes, len(started) + batch))
        parts: list[list[tuple[int, str, list[Address]]]] = [[] for _ in range(cluster.procs)]
        for index in chunk:
            host = ATTACKER_HOST if index in attackers else host_for(index)
            peers = rng.sample(started, min(BOOTSTRAP_PEERS, len(started)))
            parts[cluster.owner(index)].append((index, host, [addresses[p] for p in peers]))
        for part in cluster.call("start", [(part,) for part in parts]):
            for index, address in part:
                addresses[index] = tuple(address)
        started.extend(chunk)
        batch = min(MAX_BATCH, 2 * batch)
    return addresses


def lookups(cluster: Cluster, config: Config, rng: random.Random, lookers: set[int],
            targets: set[int]) -> tuple[Counter[str], list[float], list[int], float]:
    looker_list, target_list = sorted(lookers), sorted(targets)
    parts: list[list[tuple[int, int]]] = [[] for _ in range(cluster.procs)]
    for _ in range(config.lookups):
        looker = rng.choice(looker_list)
        target = rng.choice([t for t in rng.sample(target_list, 2) if t != looker])
        parts[cluster.owner(looker)].append((looker, target))
    start = time.monotonic()
    results = [r for part in cluster.call("lookups", [(p,) for p in parts]) for r in part]
    elapsed = time.monotonic() - start
    outcomes = Counter(outcome for outcome, _, _ in results)
    return outcomes, [lat for _, lat, _ in results], [rpcs for _, _, rpcs in results], elapsed


def run_network(config: Config, impl: str, scenarios: Sequence[str]) -> list[Row]:
    """Build a network of ``impl`` nodes, publish twice, and measure ``scenarios`` in turn:
    either the churn rows or the attacks (the two never share a network)."""
    churn = "churn" in scenarios
    rng = random.Random(f"{config.seed}-{churn}")  # the same choices for every implementation
    n = config.nodes
    everyone = set(range(n))
    liars: set[int] = set()
    eclipsers: set[int] = set()
    if not churn:
        bad = max(1, round(n * MALICIOUS_SHARE))
        chosen = rng.sample(range(1, n), 2 * bad if "eclipse" in scenarios else bad)
        liars, eclipsers = set(chosen[:bad]), set(chosen[bad:])
    cluster = Cluster(config, impl)
    rows: list[Row] = []
    try:
        start = time.monotonic()
        addresses = build(cluster, config, rng, eclipsers)
        failures = sum(cluster.everyone("publish", 1)) + sum(cluster.everyone("publish", NEWEST))
        build_s = time.monotonic() - start
        kib = sum(s["rss_growth"] for s in cluster.everyone("stats", [])) / n

        def measure(name: str, lookers: set[int], targets: set[int],
                    share: float | None = None) -> None:
            outcomes, latencies, rpcs, elapsed = lookups(cluster, config, rng, lookers, targets)
            rows.append(Row(impl, name, outcomes, latencies, rpcs, kib, build_s, elapsed,
                            failures, share))

        if churn:
            live = set(everyone)
            for dying in config.churn:
                dead = rng.sample(sorted(live), round(n * dying) - (n - len(live)))
                cluster.call("kill", [(part,) for part in cluster.split(dead)])
                live -= set(dead)
                measure(f"{dying:.0%} churn", live, everyone)
            return rows
        honest = everyone - liars - eclipsers
        # Each attack looks up its own users: kademlia caches what a lookup believed at the
        # nodes it asked, and that must not leak into the next attack's row.
        order = rng.sample(sorted(honest), len(honest))
        attacks = [s for s in SCENARIOS if s in scenarios]
        attacker_addresses = [addresses[i] for i in sorted(eclipsers)]
        for k, attack in enumerate(attacks):
            malicious = eclipsers if attack == "eclipse" else liars
            pool = set(order[k::len(attacks)])
            cluster.call("malicious", [(part, attack, attacker_addresses)
                                       for part in cluster.split(sorted(malicious))])
            share: float | None = None
            if attack == "eclipse":  # measured after the announcements, before the lookups
                stats = cluster.call("stats", [(part,) for part in cluster.split(honest)])
                share = sum(s["attacker_contacts"] for s in stats) / max(
                    1, sum(s["contacts"] for s in stats))
            measure(f"10% {attack}", honest, pool, share)
            cluster.call("malicious", [(part, None, []) for part in cluster.split(malicious)])
    finally:
        cluster.close()
    return rows


def run(config: Config, progress: bool = False) -> list[Row]:
    """Every scenario for every implementation: one network for the churn rows and one for
    the attacks, per implementation."""
    groups = [g for g in (("churn",), tuple(s for s in config.scenarios if s != "churn"))
              if set(g) & set(config.scenarios)]
    rows: list[Row] = []
    for group in groups:
        for impl in config.impls:
            new = run_network(config, impl, group)
            rows += new
            if progress:  # each network's rows as they come (a long run shows its state)
                print(table(new), file=sys.stderr, flush=True)
    return rows


def table(rows: list[Row]) -> str:
    """The rows as a table, implementations side by side per scenario; ``p50 x`` is the p50
    over the first implementation's in the same scenario."""
    head = (f"{'impl':<9} {'scenario':<13} {'success':>8} {'forged':>6} {'stale':>5} "
            f"{'missing':>7} {'RPCs':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
            f"{'p50 x':>6} {'KiB/node':>8} {'build s':>7} {'pub fail':>8} {'lookups s':>9} "
            f"{'sybil':>6}")
    lines = [head, "-" * len(head)]
    first: dict[str, float] = {}
    scenarios = list(dict.fromkeys(row.scenario for row in rows))
    for row in sorted(rows, key=lambda r: scenarios.index(r.scenario)):  # stable: impl order
        p50 = row.percentile(50) * 1000
        base = first.setdefault(row.scenario, p50)
        sybil = "" if row.attacker_share is None else f"{row.attacker_share:.1%}"
        lines.append(
            f"{row.impl:<9} {row.scenario:<13} {row.success:>8.1%} {row.outcomes['forged']:>6} "
            f"{row.outcomes['stale']:>5} {row.outcomes['missing']:>7} "
            f"{statistics.fmean(row.rpcs) if row.rpcs else 0:>5.1f} {p50:>7.0f} "
            f"{row.percentile(95) * 1000:>7.0f} {row.percentile(99) * 1000:>7.0f} "
            f"{p50 / base if base else 0:>6.2f} {row.kib_per_node:>8.1f} {row.build_s:>7.1f} "
            f"{row.publish_failures:>8} {row.lookup_s:>9.1f} {sybil:>6}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--lookups", type=int, default=500, help="per scenario row")
    parser.add_argument("--impl", default="kademlia,mailnode",
                        help=f"comma-separated, from: {', '.join(IMPLEMENTATIONS)}")
    parser.add_argument("--scenarios", default="all",
                        help=f"'all' or comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="lookups started per second per process (open loop: a slow "
                             "lookup does not hold back the next)")
    parser.add_argument("--rpc-timeout", type=float, default=5.0,
                        help="seconds before an unanswered RPC counts as failed (both "
                             "implementations default to 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="150 nodes, 100 lookups")
    args = parser.parse_args(argv)
    impls = tuple(args.impl.split(","))
    scenarios = SCENARIOS if args.scenarios == "all" else tuple(args.scenarios.split(","))
    unknown = [i for i in impls if i not in IMPLEMENTATIONS] + [
        s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown implementation or scenario: {', '.join(unknown)}")
    nodes, count = (150, 100) if args.quick else (args.nodes, args.lookups)
    if not 10 <= nodes <= 60_000 or args.procs < 1 or count < 1:
        parser.error("--nodes must be 10..60000, --procs and --lookups at least 1")
    config = Config(nodes, args.procs, count, impls, scenarios, args.seed, PUBLISH_CONCURRENCY,
                    args.rate, args.rpc_timeout, int(time.time()) + 6 * 3600)
    print(f"{nodes} nodes in {args.procs} processes, {count} lookups per row started at "
          f"{args.rate:g}/s per process, RPC timeout {args.rpc_timeout:g} s, seed {args.seed}")
    start = time.monotonic()
    rows = run(config, progress=True)
    print(table(rows))
    print(f"wall time {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
