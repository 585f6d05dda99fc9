"""IMAP's reads run on reader connections beside the single writer (SQLite WAL): a listing
never waits for a commit in progress, and it sees every write whose ``run`` returned."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from crypto.keys import Identity
from mailnode.store.database import Connection, Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore


async def test_a_listing_does_not_wait_for_the_writer(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "r.db")
    try:
        store = SqlStore(db, ChangeNotifier())
        user = await store.create_user("reader", "password1", Identity.generate())
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        await store.append(inbox.id, b"Subject: a\r\n\r\nx\r\n", frozenset(), None)
        release = threading.Event()
        entered = threading.Event()

        def hold_the_writer(_conn: Connection) -> None:  # a long write transaction
            entered.set()
            assert release.wait(30)

        held = asyncio.ensure_future(db.run(hold_the_writer))
        assert await asyncio.to_thread(entered.wait, 30)
        # The writer is inside its transaction: reads still answer, from the last commit.
        listing, highest = await asyncio.wait_for(store.snapshot(inbox.id), 30)
        assert [m.uid for m in listing] == [1] and highest == 2
        feed = await asyncio.wait_for(store.changes_since(inbox.id, 1), 30)
        assert [m.uid for m in feed.changed] == [1]
        assert await asyncio.wait_for(store.fetch_bodies(inbox.id, [1]), 30) == {
            1: b"Subject: a\r\n\r\nx\r\n"}
        assert not held.done()
        release.set()
        await held
        # Read-your-writes: once a write returned, every reader sees it.
        await store.store_flags(inbox.id, [1], frozenset({"\\Seen"}), "add")
        for _ in range(Database.READERS * 2):
            feed = await store.changes_since(inbox.id, 2)
            assert [(m.uid, "\\Seen" in m.flags) for m in feed.changed] == [(1, True)]
    finally:
        db.close()


async def test_readers_cannot_write(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "r.db")
    try:
        def write(conn: Connection) -> None:
            conn.execute("INSERT INTO counters (name, value) VALUES ('x', 1)")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.read(write)
    finally:
        db.close()


async def test_each_read_is_one_snapshot(tmp_path: Path) -> None:
    """Each read runs inside its own snapshot; a job that fails or ends its transaction
    itself does not leave the reader connection stuck for the next jobs."""
    db = Database.open(tmp_path / "r.db")
    try:
        def counted(conn: Connection) -> tuple[int, bool]:
            in_snapshot = conn.in_transaction
            return conn.execute("SELECT count(*) FROM counters").fetchone()[0], in_snapshot

        def fails(conn: Connection) -> None:
            conn.execute("SELECT 1")
            raise ValueError("job failed")

        def commits_itself(conn: Connection) -> None:
            conn.execute("COMMIT")  # ends the snapshot early; the reader copes

        for _ in range(Database.READERS * 2):
            with pytest.raises(ValueError):
                await db.read(fails)
            await db.read(commits_itself)
            count = (await db.read(counted))[0]
            assert await db.read(counted) == (count, True)
        await db.run(lambda conn: conn.execute(
            "INSERT INTO counters (name, value) VALUES ('snap', 1)"))
        for _ in range(Database.READERS * 2):  # every reader sees the commit
            assert await db.read(counted) == (count + 1, True)
    finally:
        db.close()

