"""Migration 0011 (``bodies.fields``) on a database with mail: the column is added without a
table rebuild (the triggers on ``messages`` stay), existing mail keeps being answered from
its header block, new mail has its fields stored."""

from __future__ import annotations

from pathlib import Path

from crypto.keys import Identity
from mailnode.mime.headers import STORED_FIELDS_VERSION
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

RAW = b"Received: r\r\nSubject: old\r\nFrom: f\r\n\r\nbody\r\n"


def trigger_names(db: Database) -> set[str]:
    """The database's trigger names (a migration that rebuilt a table would drop some)."""
    with db.engine.connect() as conn:
        return {row[0] for row in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")}


async def test_upgrade_keeps_mail_and_triggers_and_stores_fields_of_new_mail(
        tmp_path: Path) -> None:
    from alembic import command

    from mailnode.store.database import _alembic_config
    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("old", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for _ in range(3):
        await store.append(inbox.id, RAW, frozenset(), None)
    triggers = trigger_names(db)
    assert triggers  # 0009's and 0010's
    command.downgrade(_alembic_config(db.engine), "0010")
    with db.engine.connect() as conn:
        columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(bodies)")}
    assert "fields" not in columns
    db.close()
    db = Database.open(tmp_path / "m.db")  # upgrades again
    try:
        assert trigger_names(db) == triggers
        store = SqlStore(db, ChangeNotifier())
        block = RAW[:RAW.index(b"\r\n\r\n") + 4]
        assert await store.fetch_headers(inbox.id, [1, 2, 3], fields=True) == {
            u: block for u in (1, 2, 3)}  # no fields stored: the header block
        _, uid = await store.append(inbox.id, RAW, frozenset(), None)
        assert await store.fetch_headers(inbox.id, [3, uid], fields=True) == {
            3: block, uid: b"Subject: old\r\nFrom: f\r\n\r\n"}
        assert await store.fetch_headers(inbox.id, [uid]) == {uid: block}
        with db.engine.connect() as conn:
            stored = conn.exec_driver_sql(
                "SELECT fields FROM bodies ORDER BY id DESC LIMIT 1").scalar_one()
        assert bytes(stored)[0] == STORED_FIELDS_VERSION
        box = await store.get_mailbox(user.id, "INBOX")
        assert box is not None and box.messages == 4  # the count triggers still count
    finally:
        db.close()
