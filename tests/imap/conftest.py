"""Shared fixtures: an in-memory store with one user, sessions, and a real server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailnode.imap.server import ImapServer
from mailnode.imap.session import ImapSession
from mailnode.store.notify import ChangeNotifier
from tests.imap.memstore import MemStore

MESSAGE = (b"From: Alice <alice@example.mailnode>\r\n"
           b"To: Bob <bob@example.mailnode>\r\n"
           b"Subject: Hello there\r\n"
           b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
           b"Message-ID: <1@example.mailnode>\r\n"
           b"\r\n"
           b"Hi Bob,\r\nthis is the body.\r\n")


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


@pytest.fixture
def store(notifier: ChangeNotifier) -> MemStore:
    s = MemStore(notifier)
    s.add_user("alice", "secret", "alice@example.mailnode")
    s.add_user("bob", "hunter2", "bob@example.mailnode")
    return s


@pytest.fixture
def dialog(store: MemStore, notifier: ChangeNotifier) -> Dialog:
    return Dialog(ImapSession(store, notifier))


@pytest.fixture
async def server(store: MemStore, notifier: ChangeNotifier) -> AsyncIterator[ImapServer]:
    srv = ImapServer(store, notifier, max_literal=1_000_000, idle_timeout=30, login_timeout=30)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()
