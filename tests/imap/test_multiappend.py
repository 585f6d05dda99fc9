"""MULTIAPPEND (RFC 3502) and CATENATE (RFC 4469) dialogues on both stores: all or nothing,
URL parts only from the user's own mailboxes, bounded sizes and counts, spool files closed."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import commands as c
from mailnode.imap.errors import ParseError
from mailnode.imap.handlers import catenate, multiappend
from mailnode.imap.parser import CommandParser, Limits, parse_one
from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore, NoSuchMailbox
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import MESSAGE, Dialog
from tests.imap.test_bounded_input import SpoolSpy

ONE = b"From: a@example.org\r\nSubject: one\r\n\r\nbody one\r\n"
TWO = (b"From: b@example.org\r\nSubject: two\r\nContent-Type: multipart/mixed; boundary=b\r\n"
       b"\r\n--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b--\r\n")


def lit(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


async def count(dialog: Dialog, mailbox: bytes = b"INBOX") -> int:
    reply = await dialog.send(b"S STATUS " + mailbox + b" (MESSAGES)\r\n")
    m = re.search(rb"MESSAGES (\d+)", reply)
    assert m is not None, reply
    return int(m.group(1))


async def bodies(dialog: Dialog, mailbox: bytes = b"INBOX") -> list[bytes]:
    await dialog.send(b"X EXAMINE " + mailbox + b"\r\n")
    reply = await dialog.send(b"F FETCH 1:* BODY.PEEK[]\r\n")
    out = []
    for m in re.finditer(rb"\{(\d+)\}\r\n", reply):
        out.append(reply[m.end():m.end() + int(m.group(1))])
    await dialog.send(b"U UNSELECT\r\n")
    return out


async def test_capabilities(dialog: Dialog) -> None:
    await dialog.login()
    caps = await dialog.send(b"C CAPABILITY\r\n")
    assert b" MULTIAPPEND" in caps and b" CATENATE" in caps


async def test_multiappend_stores_all_with_their_flags(dialog: Dialog) -> None:
    await dialog.login()
    reply = await dialog.send(b"A APPEND INBOX (\\Seen) " + lit(ONE)
                              + b' (\\Flagged) "01-Feb-2024 10:00:00 +0000" ' + lit(TWO)
                              + b"\r\n")
    assert re.fullmatch(rb"A OK \[APPENDUID \d+ 1:2\] APPEND completed\r\n", reply), reply
    assert await bodies(dialog) == [ONE, TWO]
    await dialog.send(b"X EXAMINE INBOX\r\n")
    reply = await dialog.send(b"F FETCH 1:2 (FLAGS INTERNALDATE)\r\n")
    assert b"1 FETCH (FLAGS (\\Seen \\Recent)" in reply
    assert b'2 FETCH (FLAGS (\\Flagged \\Recent) INTERNALDATE " 1-Feb-2024 10:00:00 +0000")' \
        in reply


async def test_multiappend_with_synchronising_literals(dialog: Dialog) -> None:
    await dialog.login()
    assert await dialog.send(b"A APPEND INBOX {%d}\r\n" % len(ONE)) == \
        b"+ Ready for literal data\r\n"
    assert await dialog.send(ONE + b" {%d}\r\n" % len(TWO)) == b"+ Ready for literal data\r\n"
    assert b"A OK [APPENDUID" in await dialog.send(TWO + b"\r\n")
    assert await count(dialog) == 2


async def test_one_bad_message_stores_none(dialog: Dialog) -> None:
    await dialog.login()
    reply = await dialog.send(b"A APPEND INBOX " + lit(ONE) + b" CATENATE (URL \"/INBOX/;UID=9\")"
                              + b"\r\n")
    assert reply.startswith(b"A NO [BADURL /INBOX/;UID=9]")
    assert await count(dialog) == 0
    reply = await dialog.send(b"A APPEND Nowhere " + lit(ONE) + b" " + lit(TWO) + b"\r\n")
    assert reply.startswith(b"A NO [TRYCREATE]")


async def test_total_size_is_bounded(store: MailStore, notifier: ChangeNotifier) -> None:
    dialog = Dialog(ImapSession(store, notifier, limits=Limits(max_literal=300, max_line=1000)))
    await dialog.login()
    big = ONE + b"x" * 250
    await dialog.send(b"A APPEND INBOX " + lit(ONE) + b"\r\n")
    # the parser bounds the literals of one command: max_literal + max_line in all
    reply = await dialog.send(b"A APPEND INBOX {%d}\r\n" % len(big))
    for _ in range(3):
        reply = await dialog.send(big + b" {%d}\r\n" % len(big))
        assert reply == b"+ Ready for literal data\r\n"
    reply = await dialog.send(big + b" {%d}\r\n" % len(big))
    assert reply == b"A BAD [TOOBIG] Literal too large\r\n"
    # URL parts count toward each message's size too: 4 copies of ONE (~45 octets) + 150
    url = b' URL "/INBOX/;UID=1"'
    reply = await dialog.send(b"A APPEND INBOX CATENATE (TEXT " + lit(b"x" * 150) + url * 4
                              + b")\r\n")
    assert reply.startswith(b"A NO [TOOBIG]"), reply
    assert await count(dialog) == 1


async def test_catenate_text_and_url_parts(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"A APPEND INBOX " + lit(TWO) + b"\r\n")
    await dialog.send(b"A CREATE Out\r\n")
    status = await dialog.send(b"S STATUS INBOX (UIDVALIDITY)\r\n")
    m = re.search(rb"UIDVALIDITY (\d+)", status)
    assert m is not None
    uidv = m.group(1)
    reply = await dialog.send(
        b'A APPEND Out (\\Seen) CATENATE (URL "/INBOX;UIDVALIDITY=' + uidv
        + b'/;UID=1/;SECTION=HEADER.FIELDS%20(FROM)" TEXT ' + lit(b"new body\r\n")
        + b' URL "/inbox/;uid=1/;section=1" URL "/INBOX/;UID=1/;PARTIAL=0.5"'
        + b' URL "/INBOX/;UID=1/;SECTION=1.MIME/;PARTIAL=14")\r\n')
    assert b"A OK [APPENDUID" in reply, reply
    assert await bodies(dialog, b"Out") == [
        b"From: b@example.org\r\n\r\nnew body\r\npart oneFrom:text/plain\r\n\r\n"]


@pytest.mark.parametrize("url", [
    b"imap://bob@localhost/INBOX/;UID=1", b"imap://localhost", b"imap://alice@/INBOX/;UID=1",
    b"imap://alice@localhost/INBOX/;UID=1/;URLAUTH=anonymous:internal:0123456789abcdef",
    b"/INBOX;UIDVALIDITY=1/;UID=1", b"/INBOX/;UID=2",
    b"/Nowhere/;UID=1", b"/INBOX/;UID=0", b"/INBOX/;UID=1/;SECTION=BOGUS", b"/INBOX",
    b"/INBOX/;UID=1/;SECTION=MIME", b"/%FF/;UID=1", b"", b"/INBOX/;UID=99999999999",
])
async def test_bad_urls(dialog: Dialog, url: bytes) -> None:
    await dialog.login()
    await dialog.send(b"A APPEND INBOX " + lit(ONE) + b"\r\n")
    reply = await dialog.send(b'A APPEND INBOX CATENATE (TEXT {3+}\r\nabc URL "' + url
                              + b'")\r\n')
    assert reply.startswith(b"A NO [BADURL"), reply
    assert await count(dialog) == 1


async def test_url_cannot_reach_another_users_mailbox(store: MailStore,
                                                      notifier: ChangeNotifier) -> None:
    bob = Dialog(ImapSession(store, notifier))
    await bob.send(b"L LOGIN bob hunter2\r\n")
    await bob.send(b"A CREATE Secret\r\n")
    await bob.send(b"A APPEND Secret " + lit(b"Subject: bob's\r\n\r\nsecret\r\n") + b"\r\n")
    alice = Dialog(ImapSession(store, notifier))
    await alice.login()
    reply = await alice.send(b'A APPEND INBOX CATENATE (URL "/Secret/;UID=1")\r\n')
    assert reply.startswith(b"A NO [BADURL")


@pytest.mark.parametrize("command", [
    b"A APPEND INBOX CATENATE ()", b"A APPEND INBOX CATENATE (BOGUS {1+}\r\nx)",
    b"A APPEND INBOX CATENATE (TEXT \"abc\")", b"A APPEND INBOX CATENATE TEXT {1+}\r\nx",
    b"A APPEND INBOX CATENATE (URL)", b"A APPEND INBOX {1+}\r\nx (\\Seen)",
    b"A APPEND INBOX {1+}\r\nx  {1+}\r\ny",
    b"A APPEND INBOX CATENATE (" + b" ".join([b'URL "/INBOX/;UID=1"'] * 17) + b")",
])
async def test_hostile_syntax_is_bad(dialog: Dialog, command: bytes) -> None:
    await dialog.login()
    reply = await dialog.send(command + b"\r\n")
    assert reply.startswith(b"A BAD"), reply
    assert b"N OK" in await dialog.send(b"N NOOP\r\n")
    assert await count(dialog) == 0


def test_spooled_parts_are_closed_when_the_command_is_invalid() -> None:
    spy = SpoolSpy()
    p = CommandParser(Limits(spool_above=100), spool=spy)
    p.feed(b"a APPEND INBOX {500+}\r\n" + b"z" * 500 + b" CATENATE (TEXT {300+}\r\n"
           + b"y" * 300 + b" NOPE)\r\nb NOOP\r\n")
    with pytest.raises(ParseError):
        p.next_event()
    assert p.next_event() == c.Noop("b")
    assert len(spy.files) == 2 and all(f.closed for f in spy.files)


async def test_spooled_parts_are_closed_after_append(store: MailStore,
                                                     notifier: ChangeNotifier) -> None:
    spy = SpoolSpy()
    session = ImapSession(store, notifier, limits=Limits(spool_above=100))
    session.parser = CommandParser(session.parser.limits, spool=spy)
    d = Dialog(session)
    await d.login()
    big = ONE + b"z" * 500
    out = await d.send(b"a APPEND INBOX " + lit(big) + b" CATENATE (TEXT " + lit(big) + b")\r\n")
    assert b"a OK" in out
    assert len(spy.files) == 2 and all(f.closed for f in spy.files)
    assert await bodies(d) == [big, big]


def test_single_plain_message_stays_core_append() -> None:
    assert isinstance(parse_one(b"A APPEND INBOX {1+}\r\nx\r\n"), c.Append)
    cmd = parse_one(b"A APPEND INBOX {1+}\r\nx {1+}\r\ny\r\n")
    assert isinstance(cmd, c.AppendMany) and len(cmd.messages) == 2
    cmd = parse_one(b"A APPEND INBOX {6+}\r\nSECRET {1+}\r\ny\r\n")
    assert "SECRET" not in repr(cmd)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_url_parser_never_crashes(url: str) -> None:
    with contextlib.suppress(catenate.BadUrl):
        catenate.parse(url)


def test_url_examples() -> None:
    u = catenate.parse("/a%2Fb%20c;UIDVALIDITY=7/;UID=3/;SECTION=2.HEADER.FIELDS%20(A%20B)"
                       "/;PARTIAL=5.10")
    assert (u.mailbox, u.uidvalidity, u.uid, u.parts, u.text, u.fields, u.partial) == \
        ("a/b c", 7, 3, (2,), "HEADER.FIELDS", ("A", "B"), (5, 10))
    assert multiappend.MAX_URL_PARTS < multiappend.MAX_CAT_PARTS


async def test_message_fixture_round_trips(dialog: Dialog, alice_address: str) -> None:
    await dialog.login()
    await dialog.send(b"A APPEND INBOX " + lit(MESSAGE) + b"\r\n")
    reply = await dialog.send(b'A APPEND INBOX CATENATE (URL "/INBOX/;UID=1")\r\n')
    assert b"A OK [APPENDUID" in reply
    # absolute forms: no user, the login name, or the address (%-encoded "@")
    for authority in (b"node.example", b"alice;AUTH=*@node.example",
                      alice_address.replace("@", "%40").encode() + b"@node.example:143"):
        reply = await dialog.send(b'A APPEND INBOX CATENATE (URL "imap://' + authority
                                  + b'/INBOX/;UID=1")\r\n')
        assert b"A OK [APPENDUID" in reply, (authority, reply)
    assert await bodies(dialog) == [MESSAGE] * 5


async def test_store_failure_midway_leaves_nothing(store: MailStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The store call itself is all or none: a failure while filing the second message
    leaves neither (SQLite: one transaction), and uidnext does not move."""
    if not isinstance(store, SqlStore):
        pytest.skip("the in-memory store has no failure to inject")
    user = await store.find_user("alice")
    assert user is not None
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    real = store._file
    calls = []

    def failing(*args: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(store, "_file", failing)
    with pytest.raises(RuntimeError):
        await store.append_many(inbox.id, [(ONE, frozenset(), None), (TWO, frozenset(), None)])
    monkeypatch.undo()
    assert await store.list_messages(inbox.id) == []
    uidvalidity, uids = await store.append_many(inbox.id, [(ONE, frozenset(), None)])
    assert uids == [1] and uidvalidity == inbox.uidvalidity


async def test_append_many_to_a_deleted_mailbox(store: MailStore) -> None:
    user = await store.authenticate("alice", "secret")
    assert user is not None
    box = await store.create_mailbox(user.id, "Gone")
    await store.delete_mailbox(user.id, "Gone")
    with pytest.raises(NoSuchMailbox):
        await store.append_many(box.id, [(ONE, frozenset(), None)])


async def test_quota_counts_the_whole_multiappend(dialog: Dialog, store: MailStore) -> None:
    """Each message fits the quota, all of them together do not: none is stored."""
    store.user_quota = 3 * len(ONE) + 10  # type: ignore[attr-defined]  # both stores have it
    await dialog.login()
    reply = await dialog.send(b"A APPEND INBOX " + lit(ONE) + b" " + lit(ONE) + b" " + lit(ONE)
                              + b" " + lit(ONE) + b"\r\n")
    assert reply.startswith(b"A NO [OVERQUOTA]"), reply
    assert await count(dialog) == 0
    reply = await dialog.send(b"A APPEND INBOX " + lit(ONE) + b" " + lit(ONE) + b"\r\n")
    assert b"A OK [APPENDUID" in reply
    assert await count(dialog) == 2
