"""Mailbox counts (STATUS, SELECT, LIST) are counted once per change of the mailbox, not on
every lookup: counting reads every message row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from crypto.keys import Identity
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore


async def test_counts_are_reused_until_the_mailbox_changes(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "c.db")
    try:
        store = SqlStore(db, ChangeNotifier())
        user = await store.create_user("counter", "password1", Identity.generate())
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        for i in range(3):
            await store.append(inbox.id, b"Subject: %d\r\n\r\nx\r\n" % i,
                               frozenset({"\\Seen"}) if i == 0 else frozenset(), None)
        scans: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "count(*) FILTER" in statement:
                scans.append(statement)
        event.listen(db._reader_engine, "before_cursor_execute", seen)

        async def counts() -> tuple[int, int, int]:
            box = await store.get_mailbox(user.id, "INBOX")
            assert box is not None
            return box.messages, box.unseen, box.recent

        assert await counts() == (3, 2, 3)
        assert len(scans) == 1
        assert await counts() == (3, 2, 3)
        listed = await store.list_mailboxes(user.id)  # counts the others once
        assert len(scans) == len(listed)
        assert await store.list_mailboxes(user.id) == listed
        assert len(scans) == len(listed)
        await store.claim_recent(inbox.id)  # recent is read each time (it is not a change)
        assert await counts() == (3, 2, 0)
        assert len(scans) == len(listed)
        await store.store_flags(inbox.id, [2], frozenset({"\\Seen"}), "add")
        assert await counts() == (3, 1, 0)
        await store.append(inbox.id, b"Subject: new\r\n\r\nx\r\n", frozenset(), None)
        assert await counts() == (4, 2, 1)
        await store.store_flags(inbox.id, [1, 2, 3, 4], frozenset({"\\Deleted"}), "add")
        await store.expunge(inbox.id, [1])
        assert await counts() == (3, 2, 1)
        assert len(scans) == len(listed) + 3
    finally:
        db.close()
