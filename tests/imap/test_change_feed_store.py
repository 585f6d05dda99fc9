"""The change feed contract (modseqs, tombstones, UNCHANGEDSINCE), on both stores.

The ``store`` fixture runs every test against the in-memory store and the SQLite store, so
the two cannot drift apart.
"""

from __future__ import annotations

import random

from mailnode.store.api import MailStore, MessageMeta
from tests.imap.conftest import MESSAGE


async def _inbox(store: MailStore) -> int:
    user = await store.authenticate("alice", "secret")
    assert user is not None
    box = await store.get_mailbox(user.id, "INBOX")
    assert box is not None
    return box.id


async def _highest(store: MailStore, mailbox_id: int) -> int:
    return (await store.changes_since(mailbox_id, 0)).highest_modseq


async def test_every_append_takes_the_next_modseq(store: MailStore) -> None:
    box = await _inbox(store)
    start = await _highest(store, box)
    for _ in range(3):
        await store.append(box, MESSAGE, frozenset(), None)
    metas = await store.list_messages(box)
    assert [m.modseq for m in metas] == [start + 1, start + 2, start + 3]
    user = await store.authenticate("alice", "secret")
    assert user is not None
    mailbox = await store.get_mailbox(user.id, "INBOX")
    assert mailbox is not None and mailbox.highest_modseq == start + 3
    feed = await store.changes_since(box, start + 1)
    assert [m.uid for m in feed.changed] == [2, 3]
    assert feed.vanished == [] and feed.complete and feed.highest_modseq == start + 3
    assert (await store.changes_since(box, start + 3)).changed == []


async def test_a_flag_change_moves_only_the_changed_messages(store: MailStore) -> None:
    box = await _inbox(store)
    for _ in range(3):
        await store.append(box, MESSAGE, frozenset({"\\Seen"}) if _ == 0 else frozenset(), None)
    before = await _highest(store, box)
    metas = await store.store_flags(box, [1, 2], frozenset({"\\Seen"}), "add")
    after = await _highest(store, box)
    assert after == before + 1  # one modseq for the whole STORE
    by_uid = {m.uid: m for m in metas}
    assert by_uid[2].modseq == after and by_uid[1].modseq < before  # uid 1 did not change
    feed = await store.changes_since(box, before)
    assert [(m.uid, m.modseq, "\\Seen" in m.flags) for m in feed.changed] == [(2, after, True)]
    # Storing what is already there changes nothing, not even the counter.
    await store.store_flags(box, [1, 2], frozenset({"\\Seen"}), "add")
    assert await _highest(store, box) == after


async def test_expunge_and_move_leave_tombstones(store: MailStore) -> None:
    box = await _inbox(store)
    user = await store.authenticate("alice", "secret")
    assert user is not None
    trash = await store.get_mailbox(user.id, "Trash")
    assert trash is not None
    for _ in range(4):
        await store.append(box, MESSAGE, frozenset(), None)
    await store.store_flags(box, [1, 3], frozenset({"\\Deleted"}), "add")
    before = await _highest(store, box)
    assert await store.expunge(box) == [1, 3]
    feed = await store.changes_since(box, before)
    assert feed.vanished == [1, 3] and feed.changed == [] and feed.highest_modseq == before + 1
    moved_from = feed.highest_modseq
    trash_before = await _highest(store, trash.id)
    await store.move(box, [4], trash.id)
    assert (await store.changes_since(box, moved_from)).vanished == [4]
    into = await store.changes_since(trash.id, trash_before)
    assert [m.uid for m in into.changed] == [1] and into.changed[0].modseq > trash_before
    # Older tombstones are still there for a client that synced before both.
    assert (await store.changes_since(box, before)).vanished == [1, 3, 4]


async def test_unchangedsince_fails_messages_changed_after_it(store: MailStore) -> None:
    box = await _inbox(store)
    for _ in range(3):
        await store.append(box, MESSAGE, frozenset(), None)
    mark = await _highest(store, box)
    await store.store_flags(box, [2], frozenset({"$Work"}), "add")  # uid 2 moves past mark
    stored, failed = await store.store_flags_unchanged_since(
        box, [1, 2, 3], frozenset({"\\Flagged"}), "add", mark)
    assert failed == [2]
    assert [m.uid for m in stored] == [1, 3]
    flags = {m.uid: m.flags for m in await store.list_messages(box)}
    assert "\\Flagged" not in flags[2] and "\\Flagged" in flags[1] and "$Work" in flags[2]
    # UNCHANGEDSINCE 0 fails everywhere (every message has a modseq of at least 1).
    stored, failed = await store.store_flags_unchanged_since(
        box, [1, 2, 3], frozenset({"\\Seen"}), "add", 0)
    assert stored == [] and failed == [1, 2, 3]


async def test_tombstones_are_bounded_and_old_askers_get_a_full_resync(
        store: MailStore) -> None:
    box = await _inbox(store)
    store.tombstone_limit = 4  # type: ignore[attr-defined]
    for _ in range(8):
        await store.append(box, MESSAGE, frozenset({"\\Deleted"}), None)
    start = await _highest(store, box)
    marks = []
    for uid in range(1, 8):
        marks.append(await _highest(store, box))
        await store.expunge(box, [uid])
    old = await store.changes_since(box, start)
    assert not old.complete and old.vanished == []
    recent = await store.changes_since(box, marks[-2])
    assert recent.complete and recent.vanished == [6, 7]
    # Whatever is answered as complete is right: every uid expunged after the mark.
    for i, mark in enumerate(marks):
        feed = await store.changes_since(box, mark)
        if feed.complete:
            assert feed.vanished == list(range(i + 1, 8))


async def test_a_follower_applying_the_feed_matches_the_listing(store: MailStore) -> None:
    """Random appends, flag changes, expunges and moves; a follower that only ever reads
    the feed holds exactly the mailbox's listing after each step."""
    box = await _inbox(store)
    user = await store.authenticate("alice", "secret")
    assert user is not None
    other = await store.get_mailbox(user.id, "Trash")
    assert other is not None
    rng = random.Random(7)
    view: dict[int, MessageMeta] = {}
    seen = 0
    for _ in range(80):
        uids = [m.uid for m in await store.list_messages(box)]
        op = rng.choice(["append", "append", "flags", "expunge", "move"])
        some = rng.sample(uids, min(len(uids), rng.randint(1, 3))) if uids else []
        if op == "append" or not uids:
            await store.append(box, MESSAGE, frozenset(rng.sample(["\\Seen", "$A"], 1)), None)
        elif op == "flags":
            await store.store_flags(box, some, frozenset({rng.choice(["\\Deleted", "$B"])}),
                                    rng.choice(["add", "remove", "set"]))
        elif op == "expunge":
            await store.expunge(box, some)
        else:
            await store.move(box, some, other.id)
        feed = await store.changes_since(box, seen)
        assert feed.complete
        for uid in feed.vanished:
            view.pop(uid, None)
        view.update({m.uid: m for m in feed.changed})
        seen = feed.highest_modseq
        assert sorted(view.values(), key=lambda m: m.uid) == await store.list_messages(box)
