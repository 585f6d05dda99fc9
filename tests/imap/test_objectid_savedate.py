"""RFC 8474 OBJECTID, RFC 8514 SAVEDATE and RFC 6154 CREATE-SPECIAL-USE over bytes, on both
stores: MAILBOXID in CREATE, SELECT/EXAMINE and STATUS, kept across RENAME and never given
again; EMAILID shared by copies and moves, THREADID NIL; FETCH SAVEDATE and the SAVED*
search keys; CREATE name (USE (...)) with [USEATTR] refusals."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

from alembic import command

from crypto.keys import Identity
from mailnode.store.api import MailStore
from mailnode.store.database import Database, _alembic_config
from mailnode.store.notify import ChangeNotifier
from mailnode.store.objectid import email_id, mailbox_id
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import MESSAGE, Dialog

DAY = 86400
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
OBJECTID = rb"[A-Za-z0-9_-]{1,255}"


def at(store: MailStore, when: float) -> None:
    store.clock = lambda: when  # type: ignore[attr-defined]  # both stores have it


def append(box: bytes = b"INBOX", message: bytes = MESSAGE,
           date: bytes = b'"01-Feb-2020 08:00:00 +0000" ') -> bytes:
    return b"A APPEND %s %s{%d+}\r\n%s\r\n" % (box, date, len(message), message)


def mailboxid(out: bytes) -> bytes:
    found = re.findall(rb"MAILBOXID \((" + OBJECTID + rb")\)", out)
    assert len(found) == 1, out
    return bytes(found[0])


def emailids(out: bytes) -> list[bytes]:
    return [bytes(m) for m in re.findall(rb"EMAILID \((" + OBJECTID + rb")\)", out)]


async def test_mailboxid_in_create_select_examine_status_and_across_rename(
        dialog: Dialog) -> None:
    await dialog.login()
    out = await dialog.send(b"a CREATE Projects\r\n")
    assert re.fullmatch(rb"a OK \[MAILBOXID \(" + OBJECTID + rb"\)\] CREATE completed\r\n",
                        out)
    made = mailboxid(out)
    out = await dialog.send(b"b SELECT Projects\r\n")
    assert b"* OK [MAILBOXID (" + made + b")] Ok\r\n" in out
    assert mailboxid(await dialog.send(b"c EXAMINE Projects\r\n")) == made
    assert await dialog.send(b"d STATUS Projects (MAILBOXID MESSAGES)\r\n") == (
        b'* STATUS "Projects" (MAILBOXID (' + made + b") MESSAGES 0)\r\n"
        b"d OK STATUS completed\r\n")
    assert (b'* STATUS "Projects" (MAILBOXID (' + made + b"))\r\n"  # LIST-STATUS too
            in await dialog.send(b'l LIST "" Projects RETURN (STATUS (MAILBOXID))\r\n'))
    await dialog.send(b"e CLOSE\r\n")
    assert (await dialog.send(b"f RENAME Projects Work\r\n")).startswith(b"f OK")
    assert mailboxid(await dialog.send(b"g STATUS Work (MAILBOXID)\r\n")) == made
    # a mailbox made again under the old name is another mailbox: another id, and the
    # deleted one's id is never handed out again
    out = await dialog.send(b"h CREATE Projects\r\n")
    again = mailboxid(out)
    assert again != made
    assert (await dialog.send(b"i DELETE Work\r\n")).startswith(b"i OK")
    assert mailboxid(await dialog.send(b"j CREATE Work\r\n")) not in (made, again)
    ids = {mailboxid(await dialog.send(b"k STATUS %s (MAILBOXID)\r\n" % name))
           for name in (b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive")}
    assert len(ids) == 6


async def test_emailid_shared_by_copies_and_moves_threadid_nil(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(append())
    await dialog.send(append())  # the same bytes appended again: another message
    await dialog.send(b"s SELECT INBOX\r\n")
    out = await dialog.send(b"f FETCH 1:2 (EMAILID THREADID)\r\n")
    first, second = emailids(out)
    assert first != second
    assert out == (b"* 1 FETCH (EMAILID (" + first + b") THREADID NIL)\r\n"
                   b"* 2 FETCH (EMAILID (" + second + b") THREADID NIL)\r\n"
                   b"f OK FETCH completed\r\n")
    assert (await dialog.send(b"c COPY 1 Archive\r\n")).startswith(b"c OK")
    assert (await dialog.send(b"m MOVE 2 Trash\r\n")).count(b"EXPUNGE") == 1
    await dialog.send(b"s SELECT Archive\r\n")
    assert emailids(await dialog.send(b"f UID FETCH 1 EMAILID\r\n")) == [first]
    await dialog.send(b"s SELECT Trash\r\n")
    assert emailids(await dialog.send(b"f FETCH 1 (EMAILID)\r\n")) == [second]
    # the objectid as the key of a search: this mailbox holds only the moved one
    assert await dialog.send(b"q SEARCH EMAILID " + second + b"\r\n") == (
        b"* SEARCH 1\r\nq OK SEARCH completed\r\n")
    assert await dialog.send(b"q SEARCH EMAILID " + first + b"\r\n") == (
        b"* SEARCH\r\nq OK SEARCH completed\r\n")
    assert await dialog.send(b"q SEARCH NOT EMAILID " + first + b"\r\n") == (
        b"* SEARCH 1\r\nq OK SEARCH completed\r\n")
    assert await dialog.send(b"q SEARCH THREADID T1\r\n") == (  # NIL matches nothing
        b"* SEARCH\r\nq OK SEARCH completed\r\n")
    assert await dialog.send(b"q SEARCH RETURN (COUNT) EMAILID " + second + b"\r\n") == (
        b'* ESEARCH (TAG "q") COUNT 1\r\nq OK SEARCH completed\r\n')
    for bad in (b"q SEARCH EMAILID a.b\r\n", b"q SEARCH EMAILID\r\n",
                b"q SEARCH EMAILID " + b"x" * 256 + b"\r\n", b"q FETCH 1 (EMAILID[])\r\n"):
        assert (await dialog.send(bad)).startswith(b"q BAD"), bad


async def test_other_users_ids_tell_nothing(dialog: Dialog, store: MailStore) -> None:
    """An id is a keyed hash of the row: bob's mail does not show up as a step in alice's
    ids, and her search for his id finds nothing."""
    bob = await store.authenticate("bob", "hunter2")
    assert bob is not None
    bob_inbox = await store.get_mailbox(bob.id, "INBOX")
    assert bob_inbox is not None
    _, uid = await store.append(bob_inbox.id, MESSAGE, frozenset(), None)
    bobs = (await store.message_objects(bob_inbox.id, [uid]))[uid].emailid
    await dialog.login()
    await dialog.send(append())
    await dialog.send(b"s SELECT INBOX\r\n")
    [mine] = emailids(await dialog.send(b"f FETCH 1 EMAILID\r\n"))
    assert mine != bobs.encode() and re.fullmatch(rb"E[0-9a-f]{24}", mine)
    assert await dialog.send(b"q SEARCH EMAILID " + bobs.encode() + b"\r\n") == (
        b"* SEARCH\r\nq OK SEARCH completed\r\n")


async def test_savedate_is_when_it_was_put_there(dialog: Dialog, store: MailStore) -> None:
    at(store, T0)
    await dialog.login()
    await dialog.send(append())  # INTERNALDATE in 2020: the save date is now
    at(store, T0 + 3 * DAY)
    await dialog.send(b"s SELECT INBOX\r\n")
    assert (await dialog.send(b"c COPY 1 Archive\r\n")).startswith(b"c OK")
    out = await dialog.send(b"f FETCH 1 (SAVEDATE INTERNALDATE)\r\n")
    assert out == (b'* 1 FETCH (SAVEDATE "10-Mar-2026 12:00:00 +0000" '
                   b'INTERNALDATE " 1-Feb-2020 08:00:00 +0000")\r\n'
                   b"f OK FETCH completed\r\n")
    at(store, T0 + 5 * DAY)
    await dialog.send(append(b"Archive", date=b""))  # INTERNALDATE: now
    await dialog.send(b"s SELECT Archive\r\n")
    out = await dialog.send(b"f UID FETCH 1:* SAVEDATE\r\n")
    assert out == (b'* 1 FETCH (UID 1 SAVEDATE "13-Mar-2026 12:00:00 +0000")\r\n'
                   b'* 2 FETCH (UID 2 SAVEDATE "15-Mar-2026 12:00:00 +0000")\r\n'
                   b"f OK UID FETCH completed\r\n")
    for key, found in ((b"SAVEDON 13-Mar-2026", b" 1"), (b"SAVEDBEFORE 14-Mar-2026", b" 1"),
                       (b"SAVEDSINCE 14-Mar-2026", b" 2"), (b"SAVEDSINCE 13-Mar-2026", b" 1 2"),
                       (b"SAVEDBEFORE 13-Mar-2026", b""), (b'SAVEDON "15-Mar-2026"', b" 2"),
                       (b"SAVEDATESUPPORTED", b" 1 2"), (b"NOT SAVEDATESUPPORTED", b""),
                       (b"OR SAVEDON 13-Mar-2026 SAVEDON 15-Mar-2026", b" 1 2"),
                       (b"SAVEDSINCE 1-Feb-2020 BEFORE 2-Feb-2020", b" 1"),
                       (b"SINCE 13-Mar-2026", b" 2")):  # INTERNALDATE is not the save date
        assert await dialog.send(b"q SEARCH " + key + b"\r\n") == (
            b"* SEARCH" + found + b"\r\nq OK SEARCH completed\r\n"), key
    assert await dialog.send(b"q UID SEARCH RETURN (MIN MAX) SAVEDSINCE 1-Jan-2026\r\n") == (
        b'* ESEARCH (TAG "q") UID MIN 1 MAX 2\r\nq OK UID SEARCH completed\r\n')
    assert (await dialog.send(b"q SEARCH SAVEDON 32-Mar-2026\r\n")).startswith(b"q BAD")
    # a MOVE is a save too
    at(store, T0 + 9 * DAY)
    await dialog.send(b"m MOVE 1 Trash\r\n")
    await dialog.send(b"s SELECT Trash\r\n")
    assert await dialog.send(b"f FETCH 1 SAVEDATE\r\n") == (
        b'* 1 FETCH (SAVEDATE "19-Mar-2026 12:00:00 +0000")\r\nf OK FETCH completed\r\n')


async def test_multiappend_messages_get_ids_and_save_dates(dialog: Dialog,
                                                           store: MailStore) -> None:
    at(store, T0)
    await dialog.login()
    out = await dialog.send(b"A APPEND Drafts {%d+}\r\n%s {%d+}\r\n%s\r\n"
                            % (len(MESSAGE), MESSAGE, len(MESSAGE), MESSAGE))
    assert out.startswith(b"A OK [APPENDUID ")
    await dialog.send(b"s SELECT Drafts\r\n")
    out = await dialog.send(b"f FETCH 1:* (SAVEDATE EMAILID)\r\n")
    first, second = emailids(out)
    assert first != second
    assert out.count(b'SAVEDATE "10-Mar-2026 12:00:00 +0000"') == 2


async def test_fetch_of_objects_for_an_expunged_message(dialog: Dialog) -> None:
    """Another session expunged it: this one has not been told, so the FETCH says so
    (RFC 2180 §4.1.2) rather than make an id up."""
    await dialog.login()
    await dialog.send(append())
    await dialog.send(b"s SELECT INBOX\r\n")
    other = Dialog(type(dialog.session)(dialog.session.store, dialog.session.notifier))
    await other.login()
    await other.send(b"s SELECT INBOX\r\n")
    await other.send(b"a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert (await other.send(b"b EXPUNGE\r\n")).startswith(b"* 1 EXPUNGE")
    out = await dialog.send(b"f FETCH 1 (EMAILID)\r\n")
    assert out.endswith(b"f NO [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n")


async def test_create_special_use(dialog: Dialog) -> None:
    await dialog.login()
    out = await dialog.send(b"a CREATE Spam (USE (\\junk))\r\n")
    assert re.fullmatch(rb"a OK \[MAILBOXID \(" + OBJECTID + rb"\)\] CREATE completed\r\n",
                        out)
    assert await dialog.send(b'l LIST "" Spam\r\n') == (
        b'* LIST (\\HasNoChildren \\Junk) "/" "Spam"\r\nl OK LIST completed\r\n')
    for line, code in ((b"b CREATE All (USE (\\All))", b"NO [USEATTR]"),
                       (b"b CREATE Flag (USE (\\Flagged))", b"NO [USEATTR]"),
                       (b"b CREATE Two (USE (\\Junk \\Trash))", b"NO [USEATTR]"),
                       (b"b CREATE Odd (USE (\\Important))", b"NO [USEATTR]"),
                       (b"b CREATE Bare (USE ())", b"BAD"),
                       (b"b CREATE Other (FOO (\\Junk))", b"BAD"),
                       (b"b CREATE Kw (USE (Junk))", b"BAD"),
                       (b"b CREATE Trail (USE (\\Junk)) x", b"BAD"),
                       (b"b CREATE Spam (USE (\\Archive))", b"NO [ALREADYEXISTS]")):
        out = await dialog.send(line + b"\r\n")
        assert out.startswith(b"b " + code), (line, out)
    out = await dialog.send(b'l LIST "" *\r\n')  # none of the refused ones was made
    assert not any(name in out for name in (b'"All"', b'"Flag"', b'"Two"', b'"Odd"',
                                            b'"Bare"', b'"Other"', b'"Kw"', b'"Trail"'))
    # a huge USE list ends at the parser's item limit
    many = b" ".join([b"\\Junk"] * 5000)
    out = await dialog.send(b"b CREATE Many (USE (" + many + b"))\r\n")
    assert out.startswith(b"b BAD")
    # the duplicated attribute is one attribute
    assert (await dialog.send(b"c CREATE Old (USE (\\Archive \\archive))\r\n")).startswith(
        b"c OK")
    # made by the user, so theirs to rename and delete; the built-in Junk is not
    assert (await dialog.send(b"d RENAME Spam Bulk\r\n")).startswith(b"d OK")
    assert await dialog.send(b'l LIST "" Bulk\r\n') == (
        b'* LIST (\\HasNoChildren \\Junk) "/" "Bulk"\r\nl OK LIST completed\r\n')
    assert (await dialog.send(b"e DELETE Bulk\r\n")).startswith(b"e OK")
    assert (await dialog.send(b"f DELETE Junk\r\n")).startswith(b"f NO")
    assert (await dialog.send(b"g RENAME Junk Elsewhere\r\n")).startswith(b"g NO")


def test_ids_are_keyed_not_counted() -> None:
    """Consecutive rows do not get consecutive-looking ids, and another node's key gives
    other ids for the same rows: nothing in an id says how many rows there are."""
    key, other = b"k" * 32, b"o" * 32
    ids = [email_id(key, n) for n in range(1, 200)] + [mailbox_id(key, n)
                                                       for n in range(1, 200)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rb"[EM][0-9a-f]{24}", i.encode()) for i in ids)
    assert email_id(key, 7) != email_id(other, 7) and mailbox_id(key, 7) != email_id(key, 7)
    # neighbours share no prefix the way counted ids would
    assert len({email_id(key, n)[:3] for n in range(1000, 1020)}) > 15


async def test_migration_gives_old_mail_a_save_date_and_ids_survive_restarts(
        tmp_path: Path) -> None:
    """Mail stored before 0009 gets the migration time as its save date (its real one is not
    known; a later one never makes it look older, so a client expunging Trash by save date
    keeps it longer rather than shorter); the key the ids are derived from is stored, so
    MAILBOXID and EMAILID stay the same across restarts."""
    db = Database.open(tmp_path / "m.db")
    store = SqlStore(db, ChangeNotifier())
    user = await store.create_user("old", "password1", Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    archive = await store.get_mailbox(user.id, "Archive")
    assert inbox is not None and archive is not None
    old_date = datetime(2019, 5, 1, tzinfo=UTC)
    await store.append(inbox.id, MESSAGE, frozenset(), old_date)
    await store.copy(inbox.id, [1], archive.id)
    command.downgrade(_alembic_config(db.engine), "0007")
    db.close()
    before = int(time.time())
    db = Database.open(tmp_path / "m.db")
    after = int(time.time())
    try:
        store = SqlStore(db, ChangeNotifier())
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None and inbox.mailboxid
        objs = (await store.message_objects(inbox.id, [1]))[1]
        assert objs.savedate is not None
        assert before <= objs.savedate.timestamp() <= after
        copied = (await store.message_objects(archive.id, [1]))[1]
        assert copied.emailid == objs.emailid and copied.threadid is None
    finally:
        db.close()
    db = Database.open(tmp_path / "m.db")  # a restart: same key, same ids
    try:
        store = SqlStore(db, ChangeNotifier())
        again = await store.get_mailbox(user.id, "INBOX")
        assert again is not None and again.mailboxid == inbox.mailboxid
        assert (await store.message_objects(inbox.id, [1]))[1].emailid == objs.emailid
    finally:
        db.close()
