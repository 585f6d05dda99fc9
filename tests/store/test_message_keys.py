"""Migration 0013 (``message_keys``) on a database with mail: the keys of existing mail are
back-filled (from the stored structure and header block; from the message itself where no
usable structure is stored), the triggers on ``messages`` stay (one more: the keys leave with
their message), the JSON records of 0012 are dropped, and every SORT, THREAD and header SEARCH
answers as before the downgrade. The rows follow their messages (COPY, MOVE, EXPUNGE, a
deleted mailbox), and a submission filed locally has its keys however its recipients were
found local."""

from __future__ import annotations

from pathlib import Path

from crypto.keys import Identity
from mailnode.imap.session import ImapSession
from mailnode.mime import analyse, sortkeys
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import Outgoing, SqlStore, Submission
from tests.imap.conftest import Dialog
from tests.store.test_stored_fields import trigger_names

MESSAGES = [
    b"From: B <b@x>\r\nSubject: Re: c\r\nMessage-ID: <1@x>\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody\r\n",
    b"From: =?utf-8?q?=C3=A9mile?= <c@x>\r\nTo: team: a@x, d@x;\r\nSubject: a\r\n"
    b"References: <1@x>\r\nDate: bad\r\n\r\nbody\r\n",
    b"From: a@x\r\nCc: Z <z@y>\r\nSubject: [x] b (fwd)\r\nIn-Reply-To: <1@x>\r\n\r\nbody\r\n",
    b"Subject: \xff\xfe raw 8-bit\r\nFrom: \xc3\xa9@x\r\n\r\nbody\r\n",
    b"no header at all",
]
COMMANDS = [b"UID SORT (SUBJECT) UTF-8 ALL", b"UID SORT (REVERSE DATE FROM) UTF-8 ALL",
            b"SORT (DISPLAYFROM CC TO) UTF-8 ALL", b"UID THREAD REFERENCES UTF-8 ALL",
            b"UID THREAD ORDEREDSUBJECT UTF-8 ALL", b'UID SEARCH FROM "mile"',
            b'UID SEARCH SUBJECT "B"', b'UID SEARCH TO "team"', b'UID SEARCH CC "z@"']


async def _answers(store: SqlStore) -> list[bytes]:
    d = Dialog(ImapSession(store, store.notifier))
    assert b"OK" in await d.send(b"L LOGIN old password1\r\n")
    assert b"S OK" in await d.send(b"S SELECT INBOX\r\n")
    return [await d.send(b"T " + cmd + b"\r\n") for cmd in COMMANDS]


def _table(db: Database, name: str) -> list[str]:
    with db.engine.connect() as conn:
        return [row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({name})")]


async def test_upgrade_backfills_keys_keeps_triggers_and_answers(tmp_path: Path) -> None:
    from alembic import command

    from mailnode.store.database import _alembic_config
    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("old", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for raw in MESSAGES:
        await store.append(inbox.id, raw, frozenset(), None)
    await store.copy(inbox.id, [2], inbox.id)  # a second message on one body
    before = await _answers(store)
    keys = await store.sort_keys(inbox.id, None)
    assert sorted(keys) == [1, 2, 3, 4, 5, 6]
    triggers = trigger_names(db)
    assert "message_keys_gone" in triggers and len(triggers) > 1  # 0009's, 0010's and ours
    command.downgrade(_alembic_config(db.engine), "0012")
    with db.engine.begin() as conn:
        assert not conn.exec_driver_sql("SELECT name FROM sqlite_master"
                                        " WHERE name = 'message_keys'").fetchall()
        # Older mail: one body without a structure, one with an unreadable one.
        conn.exec_driver_sql("UPDATE bodies SET structure = NULL WHERE id = 1")
        conn.exec_driver_sql("UPDATE bodies SET structure = x'00' WHERE id = 2")
    assert {"sortkeys", "searchkeys"} <= set(_table(db, "bodies"))
    db.close()
    db = Database.open(tmp_path / "m.db")  # upgrades again, back-filling
    try:
        assert trigger_names(db) == triggers
        assert not {"sortkeys", "searchkeys"} & set(_table(db, "bodies"))
        store = SqlStore(db, ChangeNotifier())
        assert await store.sort_keys(inbox.id, None) == keys
        assert await _answers(store) == before
        assert all(b"T OK" in out for out in before)
    finally:
        db.close()


def test_backfill_reads_the_header_block_only() -> None:
    """The back-fill computes a body's keys from ``substr(data, 1, body_start)``: the same
    keys as from the whole message."""
    for raw in MESSAGES:
        st = analyse(raw)
        assert sortkeys.stored_keys(raw[:st.root.body_start], st) == \
            sortkeys.stored_keys(raw, st)


async def test_rows_follow_their_messages(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "m.db")
    try:
        store = SqlStore(db, ChangeNotifier())
        user = await store.create_user("old", "password1", Identity.generate())
        inbox = await store.get_mailbox(user.id, "INBOX")
        box = await store.create_mailbox(user.id, "Other")
        assert inbox is not None
        for raw in MESSAGES:
            await store.append(inbox.id, raw, frozenset(), None)
        await store.copy(inbox.id, [1, 2], box.id)
        await store.move(inbox.id, [3], box.id)
        await store.store_flags(inbox.id, [4], frozenset({"\\Deleted"}), "add")
        assert await store.expunge(inbox.id, [4]) == [4]
        ours = await store.sort_keys(inbox.id, None)
        theirs = await store.sort_keys(box.id, None)
        assert sorted(ours) == [1, 2, 5] and sorted(theirs) == [1, 2, 3]
        assert [theirs[1], theirs[2]] == [ours[1], ours[2]]
        assert await store.search_texts(box.id, "FROM", "a@x") == {3}
        assert await store.sort_order(box.id, [("SUBJECT", False)]) == [2, 3, 1]
        await store.delete_mailbox(user.id, "Other")
        assert await store.sort_keys(box.id, None) == {}

        def count(conn: object) -> int:
            return int(conn.execute(  # type: ignore[attr-defined]
                "SELECT count(*) FROM message_keys").fetchone()[0])
        assert await db.run(count) == 3
        assert await store.delete_user("old")
        assert await db.run(count) == 0
    finally:
        db.close()


async def test_submission_filed_locally_has_keys(tmp_path: Path) -> None:
    """``local_users`` empty, analysed beforehand or not: the recipient is found local in the
    transaction (what the submission service does when its hint was stale)."""
    db = Database.open(tmp_path / "m.db")
    try:
        store = SqlStore(db, ChangeNotifier())
        alice = await store.create_user("alice", "password1", Identity.generate())
        bob = await store.create_user("bob", "password2", Identity.generate())
        raw = b"From: alice@x\r\nSubject: Re: lunch\r\n\r\nhi\r\n"
        for analysed in (None, store.analyse(raw)):
            filed = await store.submit(Submission(
                alice.id, raw, (), raw, b"", (Outgoing(b"0" * 16, bob.address),),
                analysed))
            assert filed.local == {bob.address: bob.id}
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert inbox is not None
        keys = await store.sort_keys(inbox.id, None)
        assert sorted(keys) == [1, 2] and keys[1] == keys[2]
        assert keys[1].base == ("LUNCH", True) and keys[1].from_ == "ALICE"
        assert await store.search_texts(inbox.id, "SUBJECT", "re: l") == {1, 2}
    finally:
        db.close()
