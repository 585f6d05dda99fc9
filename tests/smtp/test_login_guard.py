"""SMTP logins and connections under the guard, over real sockets from several loopback
addresses (all of 127.0.0.0/8 is loopback on Linux)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from crypto.keys import Identity
from mailnode.auth import Authenticator
from mailnode.delivery.submit import SubmissionService
from mailnode.guard import LoginPenalty
from mailnode.smtp.server import SubmissionServer
from mailnode.store.sqlite import SqlStore
from tests.transfer.conftest import wait_until

PASSWORD = "s3cret-pass"
TIMEOUT = 10


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1", ehlo: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0))
        client = cls(reader, writer)
        assert (await client.reply()).startswith(b"220")
        if ehlo:
            assert (await client.cmd("EHLO test")).startswith(b"250")
        return client

    async def reply(self) -> bytes:
        """The last line of the next reply (b"" at EOF)."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            if line[3:4] != b"-":
                return line

    async def cmd(self, text: str) -> bytes:
        self.writer.write(text.encode() + b"\r\n")
        return await self.reply()

    async def auth(self, login: str, password: str) -> bytes:
        blob = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {blob}")

    async def closed(self) -> bool:
        """Whether the server ends the connection (reads to EOF)."""
        return await asyncio.wait_for(self.reader.read(), TIMEOUT) is not None

    def close(self) -> None:
        self.writer.close()


Start = Callable[..., Awaitable[SubmissionServer]]


@pytest.fixture
async def start(store: SqlStore) -> AsyncIterator[Start]:
    await store.create_user("alice", PASSWORD, Identity.generate())
    await store.create_user("bob", PASSWORD, Identity.generate())
    servers: list[SubmissionServer] = []

    async def make(**settings: Any) -> SubmissionServer:
        penalty = LoginPenalty(base_delay=0.0, lockout_after=3)
        server = SubmissionServer(SubmissionService(store, lambda: None, server_id="t.invalid"),
                                  max_message_size=65536,
                                  auth=Authenticator(store, penalty),
                                  **{"eviction_grace": 0.0, **settings})
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


async def test_lockout_per_source_owner_unaffected(start: Start,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = await start()
    guesser = await Client.connect(server.port, "127.0.0.2")
    for n in range(3):
        assert (await guesser.auth("alice", f"guess-{n}")).startswith(b"535 5.7.8")
    assert (await guesser.auth("alice", PASSWORD)).startswith(b"421 4.7.0 Too many failed")
    assert await guesser.reply() == b""  # hung up
    owner = await Client.connect(server.port, "127.0.0.3")
    assert (await owner.auth("alice", PASSWORD)).startswith(b"235")
    lines = [m for m in caplog.messages if m.startswith("auth failed")]
    assert lines == [
        'auth failed: service=smtp source=127.0.0.2 user="alice" reason=bad-credentials'] * 3 \
        + ['auth failed: service=smtp source=127.0.0.2 user="alice" reason=throttled']
    assert not any("guess-" in m or PASSWORD in m for m in caplog.messages)
    assert "auth ok: service=smtp source=127.0.0.3 user=alice" in caplog.messages
    guesser.close()
    owner.close()


async def test_auth_login_mechanism_counts_too(start: Start,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = await start()
    client = await Client.connect(server.port, "127.0.0.4")
    assert (await client.cmd("AUTH LOGIN " + base64.b64encode(b"bo\r\nb").decode())
            ).startswith(b"334")
    assert (await client.cmd(base64.b64encode(b"pw-123").decode())).startswith(b"535")
    assert [m for m in caplog.messages if m.startswith("auth failed")] == [
        'auth failed: service=smtp source=127.0.0.4 user="bo\\r\\nb" reason=bad-credentials']
    client.close()


async def test_session_cap_per_user(start: Start) -> None:
    server = await start(max_sessions_per_user=2)
    clients = [await Client.connect(server.port) for _ in range(4)]
    assert (await clients[0].auth("alice", PASSWORD)).startswith(b"235")
    assert (await clients[1].auth("alice", PASSWORD)).startswith(b"235")
    assert (await clients[2].auth("alice", PASSWORD)).startswith(b"454 4.7.0")
    assert (await clients[3].auth("bob", PASSWORD)).startswith(b"235")
    assert (await clients[0].cmd("QUIT")).startswith(b"221")
    await clients[0].closed()
    await wait_until(lambda: len(server.table) == 3)
    retry = await Client.connect(server.port)
    assert (await retry.auth("alice", PASSWORD)).startswith(b"235")
    for c in (*clients, retry):
        c.close()


async def test_per_source_cap(start: Start) -> None:
    server = await start(max_connections_per_source=2)
    held = [await Client.connect(server.port, "127.0.0.5") for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port,
                                                   local_addr=("127.0.0.5", 0))
    refused = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert refused.startswith(b"421 4.7.0 Too many connections from your address")
    writer.close()
    other = await Client.connect(server.port, "127.0.0.6")
    assert (await other.auth("alice", PASSWORD)).startswith(b"235")
    for c in (*held, other):
        c.close()


async def test_trickling_client_is_closed_at_the_login_deadline(start: Start) -> None:
    server = await start(login_timeout=0.5)
    user = await Client.connect(server.port)
    assert (await user.auth("alice", PASSWORD)).startswith(b"235")
    trickler = await Client.connect(server.port, "127.0.0.7")
    # Busy (every NOOP restarts aiosmtpd's own 300 s timeout; 500 stays under its call
    # limit), then trickling a command byte by byte: never logging in.
    for _ in range(500):
        if not (reply := await trickler.cmd("NOOP")).startswith(b"250"):
            break
    else:
        trickler.writer.write(b"NO")
        reply = await trickler.reply()
    assert reply.startswith(b"421 4.4.2 No login in time")
    assert await trickler.reply() == b""
    # the session that logged in in time is not affected by the deadline
    assert (await user.cmd("NOOP")).startswith(b"250")
    user.close()


async def test_full_listener_evicts_strangers_not_sessions(start: Start) -> None:
    server = await start(max_connections=20, max_connections_per_source=10)
    owner = await Client.connect(server.port)
    assert (await owner.auth("alice", PASSWORD)).startswith(b"235")
    strangers = [await Client.connect(server.port, f"127.0.1.{i % 5 + 1}", ehlo=False)
                 for i in range(60)]
    # the listener never held more than its cap: the oldest strangers were closed
    assert len(server.table) <= 20
    evicted = 0
    for s in strangers[:40]:
        if (await s.reply()).startswith(b"421 4.7.0 Too many connections"):
            evicted += 1
    assert evicted == 40
    bob = await Client.connect(server.port, "127.0.0.9")
    assert (await bob.auth("bob", PASSWORD)).startswith(b"235")
    assert (await owner.cmd("NOOP")).startswith(b"250")
    for c in (owner, bob, *strangers):
        c.close()
