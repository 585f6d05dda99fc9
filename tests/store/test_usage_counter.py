"""The per-user usage counters (migration 0009's triggers on ``messages``) equal the sum
over the user's messages after any sequence of operations, failed ones included (an
OVERQUOTA transaction is rolled back with its counter change), on the SQLite store and on
the tests' memory store; a database edited behind the triggers' back is repaired by
``recount_usage``, and migration 0009 derives the counters for existing mail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from crypto.keys import Identity
from mailnode.store.api import MailStore, OverQuota
from mailnode.store.database import Database, _alembic_config
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import LocalCopy, SqlStore, Submission, UserExists
from tests.imap.memstore import MemStore

BOXES = ("INBOX", "Sent", "Extra")
QUOTA = 6000

op = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(BOXES), st.integers(1, 2500)),
    st.tuples(st.just("copy"), st.sampled_from(BOXES), st.integers(0, len(BOXES) - 1)),
    st.tuples(st.just("move"), st.sampled_from(BOXES), st.integers(0, len(BOXES) - 1)),
    st.tuples(st.just("expunge"), st.sampled_from(BOXES), st.integers(0, 3)),
    st.tuples(st.just("drop"), st.just("Extra"), st.just(0)),
    st.tuples(st.just("deliver"), st.just("INBOX"), st.integers(1, 2500)),
    st.tuples(st.just("append_many"), st.sampled_from(BOXES), st.integers(1, 1500)),
)
"""(operation, mailbox, argument: a size, a target mailbox's index, or how many messages to
expunge): sizes up to 2500 bytes against a 6000-byte quota, so many operations are refused
part of the way through a sequence."""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database.open(tmp_path_factory.mktemp("usage") / "u.db")
    yield db
    db.close()


def summed(db: Database) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """(stored counters, the SUM they stand for) per user, read directly."""
    with db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT u.id, u.storage_used, u.message_count, "
            "(SELECT COALESCE(SUM(m.size), 0) FROM messages m JOIN mailboxes b "
            " ON b.id = m.mailbox_id WHERE b.user_id = u.id), "
            "(SELECT COUNT(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id "
            " WHERE b.user_id = u.id) FROM users u")).all()
    return {r[0]: ((r[1], r[2]), (r[3], r[4])) for r in rows}


async def _ops(store: MailStore, user_id: int, ops: list[tuple[str, str, int]],
               deliver: bool) -> None:
    seq = 0
    for kind, box_name, arg in ops:
        if kind == "drop":
            if await store.get_mailbox(user_id, "Extra") is not None:
                await store.delete_mailbox(user_id, "Extra")
            continue
        box = await store.get_mailbox(user_id, box_name)
        if box is None:
            box = await store.create_mailbox(user_id, box_name)
        uids = [m.uid for m in await store.list_messages(box.id)]
        try:
            if kind == "append":
                await store.append(box.id, b"x" * arg, frozenset(), None)
            elif kind == "append_many":  # MULTIAPPEND: all of them or none
                await store.append_many(box.id, [(b"w" * arg, frozenset(), None)] * 2)
            elif kind in ("copy", "move") and uids:
                dst = await store.get_mailbox(user_id, BOXES[arg])
                if dst is None:
                    dst = await store.create_mailbox(user_id, BOXES[arg])
                transfer = store.move if kind == "move" else store.copy
                await transfer(box.id, uids[:2], dst.id)
            elif kind == "expunge" and uids:
                await store.store_flags(box.id, uids[:arg], frozenset({"\\Deleted"}), "add")
                await store.expunge(box.id)
            elif kind == "deliver" and deliver:
                assert isinstance(store, SqlStore)
                seq += 1
                await store.deliver_inbound(user_id, b"k" * 32, seq.to_bytes(16, "big"),
                                            b"y" * arg)
        except OverQuota:
            pass


def _sqlite_scenario(db: Database, user_ids: list[int], ops: list[tuple[str, str, int]],
                     ) -> None:
    async def run() -> None:
        store = SqlStore(db, ChangeNotifier(), user_quota=QUOTA)
        await _ops(store, user_ids[0], ops, deliver=True)
        # a submission to both users: all of it or none (the second may be full)
        with contextlib.suppress(OverQuota):
            await store.submit(Submission(user_ids[1], b"z" * 700, tuple(user_ids), b"",
                                          b"", ()))
        await store.outbound_done(-1, LocalCopy(user_ids[1], b"dsn" * 10))  # a DSN filed
    before = summed(db)
    assert all(stored == total for stored, total in before.values()), before
    asyncio.run(run())
    after = summed(db)
    assert all(stored == total for stored, total in after.values()), after


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, max_size=20))
def test_sqlite_counters_equal_the_sum(db: Database, ops: list[tuple[str, str, int]]) -> None:
    async def users() -> list[int]:
        store = SqlStore(db, ChangeNotifier())
        out = []
        for name in ("u1", "u2"):
            try:
                out.append((await store.create_user(name, "password1",
                                                    Identity.generate())).id)
            except UserExists:
                found = await store.find_user(name)
                assert found is not None
                out.append(found.id)
        return out
    user_ids = asyncio.run(users())
    # a fresh start per example, so the quota is reached within it
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM messages"))
    _sqlite_scenario(db, user_ids, ops)

    async def recount() -> int:
        return await SqlStore(db, ChangeNotifier()).recount_usage()
    assert asyncio.run(recount()) == 0


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(op, max_size=25))
def test_memory_counters_equal_the_sum(ops: list[tuple[str, str, int]]) -> None:
    store = MemStore(ChangeNotifier())
    store.user_quota = QUOTA
    user = store.add_user("u", "p")
    asyncio.run(_ops(store, user.id, ops, deliver=False))
    assert store._used(user.id) == store.summed_usage(user.id)


async def test_recount_repairs_and_migration_derives(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("old", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for size in (100, 250):
        await store.append(inbox.id, b"m" * size, frozenset(), None)
    assert (await store.usage(user.id)).storage == 350
    with db.engine.begin() as conn:  # edited behind the triggers' back
        conn.execute(text("UPDATE users SET storage_used = 1, message_count = 9"))
    assert (await store.usage(user.id)).messages == 9
    assert await store.recount_usage() == 1
    usage = await store.usage(user.id)
    assert (usage.storage, usage.messages) == (350, 2)
    assert await store.recount_usage() == 0
    # migration 0009 sums existing mail into the counters it adds
    command.downgrade(_alembic_config(db.engine), "0007")
    db.close()
    db = Database.open(tmp_path / "m.db")
    try:
        store = SqlStore(db, ChangeNotifier())
        usage = await store.usage(user.id)
        assert (usage.storage, usage.messages) == (350, 2)
        await store.append(inbox.id, b"m" * 50, frozenset(), None)
        assert (await store.usage(user.id)).storage == 400  # and the triggers are back
    finally:
        db.close()
