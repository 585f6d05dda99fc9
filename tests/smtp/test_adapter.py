"""The asyncio adapter over real sockets: pipelined transactions go through in order, and
what a client sends while a command waits on the node is held in a bounded buffer."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest

from crypto.keys import Identity
from mailnode.auth import Authenticator
from mailnode.delivery.submit import SubmissionService
from mailnode.sasl import PlainCredentials
from mailnode.smtp.server import PAUSE_AT, SubmissionServer
from mailnode.store.api import User
from mailnode.store.sqlite import SqlStore
from tests.transfer.conftest import wait_until

PASSWORD = "s3cret-pass"
SERVER_ID = "00112233aabbccdd.mailnode.invalid"
LOGIN = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASSWORD.encode())


class HeldAuthenticator(Authenticator):
    """Checks passwords only once ``go`` is set: a login the test can keep pending."""

    def __init__(self, store: SqlStore) -> None:
        super().__init__(store)
        self.go = asyncio.Event()
        self.started = asyncio.Event()

    async def authenticate(self, creds: PlainCredentials, address: str,
                           service: str) -> User:
        self.started.set()
        await self.go.wait()
        return await super().authenticate(creds, address, service)


@pytest.fixture
async def alice(store: SqlStore) -> User:
    return await store.create_user("alice", PASSWORD, Identity.generate())


@pytest.fixture
async def server(store: SqlStore, alice: User) -> AsyncIterator[SubmissionServer]:
    smtp = SubmissionServer(SubmissionService(store, lambda: None, server_id=SERVER_ID),
                            max_message_size=64 * 1024, auth=HeldAuthenticator(store))
    await smtp.start("127.0.0.1", 0)
    try:
        yield smtp
    finally:
        await smtp.stop()


async def read_all(reader: asyncio.StreamReader) -> list[bytes]:
    lines = []
    while line := await asyncio.wait_for(reader.readline(), 10):
        lines.append(line)
    return lines


async def test_pipelined_transactions_in_one_write(server: SubmissionServer, alice: User,
                                                   store: SqlStore) -> None:
    assert isinstance(server.auth, HeldAuthenticator)
    server.auth.go.set()
    me = alice.address.encode()
    message = b"From: <" + me + b">\r\nSubject: p\r\n\r\n..dot\r\nbody\r\n.\r\n"
    transaction = (b"MAIL FROM:<" + me + b">\r\nRCPT TO:<" + me + b">\r\nRCPT TO:<"
                   + me + b">\r\nDATA\r\n" + message)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"EHLO c\r\n" + LOGIN + b"\r\n" + transaction + b"RSET\r\n" + transaction
                 + b"QUIT\r\n")
    lines = await read_all(reader)
    writer.close()
    assert b"250-PIPELINING\r\n" in lines
    codes = [line[:3] for line in lines if line[3:4] == b" "]
    assert codes == [b"220", b"250", b"235", b"250", b"250", b"250", b"354", b"250", b"250",
                     b"250", b"250", b"250", b"354", b"250", b"221"]
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None and inbox.messages == 2
    uid = (await store.list_messages(inbox.id))[0].uid
    assert (await store.fetch_bodies(inbox.id, [uid]))[uid].endswith(
        b"\r\n\r\n.dot\r\nbody\r\n")


async def test_input_behind_a_pending_command_is_bounded(server: SubmissionServer) -> None:
    assert isinstance(server.auth, HeldAuthenticator)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"EHLO c\r\n" + LOGIN + b"\r\n")
    await asyncio.wait_for(server.auth.started.wait(), 10)
    flood = (b"NOOP " + b"x" * 400 + b"\r\n") * 1000 + b"QUIT\r\n"  # 400 KB behind it
    writer.write(flood)
    [connection] = server.table.handles()
    session = connection._session
    assert session is not None
    await wait_until(lambda: connection._read_paused)  # reading stopped...
    assert PAUSE_AT < session.buffered() <= PAUSE_AT + 256 * 1024  # ...past the bound
    server.auth.go.set()  # the login ends; everything held is answered, in order
    lines = await read_all(reader)
    writer.close()
    assert b"235 2.7.0 Authentication successful\r\n" in lines
    assert lines[-2:] == [b"250 2.0.0 OK\r\n", b"221 2.0.0 Bye\r\n"]
    assert lines.count(b"250 2.0.0 OK\r\n") == 1000
    assert not connection._read_paused
