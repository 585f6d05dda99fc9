"""Mailbox counts (STATUS, SELECT, LIST) are read from the mailbox row, kept by migration
0010's triggers on ``messages``: no lookup counts every message row, and the stored counts
always equal a count of the messages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from mailnode.store import database
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore


async def test_counts_are_never_counted_from_the_messages(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
    statements: list[str] = []

    def seen(statement: str) -> None:
        statements.append(statement)

    def traced_reader(path: Path) -> sqlite3.Connection:
        conn = connect_reader(path)
        conn.set_trace_callback(seen)  # every statement a reader runs
        return conn

    connect_reader = database.connect_reader
    monkeypatch.setattr(database, "connect_reader", traced_reader)
    db = Database.open(tmp_path / "c.db")
    try:
        store = SqlStore(db, ChangeNotifier())
        user = await store.create_user("counter", "password1", Identity.generate())
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        for i in range(3):
            await store.append(inbox.id, b"Subject: %d\r\n\r\nx\r\n" % i,
                               frozenset({"\\Seen"}) if i == 0 else frozenset(), None)
        statements.clear()

        async def counts() -> tuple[int, int, int]:
            box = await store.get_mailbox(user.id, "INBOX")
            assert box is not None
            return box.messages, box.unseen, box.recent

        assert await counts() == (3, 2, 3)
        assert await counts() == (3, 2, 3)
        listed = await store.list_mailboxes(user.id)
        assert [(b.messages, b.unseen) for b in listed if b.name == "INBOX"] == [(3, 2)]
        assert await store.list_mailboxes(user.id) == listed
        await store.claim_recent(inbox.id, 3)  # recent is read each time (it is not a change)
        assert await counts() == (3, 2, 0)
        await store.store_flags(inbox.id, [2], frozenset({"\\Seen"}), "add")
        assert await counts() == (3, 1, 0)
        await store.append(inbox.id, b"Subject: new\r\n\r\nx\r\n", frozenset(), None)
        assert await counts() == (4, 2, 1)
        await store.store_flags(inbox.id, [1, 2, 3, 4], frozenset({"\\Deleted"}), "add")
        await store.expunge(inbox.id, [1])
        assert await counts() == (3, 2, 1)
        assert any("FROM mailboxes" in s for s in statements)  # the readers were traced
        scans = [s for s in statements if "count(" in s and "uid >" not in s]
        assert scans == []  # nothing but recent's index range is counted
    finally:
        db.close()


_COUNTED = ("SELECT b.id, b.message_count, b.unseen_count, count(m.id), "
            "count(m.id) FILTER (WHERE m.flags NOT LIKE '%\\Seen%') FROM mailboxes b "
            "LEFT JOIN messages m ON m.mailbox_id = b.id GROUP BY b.id")


def _stored_and_counted(db: Database) -> list[tuple[int, int, int, int, int]]:
    with db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        return [tuple(r) for r in raw.execute(_COUNTED).fetchall()]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "seen", "unseen", "delete", "expunge",
                                           "copy", "move", "drop"]),
                          st.integers(0, 1), st.integers(1, 6)), max_size=25))
def test_stored_counts_equal_the_messages(ops: list[tuple[str, int, int]]) -> None:
    import asyncio
    import tempfile

    async def run(path: Path) -> None:
        db = Database.open(path / "c.db")
        try:
            store = SqlStore(db, ChangeNotifier())
            user = await store.create_user("u", "password1", Identity.generate())
            inbox = await store.get_mailbox(user.id, "INBOX")
            other = await store.create_mailbox(user.id, "Other")
            assert inbox is not None
            boxes = [inbox.id, other.id]
            for op, which, uid in ops:
                box = boxes[which]
                if op == "append":
                    await store.append(box, b"Subject: x\r\n\r\ny\r\n",
                                       frozenset({"\\Seen"}) if uid % 2 else frozenset(), None)
                elif op in ("seen", "unseen", "delete"):
                    flag = "\\Deleted" if op == "delete" else "\\Seen"
                    await store.store_flags(box, [uid, uid + 1], frozenset({flag}),
                                            "remove" if op == "unseen" else "add")
                elif op == "expunge":
                    await store.expunge(box)
                elif op == "copy":
                    await store.copy(box, [uid], boxes[1 - which])
                elif op == "move":
                    await store.move(box, [uid], boxes[1 - which])
                elif op == "drop" and which == 1 and "Other" in [
                        b.name for b in await store.list_mailboxes(user.id)]:
                    await store.delete_mailbox(user.id, "Other")
                    boxes[1] = (await store.create_mailbox(user.id, "Other")).id
                for _id, stored, unseen, counted, counted_unseen in _stored_and_counted(db):
                    assert (stored, unseen) == (counted, counted_unseen)
            for listed in await store.list_mailboxes(user.id):
                listing = await store.list_messages(listed.id)
                assert (listed.messages, listed.unseen) == (
                    len(listing), sum("\\Seen" not in m.flags for m in listing))
        finally:
            db.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


async def test_migration_counts_existing_mail(tmp_path: Path) -> None:
    from alembic import command

    from mailnode.store.database import _alembic_config
    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("old", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for flags in (frozenset({"\\Seen"}), frozenset(), frozenset({"$x"})):
        await store.append(inbox.id, b"Subject: x\r\n\r\ny\r\n", flags, None)
    command.downgrade(_alembic_config(db.engine), "0009")
    db.close()
    db = Database.open(tmp_path / "m.db")  # upgrades again: counts what is there
    try:
        store = SqlStore(db, ChangeNotifier())
        box = await store.get_mailbox(user.id, "INBOX")
        assert box is not None and (box.messages, box.unseen) == (3, 2)
        await store.append(inbox.id, b"Subject: y\r\n\r\nz\r\n", frozenset(), None)
        box = await store.get_mailbox(user.id, "INBOX")
        assert box is not None and (box.messages, box.unseen) == (4, 3)  # triggers are back
        assert all(r[1:3] == r[3:5] for r in _stored_and_counted(db))
    finally:
        db.close()
