"""End to end: two real nodes on loopback, alice on A writes to bob on B.

Nodes are started through the CLI (as the e2e tests do); alice submits over SMTP to node A,
bob IDLEs on node B's IMAP. Measured, all in one run:

- latency from the ``250`` that accepts a message on A to bob's ``* N EXISTS`` on B, one
  message at a time (each latency is clean), p50/p95/p99;
- sustained throughput, first submission to last EXISTS, for 4 KB and 1 MB messages sent
  over several SMTP connections at once;
- SMTP submission rate (each ``250`` after a durable commit) against aiosmtpd with a no-op
  handler, 16 connections, as ``bench.smtp_submission`` measures it.

Targets (issue 6): p50 <= 50 ms, p99 <= 250 ms, >= 300 small messages/s end to end,
submission >= 0.8x the no-op rate. Run: ``python -m bench.e2e [--latency N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import smtp_submission
from mailnode.runstate import read_status
from tests.e2e.nodes import NodeProcess, cli, wait_until

SETTINGS: dict[str, object] = {
    "max_messages_per_minute": 10_000_000, "max_inbound_per_minute": 10_000_000,
    "retry_initial": 0.5, "retry_max": 2.0,
}
EXISTS = re.compile(rb"^\* (\d+) EXISTS\r\n$")


class Idler:
    """bob's IMAP session in IDLE on INBOX: a raw socket, timestamps every EXISTS."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()
        self.seen_at: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, port: int, login: str, password: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        for tag, command in (("a", f"LOGIN {login} {password}"), ("b", "SELECT INBOX")):
            writer.write(f"{tag} {command}\r\n".encode())
            while not (line := await reader.readline()).startswith(tag.encode() + b" "):
                if found := EXISTS.match(line):
                    self.count = int(found[1])
            assert b" OK" in line, line
        writer.write(b"c IDLE\r\n")
        assert (await reader.readline()).startswith(b"+"), "IDLE refused"
        self._task = asyncio.create_task(self._listen(reader))
        self._writer = writer

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            if found := EXISTS.match(line):
                now = time.perf_counter()
                count = int(found[1])
                for n in range(self.count + 1, count + 1):
                    self.seen_at[n] = now
                self.count = max(self.count, count)
                self.changed.set()

    async def reach(self, count: int, timeout: float) -> float:
        """When the mailbox reached ``count`` messages."""
        async with asyncio.timeout(timeout):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()
        return self.seen_at[count]

    async def stop(self) -> None:
        self._writer.write(b"DONE\r\nz LOGOUT\r\n")
        self._writer.close()
        if self._task is not None:
            self._task.cancel()


class Submitter:
    """One logged-in SMTP session on node A."""

    def __init__(self, sender: str, rcpt: str) -> None:
        self.sender, self.rcpt = sender, rcpt

    async def start(self, port: int, login: str, password: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        await self._reply()
        await self._cmd("EHLO bench", b"250")
        blob = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        await self._cmd(f"AUTH PLAIN {blob}", b"235")

    async def _reply(self) -> bytes:
        while True:
            line = await self.reader.readline()
            if line[3:4] != b"-":
                return line

    async def _cmd(self, text: str, expect: bytes) -> None:
        self.writer.write(text.encode() + b"\r\n")
        line = await self._reply()
        assert line.startswith(expect), (text, line)

    async def send(self, data: bytes) -> float:
        """Submit one message; the time its 250 arrived."""
        await self._cmd(f"MAIL FROM:<{self.sender}> SIZE={len(data)}", b"250")
        await self._cmd(f"RCPT TO:<{self.rcpt}>", b"250")
        await self._cmd("DATA", b"354")
        self.writer.write(data + b".\r\n")
        line = await self._reply()
        at = time.perf_counter()
        assert line.startswith(b"250"), line
        return at

    async def stop(self) -> None:
        self.writer.write(b"QUIT\r\n")
        self.writer.close()


def compose(sender: str, rcpt: str, size: int, n: int) -> bytes:
    head = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench {n}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


@dataclass
class Net:
    a: NodeProcess
    b: NodeProcess
    alice: str
    bob: str


async def latency(net: Net, count: int) -> list[float]:
    idler = Idler()
    await idler.start(net.b.imap_port, "bob", "bob-pass")
    smtp = Submitter(net.alice, net.bob)
    await smtp.start(net.a.smtp_port, "alice", "alice-pass")
    try:
        # One message first: the first delivery looks bob's record up in the DHT and opens
        # the connection between the nodes; steady state is what is measured.
        await smtp.send(compose(net.alice, net.bob, 1024, 0))
        await idler.reach(idler.count + 1, 60)
        out = []
        for i in range(count):
            target = idler.count + 1
            accepted = await smtp.send(compose(net.alice, net.bob, 1024, i))
            out.append(await idler.reach(target, 60) - accepted)
        return out
    finally:
        await smtp.stop()
        await idler.stop()


async def throughput(net: Net, size: int, count: int, connections: int,
                     ) -> tuple[float, float]:
    """(messages/s end to end, messages/s accepted by SMTP) for ``count`` messages."""
    idler = Idler()
    await idler.start(net.b.imap_port, "bob", "bob-pass")
    sessions = [Submitter(net.alice, net.bob) for _ in range(connections)]
    for session in sessions:
        await session.start(net.a.smtp_port, "alice", "alice-pass")
    data = compose(net.alice, net.bob, size, 0)
    target = idler.count + count
    try:
        async def run(session: Submitter, share: int) -> float:
            last = 0.0
            for _ in range(share):
                last = await session.send(data)
            return last
        start = time.perf_counter()
        shares = [count // connections + (i < count % connections) for i in range(connections)]
        accepted = max(await asyncio.gather(*(run(s, n) for s, n in zip(sessions, shares,
                                                                      strict=True))))
        done = await idler.reach(target, 600)
        return count / (done - start), count / (accepted - start)
    finally:
        for session in sessions:
            await session.stop()
        await idler.stop()


def start_network(root: Path) -> Net:
    a = NodeProcess.init(root / "a", [], **SETTINGS)
    b = NodeProcess.init(root / "b", [a.p2p_port], **SETTINGS)
    alice = cli(a.data_dir, "user", "add", "alice", password="alice-pass").splitlines()[-1]
    bob = cli(b.data_dir, "user", "add", "bob", password="bob-pass").splitlines()[-1]
    a.start()
    b.start()

    def settled(node: NodeProcess) -> Callable[[], bool]:
        def check() -> bool:
            status = read_status(node.data_dir)
            return (status is not None and status["dht_peers"] >= 1
                    and status["records_published"] >= 1)
        return check
    wait_until(lambda: settled(a)() and settled(b)(), 60, "both nodes to join and publish")
    return Net(a, b, alice, bob)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=int, default=500, help="messages for latency")
    parser.add_argument("--small", type=int, default=2000, help="4 KB messages for throughput")
    parser.add_argument("--large", type=int, default=100, help="1 MB messages for throughput")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        net = start_network(Path(tmp))
        try:
            lat = asyncio.run(latency(net, args.latency))
            ms = [x * 1000 for x in lat]
            rows += [
                (f"latency 250 -> EXISTS, n={len(ms)}, p50", f"{percentile(ms, 50):8.1f} ms",
                 "<= 50 ms"),
                ("latency p95", f"{percentile(ms, 95):8.1f} ms", ""),
                ("latency p99", f"{percentile(ms, 99):8.1f} ms", "<= 250 ms"),
                ("latency mean / max", f"{statistics.mean(ms):5.1f} / {max(ms):.0f} ms", ""),
                ("latencies over 1 s", f"{sum(x > 1000 for x in ms):8d}", ""),
            ]
            for label, size, count, target in (("4 KB", 4096, args.small, ">= 300 msg/s"),
                                               ("1 MB", 1 << 20, args.large, "")):
                e2e, smtp = asyncio.run(throughput(net, size, count, args.connections))
                rows.append((f"throughput {label}, {count} msgs, {args.connections} conns",
                             f"{e2e:8.1f} msg/s", target))
                rows.append((f"  of which SMTP accepted ({label})", f"{smtp:8.1f} msg/s", ""))
        finally:
            net.b.stop()
            net.a.stop()
        for name, node in (("A", net.a), ("B", net.b)):
            troubles = [line.rstrip() for line in node.log
                        if (" WARNING " in line or " ERROR " in line)
                        and "login_data is deprecated" not in line]
            for line in troubles[:5]:
                print(f"node {name}: {line}")
            if len(troubles) > 5:
                print(f"node {name}: ... {len(troubles) - 5} more warnings")
    rows += smtp_submission.summary(*smtp_submission.measure())
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>16}  {target}")


if __name__ == "__main__":
    main()
