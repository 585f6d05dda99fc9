"""One large INBOX in mailnode and in Debian's Dovecot, same messages, same client, same run.

Times what a client does with a big mailbox: SELECT, ``UID FETCH 1:* (FLAGS)``, ``UID SEARCH
UNSEEN``, a header FETCH of the newest 50, SORT, THREAD and a header SEARCH, a one-message
STORE until a second session sees it, and an APPEND until five other selected sessions see it
-- once with the others polling NOOP (what catching up costs) and once with them in IDLE
(Dovecot delays IDLE notifications by design, so that row measures its timer more than its
work). Each operation runs ``--repeat`` times (at least ``FAST_REPEAT`` for the sub-millisecond
rows) after one warm-up (the first SELECT after loading is reported apart: Dovecot builds its
index there). The messages are written once as a Maildir; Dovecot serves that Maildir and
mailnode imports it (``mailnode import``) before it starts.

Run: ``python -m bench.imap_scale [--messages 100000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from bench.imap_commands import start_dovecot
from bench.imap_load import wait_listening
from tests.e2e.nodes import NodeProcess, cli, free_port

USER, PASSWORD = "scaleuser", "scale-password-for-bench"
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class Client:
    """A minimal IMAP client over asyncio streams: whole responses, literals read through."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._tags = 0

    @classmethod
    async def login(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        client = cls(reader, writer)
        await client.line()  # greeting
        await client.command(f"LOGIN {USER} {PASSWORD}")
        return client

    async def line(self) -> bytes:
        """One response line with any literals it carries."""
        data = await self.reader.readline()
        if not data:
            raise ConnectionError("server closed the connection")
        while (m := _LITERAL.search(data)) is not None:
            data += await self.reader.readexactly(int(m.group(1)))
            data += await self.reader.readline()
        return data

    async def command(self, text: str) -> list[bytes]:
        self._tags += 1
        tag = f"b{self._tags}".encode()
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        untagged: list[bytes] = []
        while True:
            data = await self.line()
            if data.startswith(tag + b" "):
                if not data.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:40]!r} failed: {data[:200]!r}")
                return untagged
            untagged.append(data)

    async def idle(self) -> None:
        self._tags += 1
        self._idle_tag = f"b{self._tags}".encode()
        self.writer.write(self._idle_tag + b" IDLE\r\n")
        while not (await self.line()).startswith(b"+"):
            pass

    async def wait_for(self, pattern: re.Pattern[bytes]) -> None:
        while not pattern.search(await self.line()):
            pass

    async def done(self) -> None:
        self.writer.write(b"DONE\r\n")
        while not (await self.line()).startswith(self._idle_tag + b" "):
            pass

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def write_maildir(root: Path, count: int) -> None:
    """``count`` different messages, about 2 KB each, a tenth unseen, a few flagged."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    base = 1_700_000_000
    for i in range(count):
        flags = "" if i % 10 == 3 else ("FS" if i % 50 == 0 else "S")
        body = (f"From: Sender {i % 97} <s{i % 97}@example.org>\r\n"
                f"To: {USER}@example.org\r\nSubject: message {i} about topic {i % 31}\r\n"
                f"Message-ID: <{i}.scale@example.org>\r\n"
                f"Date: Tue, 14 Nov 2023 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
                " +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                + f"line {i} of a message body that is long enough to be typical\r\n" * 28)
        path = root / "cur" / f"{base + i}.{i:08d}.bench:2,{flags}"
        path.write_bytes(body.encode())
        os.utime(path, (base + i, base + i))


async def timed(repeat: int, op: Callable[[], Awaitable[object]]) -> float:
    """Median seconds of ``repeat`` runs after one warm-up run."""
    await op()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        await op()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


FAST_REPEAT = 200
"""Runs of the sub-millisecond rows (SEARCH UNSEEN, the header FETCH): a median of a few
single runs of 0.5 ms moves by more than the difference measured."""

_FETCH = re.compile(rb"^\* \d+ FETCH")
_EXISTS = re.compile(rb"^\* \d+ EXISTS")
MESSAGE = b"From: a@example.org\r\nSubject: new\r\n\r\nhello\r\n"


async def measure(port: int, count: int, repeat: int) -> dict[str, float]:
    results: dict[str, float] = {}
    main = await Client.login(port)
    start = time.perf_counter()
    await main.command("SELECT INBOX")
    results["first SELECT (cold)"] = time.perf_counter() - start
    results["SELECT INBOX"] = await timed(repeat, lambda: main.command("SELECT INBOX"))
    results["UID FETCH 1:* (FLAGS)"] = await timed(
        repeat, lambda: main.command("UID FETCH 1:* (FLAGS)"))
    fast = max(repeat, FAST_REPEAT)
    results["UID SEARCH UNSEEN"] = await timed(fast, lambda: main.command("UID SEARCH UNSEEN"))
    results["FETCH newest 50 headers"] = await timed(fast, lambda: main.command(
        f"FETCH {count - 49}:* (UID BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"))
    # What the "header fields used by SEARCH/SORT/THREAD in indexed columns" is for.
    for name, command in (("SORT (SUBJECT)", "UID SORT (SUBJECT) UTF-8 ALL"),
                          ("THREAD REFERENCES", "UID THREAD REFERENCES UTF-8 ALL"),
                          ("SEARCH FROM", 'UID SEARCH FROM "s7@"')):
        results[name] = await timed(repeat, partial(main.command, command))

    watchers = [await Client.login(port) for _ in range(5)]
    for w in watchers:
        await w.command("SELECT INBOX")
    flip = [False]

    async def store() -> None:
        flip[0] = not flip[0]
        await main.command(f"STORE {count // 2} {'+' if flip[0] else '-'}FLAGS (\\Flagged)")

    async def append() -> None:
        await main.command(f"APPEND INBOX {{{len(MESSAGE)}+}}\r\n{MESSAGE.decode()}")

    async def polled(client: Client, pattern: re.Pattern[bytes]) -> None:
        while not any(pattern.search(line) for line in await client.command("NOOP")):
            pass

    async def store_polled() -> None:
        await store()
        await polled(watchers[0], _FETCH)

    async def append_polled() -> None:
        await append()
        await asyncio.gather(*(polled(w, _EXISTS) for w in watchers))

    results["STORE seen by another (NOOP)"] = await timed(repeat, store_polled)
    results["APPEND seen by 5 others (NOOP)"] = await timed(repeat, append_polled)
    for w in watchers:
        await w.idle()

    async def store_idle() -> None:
        seen = asyncio.ensure_future(watchers[0].wait_for(_FETCH))
        await store()
        await seen

    async def append_idle() -> None:
        seen = [asyncio.ensure_future(w.wait_for(_EXISTS)) for w in watchers]
        await append()
        await asyncio.gather(*seen)

    results["STORE seen by another (IDLE)"] = await timed(repeat, store_idle)
    results["APPEND seen by 5 others (IDLE)"] = await timed(repeat, append_idle)
    for w in watchers:
        await w.done()
        await w.close()
    await main.close()
    return results


def against_dovecot(maildir: Path, tmp: Path, count: int, repeat: int) -> dict[str, float] | None:
    port = free_port()
    home = tmp / "home"
    proc = start_dovecot(tmp, port, USER, PASSWORD)
    if proc is None:
        return None
    try:
        shutil.copytree(maildir, home / USER / "Maildir")
        if os.getuid() == 0:
            import pwd
            nobody = pwd.getpwnam("nobody")
            for path in [home / USER, *(home / USER).rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        wait_listening(port)
        return asyncio.run(measure(port, count, repeat))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def against_mailnode(maildir: Path, tmp: Path, count: int, repeat: int,
                     ) -> tuple[dict[str, float], float]:
    node = NodeProcess.init(tmp, [], max_messages_per_minute=1_000_000,
                            max_sessions_per_user=1000, failed_login_delay=0.0)
    cli(tmp, "user", "add", USER, password=PASSWORD)
    start = time.perf_counter()
    cli(tmp, "import", USER, str(maildir), timeout=3600)
    imported = time.perf_counter() - start
    node.start()
    try:
        return asyncio.run(measure(node.imap_port, count, repeat)), imported
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        maildir = Path(a) / "Maildir"
        write_maildir(maildir, args.messages)
        base = against_dovecot(maildir, Path(b), args.messages, args.repeat)
        (Path(a) / "node").mkdir()
        ours, imported = against_mailnode(maildir, Path(a) / "node", args.messages, args.repeat)
    print(f"one INBOX of {args.messages} messages; median of {args.repeat} after a warm-up, "
          f"of {max(args.repeat, FAST_REPEAT)} for the sub-millisecond rows "
          f"(mailnode import took {imported:.1f} s)")
    print(f"{'operation':32} {'dovecot':>10} {'mailnode':>10} {'ratio':>7}")
    for name, ours_s in ours.items():
        theirs = base.get(name) if base else None
        ratio = f"{ours_s / theirs:6.2f}x" if theirs else "   n/a"
        shown = f"{theirs * 1000:8.1f}ms" if theirs is not None else "       n/a"
        print(f"{name:32} {shown:>10} {ours_s * 1000:8.1f}ms {ratio:>7}")
    if base is None:
        print("dovecot not installed (apt-get install dovecot-imapd): no baseline")


if __name__ == "__main__":
    main()
