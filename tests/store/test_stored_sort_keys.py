"""Migration 0012 (``bodies.sortkeys``) on a database with mail: the column is added without
a table rebuild (the triggers on ``messages`` stay), existing mail (no keys: not back-filled)
sorts from its structure as before, new mail has its keys stored, and a SORT over both
answers as it would over either."""

from __future__ import annotations

from pathlib import Path

from crypto.keys import Identity
from mailnode.imap.session import ImapSession
from mailnode.mime import sortkeys
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import Dialog
from tests.store.test_stored_fields import trigger_names


def _raw(subject: str, sender: str) -> bytes:
    return f"From: {sender}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


async def test_upgrade_keeps_mail_and_triggers_and_stores_keys_of_new_mail(
        tmp_path: Path) -> None:
    from alembic import command

    from mailnode.store.database import _alembic_config
    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("old", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for subject, sender in (("Re: c", "b@x"), ("a", "c@x"), ("[x] b", "a@x")):
        await store.append(inbox.id, _raw(subject, sender), frozenset(), None)
    triggers = trigger_names(db)
    assert triggers  # 0009's and 0010's
    command.downgrade(_alembic_config(db.engine), "0011")
    with db.engine.connect() as conn:
        columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(bodies)")}
    assert not {"sortkeys", "searchkeys"} & columns and "fields" in columns
    db.close()
    db = Database.open(tmp_path / "m.db")  # upgrades again
    try:
        assert trigger_names(db) == triggers
        notifier = ChangeNotifier()
        store = SqlStore(db, notifier)
        assert await store.fetch_sort_keys(inbox.id, [1, 2, 3]) == {1: None, 2: None, 3: None}
        assert await store.fetch_search_keys(inbox.id, [1, 2]) == {1: None, 2: None}
        _, uid = await store.append(inbox.id, _raw("Fwd: aa", "d@x"), frozenset(), None)
        keys = sortkeys.decode((await store.fetch_sort_keys(inbox.id, [uid]))[uid])
        assert keys is not None and keys.base == ("aa", True) and keys.from_ == "D"
        found = sortkeys.decode_search((await store.fetch_search_keys(inbox.id, [uid]))[uid])
        assert found == sortkeys.SearchKeys((("d@x",), (), (), ()), ("Fwd: aa",))
        d = Dialog(ImapSession(store, notifier))
        assert b"L OK" in await d.send(b"L LOGIN old password1\r\n")
        assert b"S OK" in await d.send(b"S SELECT INBOX\r\n")
        out = await d.send(b"T UID SORT (SUBJECT) UTF-8 ALL\r\n")
        assert out.startswith(b"* SORT 2 4 3 1\r\n")  # a, aa, b, c: old and new mail together
        out = await d.send(b"T UID SORT (REVERSE FROM) UTF-8 ALL\r\n")
        assert out.startswith(b"* SORT 4 2 1 3\r\n")
        out = await d.send(b'T UID SEARCH OR FROM "d@" SUBJECT "b"\r\n')
        assert out.startswith(b"* SEARCH 3 4\r\n")  # old mail read, new from its keys
        box = await store.get_mailbox(user.id, "INBOX")
        assert box is not None and box.messages == 4  # the count triggers still count
    finally:
        db.close()
