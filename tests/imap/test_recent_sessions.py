"""\\Recent across sessions (RFC 3501 §2.3.2): a message is recent in exactly one session, the
first to be told of it. A message that arrives while a session is catching up (between its
read of the mailbox and its claim of \\Recent) is not one the session has been told of: it
must stay unclaimed for whoever announces it first, not be claimed and then shown nowhere.
imaptest's checkpoints add up RECENT over all sessions and found it short. Runs on both stores.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, Dialog


async def session(store: MailStore, notifier: ChangeNotifier) -> Dialog:
    d = Dialog(ImapSession(store, notifier))
    assert (await d.send(b"L LOGIN alice secret\r\n")).startswith(b"L OK")
    return d


def deliver_after_next(store: MailStore, method: str, mailbox_id: int) -> None:
    """The next ``method`` call (the session's read of the mailbox) returns what it read,
    and a message is delivered right after: before the session claims \\Recent."""
    real: Callable[..., Awaitable[Any]] = getattr(store, method)

    async def read_then_deliver(*args: Any, **kwargs: Any) -> Any:
        setattr(store, method, real)  # once
        result = await real(*args, **kwargs)
        await store.append(mailbox_id, MESSAGE, frozenset(), None)
        return result

    setattr(store, method, read_then_deliver)


def recent_uids(out: bytes) -> list[int]:
    return [int(u) for u in re.findall(rb"UID (\d+) FLAGS \([^)]*\\Recent", out)]


@pytest.mark.parametrize("read", ["snapshot", "changes_since"])
async def test_mail_arriving_during_a_catch_up_is_recent_where_it_is_first_told(
        store: MailStore, notifier: ChangeNotifier, read: str) -> None:
    watcher, other = await session(store, notifier), await session(store, notifier)
    assert b"c OK" in await watcher.send(b"c CREATE Box\r\n")
    assert watcher.session.user is not None
    box = await store.get_mailbox(watcher.session.user.id, "Box")
    assert box is not None
    if read == "snapshot":  # uid 2 lands between SELECT's listing and its claim
        await store.append(box.id, MESSAGE, frozenset(), None)
        deliver_after_next(store, read, box.id)
        out = await watcher.send(b"s SELECT Box\r\n")
    else:  # uid 2 lands between a NOOP's read of the feed and its claim
        assert b"* 0 EXISTS\r\n* 0 RECENT\r\n" in await watcher.send(b"s SELECT Box\r\n")
        await store.append(box.id, MESSAGE, frozenset(), None)
        deliver_after_next(store, read, box.id)
        out = await watcher.send(b"n NOOP\r\n")
    # The same command's closing catch-up tells of uid 2: the watcher is the first session
    # told of it, so it is recent there...
    assert b"* 1 EXISTS\r\n* 1 RECENT\r\n" in out, out
    assert b"* 2 EXISTS\r\n* 2 RECENT\r\n" in out, out
    out = await watcher.send(b"f FETCH 1:* (UID FLAGS)\r\n")
    assert recent_uids(out) == [1, 2], out
    assert b"* SEARCH 1 2\r\n" in await watcher.send(b"r SEARCH RECENT\r\n")
    # ... and nowhere else.
    out = await other.send(b"s SELECT Box\r\n")
    assert b"* 2 EXISTS\r\n* 0 RECENT\r\n" in out, out


async def test_a_claim_stops_at_the_newest_message_the_session_knows(store: MailStore) -> None:
    """The store's side: ``known`` bounds what is taken and what EXAMINE is shown."""
    user = await store.authenticate("alice", "secret")
    assert user is not None
    box = await store.get_mailbox(user.id, "INBOX")
    assert box is not None
    for _ in range(3):
        await store.append(box.id, MESSAGE, frozenset(), None)
    assert await store.claim_recent(box.id, 2, claim=False) == (0, 2)  # a peek, bounded
    assert await store.claim_recent(box.id, 1) == (0, 1)  # told of uid 1 only: uid 1
    assert await store.claim_recent(box.id, 0) == (1, 1)  # knows less: nothing
    assert await store.claim_recent(box.id, 3) == (1, 3)  # uids 2 and 3 were left for it
    assert await store.claim_recent(box.id, 3) == (3, 3)
    listed = await store.get_mailbox(user.id, "INBOX")
    assert listed is not None and listed.recent == 0


async def test_recent_is_told_again_when_expunges_change_it(store: MailStore,
                                                            notifier: ChangeNotifier) -> None:
    """RECENT comes with a change in the mailbox's size (RFC 3501 §7.3.2) and the client must
    record it: after EXPUNGEs that took recent messages the count is told again, or a client
    adding up RECENT over its sessions counts messages that are gone (imaptest's checkpoint:
    total RECENT larger than the message count)."""
    watcher, other = await session(store, notifier), await session(store, notifier)
    for _ in range(3):
        await other.send(b"a APPEND INBOX {%d}\r\n" % len(MESSAGE))
        assert b"a OK" in await other.send(MESSAGE + b"\r\n")
    assert b"* 3 EXISTS\r\n* 3 RECENT\r\n" in await watcher.send(b"s SELECT INBOX\r\n")
    await other.send(b"s SELECT INBOX\r\n")
    assert b"d OK" in await other.send(b"d STORE 1,3 +FLAGS.SILENT (\\Deleted)\r\n")
    assert b"* 1 EXPUNGE\r\n" in await other.send(b"e EXPUNGE\r\n")
    assert await watcher.send(b"n NOOP\r\n") == (
        b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n* 1 RECENT\r\nn OK NOOP completed\r\n")
    assert b"d OK" in await watcher.send(b"d STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert await watcher.send(b"e EXPUNGE\r\n") == (
        b"* 1 EXPUNGE\r\n* 0 RECENT\r\ne OK EXPUNGE completed\r\n")
    # uid 2 was recent in the watcher only: the other session's count (0) did not change.
    assert await other.send(b"n NOOP\r\n") == b"* 1 EXPUNGE\r\nn OK NOOP completed\r\n"
