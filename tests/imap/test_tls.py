"""STARTTLS: offered always, required before any password when the listener is not loopback,
and nothing sent in the clear after STARTTLS is ever executed."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
from pathlib import Path

import pytest

from mailnode.client_tls import ensure_certificate, server_context
from mailnode.imap.server import ImapServer
from mailnode.imap.session import ImapSession, Security
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import Dialog, ServerFactory

TIMEOUT = 10


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed; clients pin it after asking the user
    return ctx


@pytest.fixture
async def tls_server(start_server: ServerFactory, tmp_path: Path) -> ImapServer:
    context = server_context(ensure_certificate(tmp_path, "0.0.0.0", 1_800_000_000))
    return await start_server(tls_context=context, require_tls=True)


async def test_password_refused_before_starttls(store: MailStore,
                                                notifier: ChangeNotifier) -> None:
    dialog = Dialog(ImapSession(store, notifier, security=Security(True, True)))
    greeting = dialog.session.greeting()
    assert b"STARTTLS" in greeting and b"LOGINDISABLED" in greeting
    assert b"AUTH=PLAIN" not in greeting
    assert (await dialog.login()).startswith(b"L NO [PRIVACYREQUIRED]")
    out = await dialog.send(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert out.startswith(b"a NO [PRIVACYREQUIRED]")
    # STARTTLS with a command pipelined behind it: the second command is dropped
    out = await dialog.send(b"s STARTTLS\r\nn LOGIN alice secret\r\n")
    assert out == b"s OK Begin TLS negotiation now\r\n"
    dialog.session.tls_started()
    caps = await dialog.send(b"c CAPABILITY\r\n")
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
    assert (await dialog.login()).startswith(b"L OK")


async def test_loopback_offers_starttls_without_requiring_it(
        store: MailStore, notifier: ChangeNotifier) -> None:
    dialog = Dialog(ImapSession(store, notifier, security=Security(True, False)))
    assert b"STARTTLS" in dialog.session.greeting()
    assert (await dialog.login()).startswith(b"L OK")


def imaplib_over_starttls(port: int) -> None:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    assert "LOGINDISABLED" in m.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        m.login("alice", "secret")  # imaplib itself refuses: the server said LOGINDISABLED
    assert m.starttls(ssl_context=client_context())[0] == "OK"
    assert m.login("alice", "secret")[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    assert m.logout()[0] == "BYE"


async def test_imaplib_starttls_then_login(tls_server: ImapServer) -> None:
    assert tls_server.port is not None
    await asyncio.wait_for(asyncio.to_thread(imaplib_over_starttls, tls_server.port), TIMEOUT)


async def test_plaintext_injected_after_starttls_is_not_executed(
        tls_server: ImapServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
    try:
        await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.write(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == \
            b"a OK Begin TLS negotiation now\r\n"
        await writer.start_tls(client_context())
        writer.write(b"c NOOP\r\nd SELECT INBOX\r\n")
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"c OK NOOP completed\r\n"
        # had "b LOGIN" run, SELECT would work; the session is still not authenticated
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(b"d BAD")
    finally:
        writer.close()
