"""The handlers moved out of the session into modules by area still do what the session's
methods did; checks that follow the code to its new place."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import mailnode.imap.fetch
import mailnode.imap.handlers.messages
import mailnode.imap.search
from mailnode.imap.session import ImapSession
from mailnode.mime import analyse
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import MESSAGE, Dialog
from tests.imap.test_stored_structure import MULTIPART, _append, _no_analysis, sql

__all__ = ["sql"]  # the fixture, shared with test_stored_structure


async def test_fetch_sort_and_search_use_the_stored_structure(
        sql: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stored message is parsed again: not by the FETCH/SORT analysis fallback (now in
    handlers.messages), not by fetch or search."""
    d = Dialog(ImapSession(sql, sql.notifier))
    await d.login()
    await _append(d, MESSAGE)
    await _append(d, MULTIPART)
    stored = await sql.db.run(lambda c: c.execute(
        text("SELECT count(*) FROM bodies WHERE structure IS NOT NULL")).scalar())
    assert stored == 2
    for module in (mailnode.imap.handlers.messages, mailnode.imap.search, mailnode.imap.fetch):
        monkeypatch.setattr(module, "analyse", _no_analysis)
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"f FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY.PEEK[2.MIME])\r\n")
    assert out.endswith(b"f OK FETCH completed\r\n"), out
    assert b'"TEXT" "HTML"' in out
    out = await d.send(b"t SORT (SUBJECT) UTF-8 ALL\r\n")
    assert b"* SORT 1 2\r\n" in out and out.endswith(b"t OK SORT completed\r\n"), out


async def test_older_mail_is_analysed_in_handlers_messages(
        sql: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mail stored without a structure goes through handlers.messages' analysis (the
    counterpart of the check above: that name is the one in use)."""
    d = Dialog(ImapSession(sql, sql.notifier))
    await d.login()
    await _append(d, MULTIPART)
    await sql.db.run(lambda c: c.execute(text("UPDATE bodies SET structure = NULL")))
    calls: list[int] = []
    def counting(raw: bytes) -> object:
        calls.append(len(raw))
        return analyse(raw)

    monkeypatch.setattr(mailnode.imap.handlers.messages, "analyse", counting)
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"f FETCH 1 BODYSTRUCTURE\r\n")
    assert out.endswith(b"f OK FETCH completed\r\n") and b'"TEXT" "HTML"' in out
    assert calls == [len(MULTIPART)]
