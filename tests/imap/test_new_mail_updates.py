"""Another session's changes reach a selected session in the right form whatever their mix:
new messages alone are announced from the end of the listing (no full comparison), and any
other change (flags, expunge) still gets the full comparison. Runs on both stores."""

from __future__ import annotations

import re

from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, Dialog


async def session(store: MailStore, notifier: ChangeNotifier) -> Dialog:
    d = Dialog(ImapSession(store, notifier))
    assert (await d.send(b"L LOGIN alice secret\r\n")).startswith(b"L OK")
    return d


async def append(d: Dialog, flags: bytes = b"") -> None:
    await d.send(b"a APPEND INBOX %s{%d}\r\n" % (flags, len(MESSAGE)))
    assert b"a OK" in await d.send(MESSAGE + b"\r\n")


async def test_mixed_changes_are_reported_exactly(store: MailStore,
                                                  notifier: ChangeNotifier) -> None:
    watcher, writer = await session(store, notifier), await session(store, notifier)
    for _ in range(3):
        await append(writer)
    assert b"* 3 EXISTS" in await watcher.send(b"s SELECT INBOX\r\n")
    for expected in (4, 5):
        await append(writer)
        out = await watcher.send(b"n NOOP\r\n")
        # Every message is \Recent in the watcher's session: it was the first to see them.
        assert b"* %d EXISTS" % expected in out and b"* %d RECENT" % expected in out, out
    await writer.send(b"x SELECT INBOX\r\n")
    await writer.send(b"f STORE 2 +FLAGS (\\Flagged)\r\n")
    await append(writer)
    out = await watcher.send(b"n NOOP\r\n")
    assert b"* 2 FETCH (UID 2 FLAGS (\\Flagged" in out and b"* 6 EXISTS" in out, out
    await writer.send(b"d STORE 1 +FLAGS (\\Deleted)\r\n")
    await writer.send(b"e EXPUNGE\r\n")
    await append(writer)
    out = await watcher.send(b"n NOOP\r\n")
    assert b"* 1 EXPUNGE" in out and b"* 6 EXISTS" in out, out
    out = await watcher.send(b"u UID FETCH 1:* (FLAGS)\r\n")
    listed = [int(u) for u in re.findall(rb"UID (\d+)", out)]
    assert listed == [2, 3, 4, 5, 6, 7]
    # Sequence numbers of new mail are right: the last message is 6, uid 7.
    assert b"* 6 FETCH (UID 7" in await watcher.send(b"f FETCH 6 (UID)\r\n")
