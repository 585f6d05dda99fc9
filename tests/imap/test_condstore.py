"""CONDSTORE and QRESYNC (RFC 7162) and the change feed, as dialogues over bytes on both
stores: one session alone, then two sessions on one mailbox.

A new mailbox starts at modseq 1 and each change takes the next one, so after three appends
the messages (uids 1-3) have modseqs 2, 3, 4 and HIGHESTMODSEQ is 4.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from mailnode.imap import feed
from mailnode.imap.errors import ParseError
from mailnode.imap.parser import parse_one
from mailnode.imap.session import ImapSession
from mailnode.store.api import Changes, Mailbox, MailStore, MessageMeta
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, Dialog


async def session(store: MailStore, notifier: ChangeNotifier) -> Dialog:
    d = Dialog(ImapSession(store, notifier))
    assert (await d.send(b"L LOGIN alice secret\r\n")).startswith(b"L OK")
    return d


async def three(store: MailStore, notifier: ChangeNotifier, select: bytes = b"",
                ) -> Dialog:
    """A session with three messages in INBOX, selected (``select``: extra SELECT args)."""
    d = await session(store, notifier)
    for _ in range(3):
        await d.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    out = await d.send(b"s SELECT INBOX" + select + b"\r\n")
    assert b"* OK [HIGHESTMODSEQ 4] Highest\r\n" in out, out
    return d


async def test_enable_names_what_it_switched_on(store: MailStore,
                                                notifier: ChangeNotifier) -> None:
    d = await session(store, notifier)
    assert await d.send(b"e ENABLE X-NONE QRESYNC\r\n") == (
        b"* ENABLED QRESYNC\r\ne OK ENABLE completed\r\n")
    # QRESYNC implied CONDSTORE: enabling it again is not news.
    assert await d.send(b"e ENABLE CONDSTORE QRESYNC\r\n") == (
        b"* ENABLED\r\ne OK ENABLE completed\r\n")
    assert b"CONDSTORE QRESYNC" in await d.send(b"c CAPABILITY\r\n")


async def test_status_and_fetch_modseq(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await three(store, notifier)
    assert await d.send(b"st STATUS INBOX (MESSAGES HIGHESTMODSEQ)\r\n") == (
        b"* OK [HIGHESTMODSEQ 4] Highest\r\n"  # the first CONDSTORE-enabling command
        b'* STATUS "INBOX" (MESSAGES 3 HIGHESTMODSEQ 4)\r\nst OK STATUS completed\r\n')
    assert await d.send(b"f FETCH 1:2 (MODSEQ)\r\n") == (
        b"* 1 FETCH (MODSEQ (2))\r\n* 2 FETCH (MODSEQ (3))\r\nf OK FETCH completed\r\n")


async def test_changedsince_lists_only_later_changes(store: MailStore,
                                                     notifier: ChangeNotifier) -> None:
    d = await three(store, notifier)
    await d.send(b"s STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")  # uid 2 -> modseq 5
    assert await d.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE 3)\r\n") == (
        b"* OK [HIGHESTMODSEQ 5] Highest\r\n"  # CONDSTORE is enabled in a selected mailbox
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (5))\r\n"
        b"* 3 FETCH (FLAGS (\\Recent) MODSEQ (4))\r\nf OK FETCH completed\r\n")
    assert await d.send(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)\r\n") == (
        b"f OK UID FETCH completed\r\n")


async def test_unchangedsince_stores_only_unchanged_messages(
        store: MailStore, notifier: ChangeNotifier) -> None:
    d = await three(store, notifier, b" (CONDSTORE)")
    await d.send(b"s STORE 2 +FLAGS.SILENT ($Work)\r\n")  # uid 2 -> modseq 5
    assert await d.send(b"c STORE 1:3 (UNCHANGEDSINCE 4) +FLAGS (\\Seen)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (6))\r\n"
        b"* 3 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (6))\r\n"
        b"c OK [MODIFIED 2] STORE completed\r\n")
    # UID STORE reports uids; .SILENT still tells the new modseq of what changed, and
    # nothing for a message whose flags were already so.
    assert await d.send(b"u UID STORE 1:3 (UNCHANGEDSINCE 6) +FLAGS.SILENT (\\Seen)\r\n") == (
        b"* 2 FETCH (UID 2 MODSEQ (7))\r\nu OK UID STORE completed\r\n")
    assert await d.send(b"z UID STORE 1 (UNCHANGEDSINCE 0) -FLAGS (\\Seen)\r\n") == (
        b"z OK [MODIFIED 1] UID STORE completed\r\n")


async def test_search_modseq(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await three(store, notifier, b" (CONDSTORE)")
    assert await d.send(b"s SEARCH MODSEQ 3\r\n") == (
        b"* SEARCH 2 3 (MODSEQ 4)\r\ns OK SEARCH completed\r\n")
    assert await d.send(b's UID SEARCH MODSEQ "/flags/\\\\draft" all 4 UNSEEN\r\n') == (
        b"* SEARCH 3 (MODSEQ 4)\r\ns OK UID SEARCH completed\r\n")
    assert await d.send(b"s SEARCH MODSEQ 5\r\n") == b"* SEARCH\r\ns OK SEARCH completed\r\n"
    assert await d.send(b"s SORT (ARRIVAL) UTF-8 MODSEQ 3\r\n") == (
        b"* SORT 2 3 (MODSEQ 4)\r\ns OK SORT completed\r\n")


async def test_esearch_carries_the_modseq_of_what_it_reports(
        store: MailStore, notifier: ChangeNotifier) -> None:
    """RFC 7162 §3.1.5 with RFC 4731: MODSEQ after the result items, the highest modseq of
    the messages the response reports (only MIN's and MAX's when only they are asked for);
    none for an empty result; such a search enables CONDSTORE."""
    d = await session(store, notifier)
    for _ in range(3):
        await d.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    await d.send(b"s SELECT INBOX\r\n")
    assert await d.send(b"s SEARCH RETURN (MIN) MODSEQ 2\r\n") == (
        b"* OK [HIGHESTMODSEQ 4] Highest\r\n"  # the first CONDSTORE-enabling command
        b'* ESEARCH (TAG "s") MIN 1 MODSEQ 2\r\ns OK SEARCH completed\r\n')
    assert await d.send(b"s SEARCH RETURN (ALL) MODSEQ 3\r\n") == (
        b'* ESEARCH (TAG "s") ALL 2:3 MODSEQ 4\r\ns OK SEARCH completed\r\n')
    assert await d.send(b"s UID SEARCH RETURN (MIN MAX) CHARSET UTF-8 MODSEQ 2 UNSEEN\r\n") \
        == b'* ESEARCH (TAG "s") UID MIN 1 MAX 3 MODSEQ 4\r\ns OK UID SEARCH completed\r\n'
    assert await d.send(b"s SEARCH RETURN (COUNT) MODSEQ 2 NOT 3\r\n") == (
        b'* ESEARCH (TAG "s") COUNT 2 MODSEQ 3\r\ns OK SEARCH completed\r\n')
    assert await d.send(b"s SEARCH RETURN (COUNT) MODSEQ 5\r\n") == (
        b'* ESEARCH (TAG "s") COUNT 0\r\ns OK SEARCH completed\r\n')
    assert await d.send(b"s SEARCH RETURN (MIN) UNSEEN\r\n") == (  # no MODSEQ key: none
        b'* ESEARCH (TAG "s") MIN 1\r\ns OK SEARCH completed\r\n')
    assert await d.send(b"s SORT RETURN (ALL) (ARRIVAL) UTF-8 MODSEQ 3\r\n") == (
        b'* ESEARCH (TAG "s") ALL 2:3 MODSEQ 4\r\ns OK SORT completed\r\n')


async def test_a_context_hears_of_expunges_before_vanished(
        store: MailStore, notifier: ChangeNotifier) -> None:
    """Catching up from the feed keeps RFC 5267's order: REMOVEFROM, numbered as the client
    still numbers the messages, before the VANISHED (or EXPUNGE) that drops them."""
    watcher = await session(store, notifier)
    await watcher.send(b"e ENABLE QRESYNC\r\n")
    for _ in range(4):
        await watcher.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    await watcher.send(b"s SELECT INBOX\r\n")
    assert b'ALL 1:4' in await watcher.send(b"A SEARCH RETURN (UPDATE ALL) UNSEEN\r\n")
    writer = await session(store, notifier)
    await writer.send(b"s SELECT INBOX\r\n")
    await writer.send(b"d STORE 2:3 +FLAGS.SILENT (\\Deleted)\r\n")
    await writer.send(b"e EXPUNGE\r\n")
    out = await watcher.send(b"n NOOP\r\n")
    assert out.index(b'* ESEARCH (TAG "A") REMOVEFROM (0 2:3)\r\n') < out.index(
        b"* VANISHED 2:3\r\n"), out
    await writer.send(b"f STORE 2 +FLAGS.SILENT (\\Seen)\r\n")  # uid 4, now number 2
    out = await watcher.send(b"n NOOP\r\n")
    assert b'* ESEARCH (TAG "A") REMOVEFROM (0 2)\r\n' in out, out


async def test_another_sessions_store_arrives_with_its_modseq(
        store: MailStore, notifier: ChangeNotifier) -> None:
    watcher = await three(store, notifier, b" (CONDSTORE)")
    writer = await session(store, notifier)
    await writer.send(b"s SELECT INBOX\r\n")
    await writer.send(b"f STORE 2 +FLAGS (\\Answered)\r\n")
    assert await watcher.send(b"n NOOP\r\n") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Answered \\Recent) MODSEQ (5))\r\nn OK NOOP completed\r\n")
    assert await watcher.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"  # told once


async def test_a_new_keyword_is_announced_before_a_fetch_shows_it(
        store: MailStore, notifier: ChangeNotifier) -> None:
    watcher = await three(store, notifier)
    writer = await session(store, notifier)
    await writer.send(b"s SELECT INBOX\r\n")
    await writer.send(b"f STORE 1 +FLAGS.SILENT ($Urgent)\r\n")
    out = await watcher.send(b"n NOOP\r\n")
    flags = out.index(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent)")
    assert flags < out.index(b"* 1 FETCH (UID 1 FLAGS (\\Recent $Urgent))"), out
    # An implicit \Seen that brings back another session's keyword announces it too.
    await writer.send(b"f STORE 2 +FLAGS.SILENT ($Later)\r\n")
    out = await watcher.send(b"f FETCH 2 (BODY[])\r\n")
    assert out.index(b"$Later)") > out.index(b"* FLAGS ("), out


async def test_expunges_wait_for_a_command_that_may_report_them(
        store: MailStore, notifier: ChangeNotifier) -> None:
    watcher = await three(store, notifier)
    writer = await session(store, notifier)
    await writer.send(b"s SELECT INBOX\r\n")
    await writer.send(b"d STORE 2 +FLAGS.SILENT (\\Deleted)\r\n")
    await writer.send(b"e EXPUNGE\r\n")
    await writer.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    # RFC 3501 §7.4.1: no EXPUNGE during FETCH by sequence number; the new message may
    # be announced, and counts the expunged one that is still numbered.
    out = await watcher.send(b"f FETCH 1 (UID)\r\n")
    assert b"EXPUNGE" not in out and b"* 4 EXISTS\r\n" in out, out
    out = await watcher.send(b"f FETCH 2 (BODY.PEEK[])\r\n")
    assert out.endswith(b"f NO [EXPUNGEISSUED] Some of the requested messages no longer "
                        b"exist\r\n"), out
    out = await watcher.send(b"n NOOP\r\n")
    # uid 2 was one of the watcher's three \Recent messages (the writer took uid 4)
    assert out == b"* 2 EXPUNGE\r\n* 2 RECENT\r\nn OK NOOP completed\r\n"
    out = await watcher.send(b"u UID FETCH 1:* (UID)\r\n")
    assert re.findall(rb"\* (\d+) FETCH \(UID (\d+)\)", out) == [
        (b"1", b"1"), (b"2", b"3"), (b"3", b"4")]


async def test_qresync_sessions_see_vanished(store: MailStore,
                                             notifier: ChangeNotifier) -> None:
    watcher = await session(store, notifier)
    await watcher.send(b"e ENABLE QRESYNC\r\n")
    for _ in range(4):
        await watcher.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    await watcher.send(b"s SELECT INBOX\r\n")
    writer = await session(store, notifier)
    await writer.send(b"s SELECT INBOX\r\n")
    await writer.send(b"d STORE 2:3 +FLAGS.SILENT (\\Deleted)\r\n")
    await writer.send(b"e EXPUNGE\r\n")
    out = await watcher.send(b"n NOOP\r\n")
    assert out.startswith(b"* VANISHED 2:3\r\n") and b"EXPUNGE" not in out, out
    # Its own EXPUNGE: VANISHED, then the modseq after it in the tagged OK.
    await watcher.send(b"d UID STORE 4 +FLAGS.SILENT (\\Deleted)\r\n")  # modseq 8
    assert await watcher.send(b"e EXPUNGE\r\n") == (
        b"* VANISHED 4\r\n* 1 RECENT\r\ne OK [HIGHESTMODSEQ 9] EXPUNGE completed\r\n")


async def test_qresync_select_reports_what_changed_since(
        store: MailStore, notifier: ChangeNotifier) -> None:
    d = await session(store, notifier)
    for _ in range(5):
        await d.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    out = await d.send(b"s SELECT INBOX\r\n")  # modseq 6 now
    uidvalidity = int(re.findall(rb"UIDVALIDITY (\d+)", out)[0])
    assert b"BAD" in await d.send(b"q SELECT INBOX (QRESYNC (%d 6))\r\n" % uidvalidity)
    await d.send(b"d STORE 1,3 +FLAGS.SILENT (\\Deleted)\r\n")  # modseq 7
    await d.send(b"e EXPUNGE\r\n")  # modseq 8
    await d.send(b"f STORE 3 +FLAGS.SILENT (\\Flagged)\r\n")  # uid 5, modseq 9
    await d.send(b"e ENABLE QRESYNC\r\n")
    out = await d.send(b"q SELECT INBOX (QRESYNC (%d 6))\r\n" % uidvalidity)
    assert out.startswith(b"* OK [CLOSED]"), out
    assert b"* VANISHED (EARLIER) 1,3\r\n* 3 FETCH (UID 5 FLAGS (\\Flagged) MODSEQ (9))\r\n" \
        in out, out
    assert out.index(b"HIGHESTMODSEQ 9") < out.index(b"VANISHED")
    # Known uids narrow VANISHED; a changed UIDVALIDITY means nothing is resynchronised.
    out = await d.send(b"q EXAMINE INBOX (QRESYNC (%d 6 2:4))\r\n" % uidvalidity)
    assert b"* VANISHED (EARLIER) 3\r\n" in out, out
    out = await d.send(b"q EXAMINE INBOX (QRESYNC (%d 6))\r\n" % (uidvalidity + 1))
    assert b"VANISHED" not in out and b"FETCH" not in out, out
    out = await d.send(b"f UID FETCH 4:* (FLAGS) (CHANGEDSINCE 6 VANISHED)\r\n")
    assert b"VANISHED" not in out, out  # "*" is uid 5 here: 4:5 has no expunged uid
    # UID FETCH with VANISHED: expunged uids in the set first, then what changed.
    out = await d.send(b"f UID FETCH 3:* (FLAGS) (CHANGEDSINCE 6 VANISHED)\r\n")
    assert out == (b"* VANISHED (EARLIER) 3\r\n"
                   b"* 3 FETCH (UID 5 FLAGS (\\Flagged) MODSEQ (9))\r\n"
                   b"f OK UID FETCH completed\r\n"), out


async def test_vanished_modifier_needs_qresync_and_uid(store: MailStore,
                                                       notifier: ChangeNotifier) -> None:
    d = await three(store, notifier)
    assert b"f BAD" in await d.send(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n")
    await d.send(b"e ENABLE QRESYNC\r\n")
    assert b"f BAD" in await d.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n")


def test_modifier_syntax() -> None:
    cmd = parse_one(b"a UID FETCH 1:* (FLAGS) (VANISHED CHANGEDSINCE 12345678901234)\r\n")
    assert cmd.changedsince == 12345678901234 and cmd.vanished  # type: ignore[attr-defined]
    cmd = parse_one(b"a STORE 1 (UNCHANGEDSINCE 0) FLAGS.SILENT (\\Seen)\r\n")
    assert cmd.unchangedsince == 0 and cmd.silent  # type: ignore[attr-defined]
    cmd = parse_one(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211 "
                    b"(1:3 1,5,9)))\r\n")
    assert cmd.qresync.modseq == 20050715194045000  # type: ignore[attr-defined]
    for bad in (b"a FETCH 1 FLAGS (CHANGEDSINCE)\r\n",
                b"a FETCH 1 FLAGS (VANISHED)\r\n",
                b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)\r\n",
                b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)\r\n",
                b"a STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)\r\n",
                b"a SELECT INBOX (QRESYNC (0 1))\r\n",
                b"a SELECT INBOX (QRESYNC (1 0))\r\n",
                b"a SELECT INBOX (QRESYNC (1 1 1:*))\r\n",
                b"a SELECT INBOX (CONDSTORE CONDSTORE)\r\n",
                b"a SEARCH MODSEQ \"/flags/x\" none 1\r\n"):
        with pytest.raises(ParseError):
            parse_one(bad)


class CountingStore:
    """Wraps a store and counts the reads that cost the mailbox's size."""

    def __init__(self, inner: MailStore) -> None:
        self.inner = inner
        self.full_reads = 0
        self.feed_rows = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def snapshot(self, mailbox_id: int) -> tuple[list[MessageMeta], int]:
        self.full_reads += 1
        return await self.inner.snapshot(mailbox_id)

    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        self.full_reads += 1
        return await self.inner.list_messages(mailbox_id)

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        changes = await self.inner.changes_since(mailbox_id, modseq)
        self.feed_rows += len(changes.changed) + len(changes.vanished)
        return changes


async def test_catching_up_reads_the_changes_not_the_mailbox(
        store: MailStore, notifier: ChangeNotifier) -> None:
    writer = await session(store, notifier)
    for _ in range(40):
        await writer.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    counting = CountingStore(store)
    watcher = Dialog(ImapSession(counting, notifier))  # type: ignore[arg-type]
    await watcher.send(b"L LOGIN alice secret\r\ns SELECT INBOX\r\n")
    assert counting.full_reads == 1
    await writer.send(b"s SELECT INBOX\r\n")
    await writer.send(b"f STORE 7 +FLAGS (\\Flagged)\r\n")
    await writer.send(b"d STORE 9 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE\r\n")
    await writer.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    counting.feed_rows = 0
    out = await watcher.send(b"n NOOP\r\n")
    assert b"* 7 FETCH (UID 7 FLAGS (\\Flagged" in out and b"* 9 EXPUNGE" in out \
        and b"* 40 EXISTS" in out, out
    assert counting.full_reads == 1  # nothing re-listed
    # the flag change, the expunge (its \\Deleted flag went with it) and the new message
    assert counting.feed_rows == 3


async def test_a_session_away_past_the_tombstones_still_gets_every_expunge(
        store: MailStore, notifier: ChangeNotifier) -> None:
    store.tombstone_limit = 4  # type: ignore[attr-defined]
    writer = await session(store, notifier)
    for _ in range(10):
        await writer.send(b"a APPEND INBOX (\\Deleted) {%d+}\r\n" % len(MESSAGE)
                          + MESSAGE + b"\r\n")
    watcher = await session(store, notifier)
    await watcher.send(b"s SELECT INBOX\r\n")
    await writer.send(b"s SELECT INBOX\r\n")
    for uid in range(1, 9):  # eight expunges, one at a time: older tombstones dropped
        await writer.send(b"e UID EXPUNGE %d\r\n" % uid)
    out = await watcher.send(b"n NOOP\r\n")
    assert out == b"".join(b"* %d EXPUNGE\r\n" % n for n in range(8, 0, -1)) \
        + b"* 2 RECENT\r\nn OK NOOP completed\r\n", out
    out = await watcher.send(b"u UID FETCH 1:* (UID)\r\n")
    assert re.findall(rb"UID (\d+)", out) == [b"9", b"10"]


async def test_held_back_expunges_keep_highestmodseq_below_them(
        store: MailStore, notifier: ChangeNotifier) -> None:
    """A STORE by sequence number cannot report another session's expunge; the MODSEQs it
    sends are past that expunge, so the client is told a HIGHESTMODSEQ from before it."""
    watcher = await three(store, notifier, b" (CONDSTORE)")
    writer = await session(store, notifier)
    await writer.send(b"s SELECT INBOX\r\n")
    await writer.send(b"d STORE 1 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE\r\n")  # 5, 6
    out = await watcher.send(b"f STORE 3 +FLAGS (\\Seen)\r\n")  # modseq 7
    assert out == (b"* 3 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (7))\r\n"
                   b"* OK [HIGHESTMODSEQ 4] Expunges pending\r\n"
                   b"f OK STORE completed\r\n"), out
    out = await watcher.send(b"n NOOP\r\n")
    assert out == b"* 1 EXPUNGE\r\n* 2 RECENT\r\nn OK NOOP completed\r\n", out


@pytest.mark.parametrize("allow_expunge", [True, False])
def test_catching_up_names_what_left_and_what_changed(allow_expunge: bool) -> None:
    """feed.apply says which uids its lines expunge (with the numbers the client knew them
    by, gone from the view by then) and whose flags changed: the session's search contexts
    hear of both (RFC 5267 REMOVEFROM before EXPUNGE, ADDTO/REMOVEFROM on flag changes)."""
    when = datetime(2024, 1, 1, tzinfo=UTC)
    metas = {u: MessageMeta(u, frozenset(), when, 10, u + 1) for u in range(1, 6)}
    sel = feed.Selected(Mailbox(1, 1, "INBOX", 7, 6, None, 5, 5), False, [1, 2, 3, 4, 5],
                        dict(metas), 0, max_uid=5, modseq=6)
    changed = [MessageMeta(3, frozenset({"\\Seen"}), when, 10, 8), metas[5]]  # 5: unchanged
    update = feed.apply(sel, Changes(changed, [2, 4], 8), allow_expunge=allow_expunge,
                        condstore=False, qresync=False)
    assert update.changed == [3]
    if allow_expunge:
        assert update.expunged == {2: 2, 4: 4} and sel.uids == [1, 3, 5]
        assert update.lines[:2] == [b"4 EXPUNGE", b"2 EXPUNGE"]
    else:  # held back: nothing left the view yet
        assert update.expunged == {} and sel.uids == [1, 2, 3, 4, 5] and sel.gone == {2, 4}
