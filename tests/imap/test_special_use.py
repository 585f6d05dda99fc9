"""RFC 6154 SPECIAL-USE: every user has Junk and Archive, marked in LIST, and migration 0007
gives them to users made before it (a mailbox of that name they made keeps its mail)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from crypto.keys import Identity
from mailnode.store.database import Database, _alembic_config
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import MESSAGE, Dialog


async def test_list_marks_junk_and_archive(dialog: Dialog) -> None:
    await dialog.login()
    out = await dialog.send(b'a LIST "" *\r\n')
    assert b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"\r\n' in out
    assert b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"\r\n' in out
    assert (await dialog.send(b"b DELETE Junk\r\n")).startswith(b"b NO [CANNOT]")
    assert (await dialog.send(b"c RENAME Archive Old\r\n")).startswith(b"c NO [CANNOT]")
    assert (await dialog.send(b"d SELECT Junk\r\n")).endswith(b"d OK [READ-WRITE] SELECT "
                                                              b"completed\r\n")


async def test_migration_gives_existing_users_junk_and_archive(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    old = await store.create_user("old", "password1", Identity.generate())
    mine = await store.create_user("mine", "password1", Identity.generate())
    engine_cfg = _alembic_config(db.engine)
    command.downgrade(engine_cfg, "0006")  # as a node made before 0007 left it
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM mailboxes WHERE name IN ('Junk', 'Archive')"))
        conn.execute(text("DELETE FROM subscriptions WHERE name IN ('Junk', 'Archive')"))
        # "mine" had made a Junk mailbox of their own, with mail in it, the latest one made
        conn.execute(text("UPDATE counters SET value = 4000000000 WHERE name = 'uidvalidity'"))
        conn.execute(text("INSERT INTO mailboxes (user_id, name, uidvalidity, uidnext, "
                          "recent_uid) VALUES (:u, 'Junk', 4000000000, 1, 0)"),
                     {"u": mine.id})
    custom = await store.get_mailbox(mine.id, "Junk")
    assert custom is not None and custom.special_use is None
    await store.append(custom.id, MESSAGE, frozenset(), None)
    db.close()

    db = Database.open(tmp_path / "m.db")  # migrates to the newest revision
    try:
        store = SqlStore(db, ChangeNotifier())
        for user in (old, mine):
            boxes = {m.name: m for m in await store.list_mailboxes(user.id)}
            assert boxes["Junk"].special_use == "\\Junk"
            assert boxes["Archive"].special_use == "\\Archive"
        assert {"Junk", "Archive"} <= await store.subscriptions(old.id)
        assert "Junk" not in await store.subscriptions(mine.id)  # as they had left it
        kept = await store.get_mailbox(mine.id, "Junk")
        assert kept is not None and kept.id == custom.id and kept.messages == 1
        # UIDVALIDITY never goes back: the new mailboxes got values above every earlier one
        archive = await store.get_mailbox(mine.id, "Archive")
        assert archive is not None and archive.uidvalidity > 4_000_000_000
        box = await store.create_mailbox(old.id, "Later")
        assert box.uidvalidity > archive.uidvalidity
        # and annotations can be stored (the table exists)
        await store.set_metadata(old.id, None, {"/private/x": b"1"}, 10)
        assert await store.get_metadata(old.id, None) == {"/private/x": b"1"}
    finally:
        db.close()
