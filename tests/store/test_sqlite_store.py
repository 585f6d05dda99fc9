"""The SQLite store against its contract, on real database files."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mailnode.store.sqlite as sqlite_module
from crypto.keys import Identity
from mailnode.store.api import (
    MailboxExists,
    MailboxProtected,
    MessageMeta,
    NoSuchMailbox,
)
from mailnode.store.database import Connection, Database, WroteBeforeFailing, is_current
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import (
    LocalCopy,
    OutboundContent,
    Outgoing,
    SqlStore,
    Submission,
    UserExists,
)

MSG = b"From: a@example\r\nSubject: hi\r\n\r\nbody\r\n"


async def test_new_database_is_at_head_wal_and_private(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "m.db")
    try:
        assert is_current(db.engine)
        assert os.stat(tmp_path / "m.db").st_mode & 0o777 == 0o600
        with sqlite3.connect(tmp_path / "m.db") as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


async def test_users_get_special_mailboxes_and_login_by_name_or_address(store: SqlStore) -> None:
    user = await store.create_user("alice", "correct horse", Identity.generate())
    names = {(m.name, m.special_use) for m in await store.list_mailboxes(user.id)}
    assert names == {("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"),
                     ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")}
    assert await store.authenticate("alice", "correct horse") == user
    assert await store.authenticate(user.address.upper(), "correct horse") == user
    assert await store.authenticate("alice", "wrong") is None
    assert await store.authenticate("nobody", "correct horse") is None
    with pytest.raises(UserExists):
        await store.create_user("alice", "x" * 8, Identity.generate())


async def test_a_repeated_login_skips_the_slow_hash_until_the_password_changes(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import mailnode.store.sqlite as sqlite_module

    user = await store.create_user("alice", "correct horse", Identity.generate())
    checks: list[str] = []
    from crypto.passwords import verify_password as real

    def counted(stored: str, password: str) -> bool:
        checks.append(password)
        return real(stored, password)

    monkeypatch.setattr(sqlite_module, "verify_password", counted)
    assert await store.authenticate("alice", "correct horse") == user
    assert await store.authenticate("alice", "correct horse") == user
    assert checks == ["correct horse"]  # the second login was recognised
    assert await store.authenticate("alice", "wrong") is None
    assert await store.authenticate("alice", "wrong") is None
    assert checks.count("wrong") == 2  # failures always pay the slow check
    assert await store.set_password("alice", "new battery staple")
    assert await store.authenticate("alice", "correct horse") is None  # old one: slow, refused
    assert await store.authenticate("alice", "new battery staple") == user
    assert checks[-2:] == ["correct horse", "new battery staple"]


async def test_logins_arriving_together_share_one_slow_check(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten connections of one client log in at once: one scrypt (16 MiB, ~50 ms), not ten
    queued on the hasher thread; different names, unknown ones included, never share."""
    import mailnode.store.sqlite as sqlite_module
    from crypto.passwords import verify_password as real

    user = await store.create_user("alice", "correct horse", Identity.generate())
    checks: list[tuple[str, str]] = []

    def counted(stored: str, password: str) -> bool:
        checks.append((stored, password))
        return real(stored, password)

    monkeypatch.setattr(sqlite_module, "verify_password", counted)
    logins = await asyncio.gather(*(store.authenticate("alice", "correct horse")
                                    for _ in range(10)))
    assert logins == [user] * 10 and len(checks) == 1
    checks.clear()
    refused = await asyncio.gather(*(store.authenticate("alice", "wrong")
                                     for _ in range(5)))
    assert refused == [None] * 5 and len(checks) == 1  # the same guess, checked once
    checks.clear()
    unknown = await asyncio.gather(*(store.authenticate(f"nobody{i}", "guess")
                                     for i in range(3)))
    assert unknown == [None] * 3 and len(checks) == 3  # each pays what a real user's costs
    assert await store.authenticate("alice", "wrong") is None  # a later guess: checked again
    assert len(checks) == 4 and not store._checking


async def test_append_fetch_flags_expunge(store: SqlStore) -> None:
    user = await store.create_user("u", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "inbox")
    assert inbox is not None
    uidvalidity, uid1 = await store.append(inbox.id, MSG, frozenset({"\\Seen"}), None)
    _, uid2 = await store.append(inbox.id, MSG + b"2", frozenset(), None)
    assert uidvalidity == inbox.uidvalidity and uid2 > uid1
    assert (await store.fetch_bodies(inbox.id, [uid1, uid2, 999])) == {
        uid1: MSG, uid2: MSG + b"2"}
    box = await store.get_mailbox(user.id, "INBOX")
    assert box is not None and (box.messages, box.unseen, box.uidnext) == (2, 1, uid2 + 1)
    metas = await store.store_flags(inbox.id, [uid2], frozenset({"\\Deleted", "$x"}), "add")
    assert metas[0].flags == {"\\Deleted", "$x"}
    metas = await store.store_flags(inbox.id, [uid2], frozenset({"$x"}), "remove")
    assert metas[0].flags == {"\\Deleted"}
    assert await store.expunge(inbox.id, [uid1]) == []
    assert await store.expunge(inbox.id) == [uid2]
    assert [m.uid for m in await store.list_messages(inbox.id)] == [uid1]
    # uids are never reused after expunge
    _, uid3 = await store.append(inbox.id, MSG, frozenset(), None)
    assert uid3 > uid2


async def test_concurrent_appends_get_distinct_uids(store: SqlStore) -> None:
    user = await store.create_user("u", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    results = await asyncio.gather(*(store.append(inbox.id, MSG, frozenset(), None)
                                     for _ in range(50)))
    uids = [uid for _, uid in results]
    assert len(set(uids)) == 50


async def test_mailbox_management(store: SqlStore) -> None:
    user = await store.create_user("u", "password1", Identity.generate())
    box = await store.create_mailbox(user.id, "Projects")
    with pytest.raises(MailboxExists):
        await store.create_mailbox(user.id, "Projects")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    _, uid = await store.append(inbox.id, MSG, frozenset({"\\Flagged"}), None)
    pairs = await store.copy(inbox.id, [uid], box.id)
    assert len(pairs) == 1 and pairs[0][0] == uid
    copied = await store.list_messages(box.id)
    assert copied[0].flags == {"\\Flagged"}
    await store.rename_mailbox(user.id, "Projects", "Old")
    assert await store.get_mailbox(user.id, "Projects") is None
    with pytest.raises(MailboxProtected):
        await store.delete_mailbox(user.id, "Trash")
    with pytest.raises(NoSuchMailbox):
        await store.delete_mailbox(user.id, "Nope")
    await store.delete_mailbox(user.id, "Old")
    assert await store.get_mailbox(user.id, "Old") is None


async def test_inbound_delivery_is_idempotent_and_notifies(store: SqlStore) -> None:
    user = await store.create_user("u", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    seen = store.notifier.version(inbox.id)
    waiter = asyncio.create_task(store.notifier.wait(inbox.id, seen))
    sender, mid = os.urandom(32), os.urandom(16)
    assert await store.deliver_inbound(user.id, sender, mid, MSG) is True
    await asyncio.wait_for(waiter, 5)
    assert await store.deliver_inbound(user.id, sender, mid, MSG) is False
    assert len(await store.list_messages(inbox.id)) == 1


async def test_submission_files_local_and_queues_remote_in_one_commit(store: SqlStore) -> None:
    alice = await store.create_user("alice", "password1", Identity.generate())
    bob = await store.create_user("bob", "password1", Identity.generate())
    carol = await store.create_user("carol", "password1", Identity.generate())
    remote = tuple(Outgoing(os.urandom(16), f"x{i}@mailnode.invalid") for i in range(3))
    await store.submit(Submission(alice.id, MSG, (bob.id, carol.id), MSG + b"payload",
                                  b"Subject: s\r\n", remote))
    for user in (bob, carol):
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None and inbox.messages == 1
        assert (await store.fetch_bodies(inbox.id, [1])) == {1: MSG}
    assert await store.queue_length() == 3
    # One stored copy per message, however many recipients (local ones, remote ones).
    counts = await store.db.run(lambda c: (
        c.execute("SELECT count(*) FROM bodies").fetchone()[0],
        c.execute("SELECT count(*) FROM outbound_payloads").fetchone()[0]))
    assert counts == (1, 1)
    due = await store.due_outbound(now=2**40)
    assert [d.message_id for d in due] == [o.message_id for o in remote]
    content = await store.outbound_content(due[0].id)
    assert content == OutboundContent(None, MSG + b"payload", b"Subject: s\r\n")
    await store.outbound_retry(due[0].id, 2**41, "down")
    assert len(await store.due_outbound(now=2**40)) == 2
    await store.outbound_done(due[0].id, LocalCopy(alice.id, b"DSN\r\n"))
    for item in due[1:]:
        await store.outbound_done(item.id)
    assert await store.queue_length() == 0
    assert await store.outbound_content(due[0].id) is None
    assert await store.db.run(lambda c: c.execute(
        "SELECT count(*) FROM outbound_payloads").fetchone()[0]) == 0  # freed with the last
    alice_inbox = await store.get_mailbox(alice.id, "INBOX")
    assert alice_inbox is not None and alice_inbox.messages == 1


async def test_ids_are_never_reused(store: SqlStore) -> None:
    """SQLite hands the highest rowid out again after a delete unless AUTOINCREMENT."""
    user = await store.create_user("u", "password1", Identity.generate())
    box = await store.create_mailbox(user.id, "Tmp")
    await store.delete_mailbox(user.id, "Tmp")
    assert (await store.create_mailbox(user.id, "Tmp2")).id > box.id
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, MSG, frozenset({"\\Deleted"}), None)
    ids = await store.db.run(lambda c: c.execute("SELECT max(id) FROM messages").fetchone())
    await store.expunge(inbox.id)
    await store.append(inbox.id, MSG, frozenset(), None)
    assert (await store.db.run(lambda c: c.execute(
        "SELECT max(id) FROM messages").fetchone()))[0] > ids[0]
    remote = (Outgoing(os.urandom(16), "x@mailnode.invalid"),)
    await store.submit(Submission(user.id, b"", (), MSG, b"", remote))
    [first] = await store.due_outbound(now=2**40)
    await store.outbound_done(first.id)
    await store.submit(Submission(user.id, b"", (), MSG, b"",
                                  (Outgoing(os.urandom(16), "x@mailnode.invalid"),)))
    [second] = await store.due_outbound(now=2**40)
    assert second.id > first.id
    # Every table keyed by an integer id says AUTOINCREMENT in its schema.
    schemas: dict[str, str] = await store.db.run(lambda c: dict(c.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql LIKE '%id INTEGER%'"
    ).fetchall()))
    for name in ("users", "mailboxes", "messages", "bodies", "outbound", "outbound_payloads"):
        assert "AUTOINCREMENT" in schemas[name], name


async def test_uidvalidity_strictly_grows_whatever_the_clock_does(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    db = Database.open(tmp_path / "u.db")
    seen = []
    try:
        store = SqlStore(db, ChangeNotifier(), clock=lambda: now[0])
        user = await store.create_user("u", "password1", Identity.generate())
        for step in (0.0, 0.0, -3600.0, 0.0):  # same second, then the clock steps back
            now[0] += step
            box = await store.create_mailbox(user.id, "Box")
            seen.append(box.uidvalidity)
            await store.delete_mailbox(user.id, "Box")
        await store.create_mailbox(user.id, "Other")
        await store.rename_mailbox(user.id, "Other", "Box")
        renamed = await store.get_mailbox(user.id, "Box")
        assert renamed is not None
        seen.append(renamed.uidvalidity)
    finally:
        db.close()
    db = Database.open(tmp_path / "u.db")  # a restart, with the clock still behind
    try:
        store = SqlStore(db, ChangeNotifier(), clock=lambda: now[0] - 86400)
        user2 = await store.create_user("v", "password1", Identity.generate())
        inbox = await store.get_mailbox(user2.id, "INBOX")
        assert inbox is not None
        seen.append(inbox.uidvalidity)
    finally:
        db.close()
    assert seen == sorted(set(seen)) and len(seen) == 6, seen


async def test_group_commit_isolates_a_failing_job(tmp_path: Path) -> None:

    db = Database.open(tmp_path / "g.db")
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))

        def write(v: int) -> Callable[[Connection], int]:
            def fn(conn: Connection) -> int:
                conn.execute("INSERT INTO t VALUES (:v)", {"v": v})
                if v % 5 == 0:
                    raise ValueError(v)  # after its write: the savepoint must undo it
                return v
            return fn

        results = await asyncio.gather(*(db.run(write(v)) for v in range(1, 41)),
                                       return_exceptions=True)
        failed = {r.args[0] for r in results if isinstance(r, ValueError)}
        assert failed == set(range(5, 41, 5))
        stored = await db.run(lambda c: {r[0] for r in c.execute("SELECT v FROM t")})
        assert stored == set(range(1, 41)) - failed
    finally:
        db.close()


async def test_clean_jobs_share_a_group_without_savepoints(tmp_path: Path) -> None:
    """A ``clean`` job that refuses before changing anything fails alone; one that breaks
    its word (raises after a change) fails its whole group and nothing of it is kept."""
    db = Database.open(tmp_path / "c.db")
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))

        def write(v: int, fail: str = "") -> Callable[[Connection], int]:
            def fn(conn: Connection) -> int:
                if fail == "before":
                    raise ValueError(v)
                conn.execute("INSERT INTO t VALUES (?)", (v,))
                if fail == "after":
                    raise ValueError(v)
                return v
            return fn

        results = await asyncio.gather(
            *(db.run(write(v, "before" if v == 3 else ""), clean=True) for v in range(1, 6)),
            return_exceptions=True)
        assert [r if isinstance(r, int) else "refused" for r in results] == \
            [1, 2, "refused", 4, 5]
        doomed = await asyncio.gather(
            db.run(write(6), clean=True), db.run(write(7, "after"), clean=True),
            db.run(write(8)), return_exceptions=True)
        assert all(isinstance(r, WroteBeforeFailing) for r in doomed), doomed
        stored = await db.run(lambda c: [r[0] for r in c.execute("SELECT v FROM t")])
        assert stored == [1, 2, 4, 5]
    finally:
        db.close()


async def test_a_lone_failing_job_leaves_nothing(tmp_path: Path) -> None:
    """A job alone in its transaction runs without a savepoint: its failure must still
    undo its writes, and the thread must go on serving."""

    db = Database.open(tmp_path / "l.db")
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))

        def fail(conn: Connection) -> None:
            conn.execute("INSERT INTO t VALUES (1)")
            raise ValueError("after the write")
        with pytest.raises(ValueError):
            await db.run(fail)
        await db.run(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        stored = await db.run(lambda c: [r[0] for r in c.execute("SELECT v FROM t")])
        assert stored == [2]
    finally:
        db.close()


async def test_run_after_prepares_off_the_loop_then_commits(tmp_path: Path) -> None:
    """What ``prepare`` raises reaches the caller and nothing is written; what it returns
    runs as a transaction; jobs still being prepared when the database closes are done."""
    import threading


    db = Database.open(tmp_path / "p.db")
    loop_thread = threading.get_ident()
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))

        def prepare(v: int) -> Callable[[], Callable[[Connection], int]]:
            def made() -> Callable[[Connection], int]:
                assert threading.get_ident() != loop_thread
                if v % 3 == 0:
                    raise ValueError(v)

                def fn(conn: Connection) -> int:
                    conn.execute("INSERT INTO t VALUES (:v)", {"v": v})
                    return v
                return fn
            return made
        results = await asyncio.gather(*(db.run_after(prepare(v)) for v in range(1, 31)),
                                       return_exceptions=True)
        failed = {r.args[0] for r in results if isinstance(r, ValueError)}
        assert failed == set(range(3, 31, 3))
        assert {r for r in results if isinstance(r, int)} == set(range(1, 31)) - failed
        stored = await db.run(lambda c: {r[0] for r in c.execute("SELECT v FROM t")})
        assert stored == set(range(1, 31)) - failed
        pending = [asyncio.ensure_future(db.run_after(prepare(v))) for v in (31, 32)]
        await asyncio.sleep(0)  # queued, perhaps not yet prepared
    finally:
        db.close()
    assert await asyncio.gather(*pending) == [31, 32]


async def test_opening_an_older_database_upgrades_it(tmp_path: Path) -> None:
    from alembic import command

    from mailnode.store.database import _alembic_config

    db = Database.open(tmp_path / "old.db")
    cfg = _alembic_config(db.engine)
    command.downgrade(cfg, "base")  # as if written by a release before these tables
    assert not is_current(db.engine)
    db.close()
    db = Database.open(tmp_path / "old.db")  # what `mailnode run` does before serving
    try:
        assert is_current(db.engine)
        store = SqlStore(db, ChangeNotifier())
        assert (await store.create_user("u", "password1", Identity.generate())).id == 1
    finally:
        db.close()


async def test_recent_is_claimed_once(store: SqlStore) -> None:
    user = await store.create_user("u", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for _ in range(2):
        await store.append(inbox.id, MSG, frozenset(), None)
    assert await store.claim_recent(inbox.id, 2, claim=False) == (0, 2)  # EXAMINE: a peek
    assert await store.claim_recent(inbox.id, 2) == (0, 2)  # the first SELECT takes both
    assert await store.claim_recent(inbox.id, 2) == (2, 2)  # the next one gets none
    box = await store.get_mailbox(user.id, "INBOX")
    assert box is not None and box.recent == 0


async def test_upgrades_keep_old_mail_old_and_mailboxes_subscribed(tmp_path: Path) -> None:
    from alembic import command

    from mailnode.store.database import _alembic_config

    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("u", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, MSG, frozenset(), None)
    command.downgrade(_alembic_config(db.engine), "0001")
    db.close()
    db = Database.open(tmp_path / "m.db")
    try:
        upgraded = SqlStore(db, ChangeNotifier())
        box = await upgraded.get_mailbox(user.id, "INBOX")
        assert box is not None and box.messages == 1 and box.recent == 0
        assert await upgraded.fetch_bodies(box.id, [1]) == {1: MSG}  # 0004 moved the bytes
        # ...and later ids continue above the old ones (0004: AUTOINCREMENT)
        _, uid = await upgraded.append(box.id, MSG, frozenset(), None)
        assert uid == 2 and await upgraded.fetch_bodies(box.id, [1, 2]) == {1: MSG, 2: MSG}
        # 0003: LSUB used to list every mailbox, so existing ones start subscribed; 0007
        # gave the user Junk and Archive, subscribed
        assert await upgraded.subscriptions(user.id) == {"INBOX", "Sent", "Drafts", "Trash",
                                                         "Junk", "Archive"}
    finally:
        db.close()


async def test_listings_after_new_mail_read_only_the_new_messages(store: SqlStore) -> None:
    """A session's listing after new mail is the old one plus the new messages (not the
    whole mailbox read again), and equals a fresh read after any mix of changes."""
    user = await store.create_user("lister", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None

    def fresh() -> SqlStore:  # no cached listing: reads everything
        return SqlStore(store.db, ChangeNotifier())

    reads: list[int | None] = []  # per load: how many messages it did not read again
    original = store._load_listing

    async def spy(mailbox_id: int, version: int,
                  base: tuple[tuple[MessageMeta, ...], int] | None = None,
                  ) -> tuple[tuple[MessageMeta, ...], int]:
        reads.append(None if base is None else len(base[0]))
        return await original(mailbox_id, version, base)

    store._load_listing = spy  # type: ignore[method-assign]
    for i in range(20):
        await store.append(inbox.id, f"Subject: {i}\r\n\r\nx\r\n".encode(), frozenset(), None)
    assert len(await store.list_messages(inbox.id)) == 20
    for i in range(3):  # new mail: the listing grows by what arrived
        await store.deliver_inbound(user.id, bytes([i]) * 32, bytes(16), b"Subject: n\r\n\r\n")
        listed = await store.list_messages(inbox.id)
        assert [m.uid for m in listed] == [m.uid for m in await fresh().list_messages(inbox.id)]
    assert reads[-3:] == [20, 21, 22]  # the previous listing, plus the new row read
    assert reads[0] is None
    await store.store_flags(inbox.id, [2], frozenset({"\\Seen"}), "add")
    await store.expunge(inbox.id, [5])
    await store.append(inbox.id, b"Subject: z\r\n\r\nz\r\n", frozenset({"\\Flagged"}), None)
    assert await store.list_messages(inbox.id) == await fresh().list_messages(inbox.id)
    assert reads[-1] is None  # flags and expunge changed old rows: read all again


async def test_a_change_committed_before_it_is_published_is_not_lost_from_listings(
        store: SqlStore) -> None:
    """The notifier hears of a commit a moment after it: a listing read in that moment must
    not take the cached one for current because only new mail was published since. Here an
    expunge and a flag change commit unannounced, then new mail is announced: the next
    listing must still show both (it once kept the expunged message and the old flags,
    with a highest modseq past them, so the session never heard of them: imaptest's
    checkpoints found sessions that disagreed about a mailbox)."""
    user = await store.create_user("racer", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for i in range(5):
        await store.append(inbox.id, f"Subject: {i}\r\n\r\nx\r\n".encode(), frozenset(), None)
    before = await store.list_messages(inbox.id)  # cached as of this version
    publish = store.notifier.publish

    async def late(mailbox_id: int, appended: bool = False) -> None:
        """Published after the listing below was read."""

    store.notifier.publish = late  # type: ignore[method-assign]
    await store.store_flags(inbox.id, [before[3].uid], frozenset({"\\Deleted"}), "add")
    await store.expunge(inbox.id, [before[3].uid])
    await store.store_flags(inbox.id, [before[1].uid], frozenset({"\\Seen"}), "add")
    store.notifier.publish = publish  # type: ignore[method-assign]
    await store.append(inbox.id, b"Subject: new\r\n\r\nx\r\n", frozenset(), None)
    listed, highest = await store.snapshot(inbox.id)
    assert (listed, highest) == await SqlStore(store.db, ChangeNotifier()).snapshot(inbox.id)
    assert before[3].uid not in {m.uid for m in listed}


async def test_cached_listings_are_bounded_least_recently_used_first(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every mailbox ever selected used to keep its listing for good (25 MB per 100,000
    messages); the cache now holds at most LISTING_CACHE_MESSAGES over all mailboxes and
    drops the least recently read, and a dropped listing reads back the same."""
    monkeypatch.setattr(sqlite_module, "LISTING_CACHE_MESSAGES", 10)
    user = await store.create_user("boxes", "password1", Identity.generate())
    ids = []
    for name in ("A", "B", "C"):
        box = await store.create_mailbox(user.id, name)
        for i in range(4):
            await store.append(box.id, f"Subject: {i}\r\n\r\nx\r\n".encode(), frozenset(), None)
        ids.append(box.id)
    first = [await store.list_messages(i) for i in ids]
    assert list(store._listings) == ids[1:]  # A (least recently read) went: 8 <= 10 kept
    await store.list_messages(ids[1])  # B read again: C is now the oldest
    big = await store.create_mailbox(user.id, "Big")
    for i in range(12):
        await store.append(big.id, f"Subject: {i}\r\n\r\nx\r\n".encode(), frozenset(), None)
    assert len(await store.list_messages(big.id)) == 12
    assert list(store._listings) == [big.id]  # the one being read is kept, even over
    assert [await store.list_messages(i) for i in ids] == first


def _group_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each group the database thread commits from now on, in order."""
    from mailnode.store import database as database_module
    groups: list[int] = []
    commit = database_module._commit

    def counting(conn: database_module._Writer, group: list[Any]) -> Any:
        groups.append(len(group))
        return commit(conn, group)

    monkeypatch.setattr(database_module, "_commit", counting)
    return groups


async def test_the_jobs_of_one_loop_turn_share_one_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs an event loop queues in one turn reach the database thread together: one group,
    one transaction, one fsync. Queued and then closed at once, they still run."""
    groups = _group_sizes(monkeypatch)
    db = Database.open(tmp_path / "m.db")

    def insert(name: str) -> Callable[[Connection], object]:
        return lambda conn: conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)", (name,))

    async def queue(name: str) -> None:
        # Blocking the loop a moment lets the database thread run in between, as a busy
        # loop's system calls do: handed over one by one, the first job went alone.
        time.sleep(0.005)
        await db.run(insert(name))

    try:
        await asyncio.gather(*(queue(f"turn-{i}") for i in range(5)))
        assert groups == [5]
        late = asyncio.ensure_future(db.run(insert("late")))
        await asyncio.sleep(0)  # the job is in this turn's batch, not handed over yet
    finally:
        db.close()
    await late
    with sqlite3.connect(tmp_path / "m.db") as raw:
        names = {n for (n,) in raw.execute("SELECT name FROM counters WHERE value = 1")}
    assert {f"turn-{i}" for i in range(5)} | {"late"} <= names


async def test_a_job_that_may_change_many_rows_commits_alone_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``alone`` job gets a transaction of its own (no savepoint journals its pages),
    between the jobs queued before and after it in the same turn; its failure undoes only
    its own writes."""
    groups = _group_sizes(monkeypatch)
    db = Database.open(tmp_path / "a.db")
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))
        groups.clear()

        def write(v: int, fail: bool = False) -> Callable[[Connection], int]:
            def fn(conn: Connection) -> int:
                conn.execute("INSERT INTO t VALUES (?)", (v,))
                if fail:
                    raise ValueError(v)
                return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
            return fn

        results = await asyncio.gather(
            db.run(write(1)), db.run(write(2)), db.run(write(3), alone=True),
            db.run(write(4, fail=True), alone=True), db.run(write(5)), db.run(write(6)),
            return_exceptions=True)
        assert groups == [2, 1, 1, 2]
        assert list(results[:3]) == [1, 2, 3] and isinstance(results[3], ValueError)
        assert list(results[4:]) == [4, 5]  # in order, after the alone ones
        stored = await db.run(lambda c: [r[0] for r in c.execute("SELECT v FROM t")])
        assert stored == [1, 2, 3, 5, 6]
    finally:
        db.close()
