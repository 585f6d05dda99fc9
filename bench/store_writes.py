"""How much the store's write path costs over raw sqlite3 doing the same durable commits.

Baseline: plain ``sqlite3`` in WAL + synchronous=FULL doing the same statements per message
(BEGIN IMMEDIATE, read uidnext, INSERT, UPDATE uidnext, COMMIT) on the calling thread.
Measured: ``SqlStore.append`` (SQLAlchemy Core, BEGIN IMMEDIATE, uid allocation, the database
thread and the event-loop hop), one at a time and 16 at once (the database thread then commits
the queued appends as a group, one fsync for all). Run: ``python -m bench.store_writes``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from crypto.keys import Identity
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

N = 1000
WARMUP = 500
BODY = b"From: a@b\r\nSubject: bench\r\n\r\n" + b"x" * 2000 + b"\r\n"


def baseline(path: Path) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, uid INTEGER, body BLOB)")
    conn.execute("CREATE TABLE box (id INTEGER PRIMARY KEY, uidnext INTEGER)")
    conn.execute("INSERT INTO box VALUES (1, 1)")
    start = 0.0
    for i in range(WARMUP + N):
        if i == WARMUP:
            start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        uid = conn.execute("SELECT uidnext FROM box WHERE id = 1").fetchone()[0]
        conn.execute("INSERT INTO m (uid, body) VALUES (?, ?)", (uid, BODY))
        conn.execute("UPDATE box SET uidnext = ? WHERE id = 1", (uid + 1,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def ours(path: Path, concurrent: int) -> float:
    db = Database.open(path)
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("bench", "password1", Identity(b"\1" * 32))
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for _ in range(WARMUP):  # the WAL file grows (and fsyncs more) on a fresh database
        await store.append(inbox.id, BODY, frozenset(), None)
    start = time.perf_counter()
    for _ in range(N // concurrent):
        await asyncio.gather(*(store.append(inbox.id, BODY, frozenset(), None)
                               for _ in range(concurrent)))
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline(Path(tmp) / "base.db")
        serial = asyncio.run(ours(Path(tmp) / "ours1.db", 1))
        parallel = asyncio.run(ours(Path(tmp) / "ours16.db", 16))
    print(f"messages: {N} x {len(BODY)} bytes, each durably committed before it returns")
    print(f"raw sqlite3 baseline      : {N / base:8.0f} msg/s (1.00)")
    print(f"SqlStore.append, serial   : {N / serial:8.0f} msg/s ({base / serial:.2f} of baseline)")
    print(f"SqlStore.append, 16 at once: {N / parallel:8.0f} msg/s "
          f"({base / parallel:.2f} of baseline)")


if __name__ == "__main__":
    main()
