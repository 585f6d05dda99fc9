"""Shared fixtures: an in-memory store with one user, sessions, and a real server on loopback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from crypto.keys import Identity
from mailnode.imap.server import ImapServer
from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.imap.memstore import MemStore

MESSAGE = (b"From: Alice <alice@example.mailnode>\r\n"
           b"To: Bob <bob@example.mailnode>\r\n"
           b"Subject: Hello there\r\n"
           b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
           b"Message-ID: <1@example.mailnode>\r\n"
           b"\r\n"
           b"Hi Bob,\r\nthis is the body.\r\n")


_MAILBOXID = re.compile(rb"\[MAILBOXID \(M[0-9a-f]{24}\)\] "
                        rb"|\* OK \[MAILBOXID \(M[0-9a-f]{24}\)\] Ok\r\n")


def no_mailboxid(out: bytes) -> bytes:
    """``out`` without its one RFC 8474 MAILBOXID code (a CREATE's OK, a SELECT's untagged
    OK), which must be there: for tests about something else that compare whole replies."""
    stripped, found = _MAILBOXID.subn(b"", out)
    assert found == 1, out
    return stripped


class Dialog:
    """Drive an ImapSession with bytes, the way the adapter does, and collect its replies."""

    def __init__(self, session: ImapSession) -> None:
        self.session = session

    async def send(self, data: bytes) -> bytes:
        await self.session.receive(data)
        return self.session.data_to_send()

    async def login(self) -> bytes:
        return await self.send(b"L LOGIN alice secret\r\n")


@pytest.fixture
def notifier() -> ChangeNotifier:
    return ChangeNotifier()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, notifier: ChangeNotifier,
                tmp_path: Path) -> AsyncIterator[MailStore]:
    """Every IMAP test runs on the in-memory store and on the real SQLite store."""
    if request.param == "memory":
        s = MemStore(notifier)
        s.add_user("alice", "secret", "alice@example.mailnode")
        s.add_user("bob", "hunter2", "bob@example.mailnode")
        yield s
        return
    db = Database.open(tmp_path / "imap.db")
    try:
        sql = SqlStore(db, notifier)
        await sql.create_user("alice", "secret", Identity.generate())
        await sql.create_user("bob", "hunter2", Identity.generate())
        yield sql
    finally:
        db.close()


@pytest.fixture
async def alice_address(store: MailStore) -> str:
    """Her login address: fixed in memory, derived from her key in SQLite."""
    if isinstance(store, SqlStore):
        user = await store.find_user("alice")
        assert user is not None
        return user.address
    return "alice@example.mailnode"


@pytest.fixture
def dialog(store: MailStore, notifier: ChangeNotifier) -> Dialog:
    return Dialog(ImapSession(store, notifier))


ServerFactory = Callable[..., Awaitable[ImapServer]]


@pytest.fixture
async def start_server(store: MailStore,
                       notifier: ChangeNotifier) -> AsyncIterator[ServerFactory]:
    """Starts servers on a free loopback port with the given settings; stops them all after."""
    started: list[ImapServer] = []

    async def start(**settings: Any) -> ImapServer:
        # Eviction tests need no grace: their strangers are all a few milliseconds old.
        srv = ImapServer(store, notifier,
                         **{"max_literal": 1_000_000, "eviction_grace": 0.0, **settings})
        started.append(srv)
        await srv.start("127.0.0.1", 0)
        assert srv.port
        return srv

    try:
        yield start
    finally:
        for srv in started:
            await srv.stop()


@pytest.fixture
async def server(start_server: ServerFactory) -> ImapServer:
    return await start_server(idle_timeout=30, login_timeout=30)
