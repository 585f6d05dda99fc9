"""IMAP's reads run on reader connections beside the single writer (SQLite WAL): a listing
never waits for a commit in progress, and it sees every write whose ``run`` returned."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

import mailnode.store.sqlite as sqlite_module
from crypto.keys import Identity
from mailnode.store.database import Connection, Database, TooLarge
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


async def test_small_reads_run_on_the_calling_thread_and_see_every_commit(
        tmp_path: Path) -> None:
    """``read_small`` skips the hop to a reader thread, on a connection of its own that is as
    read-only as the readers' and begins a new snapshot for every read."""
    db = Database.open(tmp_path / "r.db")
    try:
        def count(conn: Connection) -> tuple[int, int]:
            return threading.get_ident(), conn.execute(
                "SELECT count(*) FROM counters").fetchone()[0]

        def write(conn: Connection) -> None:
            conn.execute("INSERT INTO counters (name, value) VALUES ('x', 1)")

        here = threading.get_ident()
        before = (await db.read_small(count))[1]
        await db.run(lambda conn: conn.execute(
            "INSERT INTO counters (name, value) VALUES ('small', 1)"))
        assert await db.read_small(count) == (here, before + 1)
        assert (await db.read(count))[0] != here  # the ordinary read goes to a reader
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.read_small(write)
        assert await db.read_small(count) == (here, before + 1)  # not stuck after a failure
    finally:
        db.close()


async def test_a_small_read_that_finds_the_database_busy_goes_to_a_reader(
        tmp_path: Path) -> None:
    """The event loop never waits for a lock: a busy database sends the read the long way
    (WAL readers take no lock but in recovery, so the busy error is simulated here), and
    other errors are raised, not retried."""
    db = Database.open(tmp_path / "r.db")
    try:
        threads: list[int] = []

        def busy_once(_conn: Connection) -> str:
            threads.append(threading.get_ident())
            if len(threads) == 1:
                raise sqlite3.OperationalError("database is locked")
            return "read"

        assert await db.read_small(busy_once) == "read"
        assert threads[0] == threading.get_ident() != threads[1]

        def broken(_conn: Connection) -> None:
            threads.append(threading.get_ident())
            raise sqlite3.OperationalError("no such table: nowhere")

        threads.clear()
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.read_small(broken)
        assert threads == [threading.get_ident()]
    finally:
        db.close()


async def test_a_small_read_that_finds_too_much_runs_its_large_version_on_a_reader(
        tmp_path: Path) -> None:
    """A job that finds more rows than belong on the event loop says so (``TooLarge``) and
    its ``large`` version runs on a reader thread; without one, the error is the caller's."""
    db = Database.open(tmp_path / "r.db")
    try:
        threads: list[int] = []

        def small(_conn: Connection) -> str:
            threads.append(threading.get_ident())
            raise TooLarge

        def large(_conn: Connection) -> str:
            threads.append(threading.get_ident())
            return "all of it"

        assert await db.read_small(small, large) == "all of it"
        assert threads[0] == threading.get_ident() != threads[1]
        with pytest.raises(TooLarge):
            await db.read_small(small)
    finally:
        db.close()


@pytest.mark.parametrize("bound", [1, 64])
async def test_store_reads_give_the_same_answers_on_the_loop_and_on_a_reader(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch, bound: int) -> None:
    """The feed of changes, a mailbox's counts and the mailbox list are read on the event
    loop when small and on a reader when not: the answers are the same either way (sorted
    by uid, recent counted in full)."""
    monkeypatch.setattr(sqlite_module, "SMALL_READ_ROWS", bound)
    monkeypatch.setattr(sqlite_module, "SMALL_COUNT_ROWS", bound)
    user = await store.create_user("reader", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    _, uids = await store.append_many(inbox.id, [
        (f"Subject: {i}\r\n\r\nx\r\n".encode(), frozenset(), None) for i in range(6)])
    after_append = (await store.changes_since(inbox.id, 0)).highest_modseq
    # Flags changed in an order other than the uids': the feed still lists by uid.
    for uid in (uids[4], uids[1], uids[3]):
        await store.store_flags(inbox.id, [uid], frozenset({"\\Seen"}), "add")
    await store.store_flags(inbox.id, [uids[5], uids[0]], frozenset({"\\Deleted"}), "add")
    await store.expunge(inbox.id, [uids[5], uids[0]])
    feed = await store.changes_since(inbox.id, after_append)
    assert [m.uid for m in feed.changed] == [uids[1], uids[3], uids[4]]
    assert feed.vanished == [uids[0], uids[5]]
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None and (inbox.messages, inbox.recent) == (4, 4)
    await store.create_mailbox(user.id, "Later")
    listed = {m.name: m.recent for m in await store.list_mailboxes(user.id)}
    assert listed["INBOX"] == 4 and "Later" in listed
    assert await store.count_mailboxes(user.id) == len(listed)
