"""MIME structure is computed once, when a message arrives, and stored: FETCH and SEARCH
read it back instead of parsing the message again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import mailnode.imap.fetch
import mailnode.imap.handlers.messages
import mailnode.imap.search
from crypto.keys import Identity
from mailnode.imap.session import ImapSession
from mailnode.mime import analyse
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.hostile.corpus import MESSAGES
from tests.imap.conftest import MESSAGE, Dialog

MULTIPART = (b"From: a@b\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
             b"--x\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
             b"--x\r\nContent-Type: text/html\r\n\r\n<p>second</p>\r\n--x--\r\n")


@pytest.fixture
async def sql(tmp_path: Path) -> AsyncIterator[SqlStore]:
    db = Database.open(tmp_path / "s.db")
    try:
        store = SqlStore(db, ChangeNotifier())
        await store.create_user("alice", "secret", Identity.generate())
        yield store
    finally:
        db.close()


async def _append(d: Dialog, message: bytes) -> None:
    await d.send(b"a APPEND INBOX {%d}\r\n" % len(message))
    assert b"a OK" in await d.send(message + b"\r\n")


def _no_analysis(*_: object) -> object:
    raise AssertionError("a stored message was parsed again")


async def test_fetch_and_search_use_the_stored_structure(
        sql: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    d = Dialog(ImapSession(sql, sql.notifier))
    await d.login()
    await _append(d, MESSAGE)
    await _append(d, MULTIPART)
    stored = await sql.db.run(lambda c: c.execute(
        "SELECT count(*) FROM bodies WHERE structure IS NOT NULL").fetchone()[0])
    assert stored == 2
    monkeypatch.setattr(mailnode.imap.handlers.messages, "analyse", _no_analysis)
    monkeypatch.setattr(mailnode.imap.search, "analyse", _no_analysis)
    monkeypatch.setattr(mailnode.imap.fetch, "analyse", _no_analysis)
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"f FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY.PEEK[2.MIME] "
                       b"BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert out.endswith(b"f OK FETCH completed\r\n"), out
    assert b'"TEXT" "HTML"' in out and b"Content-Type: text/html" in out
    out = await d.send(b"s SEARCH OR SUBJECT parts BODY second\r\n")
    assert b"* SEARCH 2\r\n" in out and out.endswith(b"s OK SEARCH completed\r\n")
    out = await d.send(b"t SORT (SUBJECT) UTF-8 ALL\r\n")
    assert b"* SORT 1 2\r\n" in out and out.endswith(b"t OK SORT completed\r\n"), out


async def test_mail_stored_without_a_structure_is_still_read(sql: SqlStore) -> None:
    d = Dialog(ImapSession(sql, sql.notifier))
    await d.login()
    await _append(d, MULTIPART)
    await sql.db.run(lambda c: c.execute("UPDATE bodies SET structure = NULL"))
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"f FETCH 1 (BODYSTRUCTURE BODY.PEEK[1])\r\n")
    assert b'"TEXT" "HTML"' in out and b"first part" in out
    assert out.endswith(b"f OK FETCH completed\r\n")
    # ...and what was analysed is kept: the next FETCH reads it like any other.
    assert await sql.db.run(lambda c: c.execute(
        "SELECT count(*) FROM bodies WHERE structure IS NOT NULL").fetchone()[0]) == 1


async def test_older_mail_is_analysed_once_where_fetch_calls_it(
        sql: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mail stored without a structure goes through handlers.messages' analysis, once (the
    counterpart of the check above: that name is the one in use)."""
    d = Dialog(ImapSession(sql, sql.notifier))
    await d.login()
    await _append(d, MULTIPART)
    await sql.db.run(lambda c: c.execute("UPDATE bodies SET structure = NULL"))
    calls: list[int] = []

    def counting(raw: bytes) -> object:
        calls.append(len(raw))
        return analyse(raw)

    monkeypatch.setattr(mailnode.imap.handlers.messages, "analyse", counting)
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"f FETCH 1 BODYSTRUCTURE\r\n")
    assert out.endswith(b"f OK FETCH completed\r\n") and b'"TEXT" "HTML"' in out
    assert calls == [len(MULTIPART)]


async def test_a_mailbox_of_hostile_mail_answers_ok(sql: SqlStore) -> None:
    """Each hostile message is stored with a (bounded) structure, and every item of every
    message can be fetched and searched."""
    d = Dialog(ImapSession(sql, sql.notifier))
    await d.login()
    for build in MESSAGES.values():
        await _append(d, build("stranger@example"))
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"f FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE "
                       b"BODY.PEEK[1.MIME] BODY.PEEK[HEADER])\r\n")
    assert out.endswith(b"f OK FETCH completed\r\n")
    assert out.count(b" FETCH (") == len(MESSAGES)
    out = await d.send(b"s SEARCH OR FROM stranger TEXT leaf\r\n")
    assert out.endswith(b"s OK SEARCH completed\r\n")
    assert len(out.split(b"\r\n")[0].split()) - 2 == len(MESSAGES)  # all match FROM
