"""Memory per open connection that never logs in, on each listener of a real node.

A node process is started through the CLI; strangers (from many loopback addresses, so
per-source caps do not turn them away) open connections and leave them half-way: IMAP and
SMTP after a partial command line, the transfer port after a partial TLS ClientHello. The
node's RSS growth divided by the connections held is the figure. Baseline, in the same run:
the same against aiosmtpd with a no-op handler in a process of its own.
Run: ``python -m bench.connection_memory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.nodes import NodeProcess

CONNECTIONS = 200
BASELINE_SERVER = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class H:
    async def handle_DATA(self, *a): return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(H()), "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def hold(port: int, first_bytes: bytes, block: int,
               ) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    held = []
    for i in range(CONNECTIONS):
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(f"127.{block}.{i // 250}.{i % 250 + 1}", 0))
            writer.write(first_bytes)
            held.append((reader, writer))
    await asyncio.sleep(1.0)  # let the server read, refuse what is over its limits, settle
    return held


async def still_open(reader: asyncio.StreamReader) -> bool:
    """Whether the server kept the connection (a refused one was closed: EOF)."""
    try:
        await asyncio.wait_for(reader.read(1 << 16), 0.01)
    except TimeoutError:
        pass
    except OSError:  # reset: refused
        return False
    return not reader.at_eof()


async def measure(pid: int, port: int, first_bytes: bytes, block: int) -> tuple[float, int]:
    before = rss_kib(pid)
    held = await hold(port, first_bytes, block)
    after = rss_kib(pid)
    kept = sum([await still_open(reader) for reader, _ in held])
    for _, writer in held:
        writer.close()
    return (after - before) / max(1, kept), kept


async def main_async() -> None:
    base = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert base.stdout is not None
        port = int(base.stdout.readline())
        base_kib, n = await measure(base.pid, port, b"EHLO x\r\nMAIL FROM:<a@b", 10)
        print(f"aiosmtpd no-op, {n} connections : {base_kib:6.1f} KiB per connection (1.00)")
    finally:
        base.kill()
        base.wait()
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess.init(Path(tmp) / "n", [])
        node.start()
        try:
            assert node.proc is not None
            pid = node.proc.pid
            for name, port, data, block in (
                    ("SMTP", node.smtp_port, b"EHLO x\r\nAUTH PLAIN", 11),
                    ("IMAP", node.imap_port, b"a LOGIN alice {8}\r\npart", 12),
                    ("transfer", node.p2p_port, b"\x16\x03\x01\x02\x00", 13)):
                kib, n = await measure(pid, port, data, block)
                ratio = kib / base_kib if base_kib > 0 else float("nan")
                print(f"mailnode {name:8}, {n} connections : {kib:6.1f} KiB per connection "
                      f"({ratio:.2f} of baseline)")
        finally:
            node.stop()
    time.sleep(0)


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
