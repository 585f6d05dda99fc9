"""End to end over real loopback sockets: stdlib imaplib, aioimaplib IDLE, raw sockets, curl."""

from __future__ import annotations

import asyncio
import imaplib
import shutil

import aioimaplib
import pytest

from mailnode.imap.server import ImapServer
from mailnode.store.api import MailStore
from tests.imap.conftest import MESSAGE, ServerFactory
from tests.imap.memstore import MemStore

TIMEOUT = 10


def imaplib_session(port: int) -> list[str]:
    """A typical client run; returns notes so failures show what happened."""
    m = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    assert "IDLE" in m.capabilities and "AUTH=PLAIN" in m.capabilities
    assert m.login("alice", "secret")[0] == "OK"
    typ, boxes = m.list()
    assert typ == "OK"
    assert any(isinstance(b, bytes) and b'"Sent"' in b and b"\\Sent" in b for b in boxes)
    typ, appended = m.append("INBOX", r"(\Flagged)", None, MESSAGE)
    assert typ == "OK" and b"APPENDUID" in appended[0]
    m.append("INBOX", None, None, MESSAGE.replace(b"Hello there", b"Second"))
    assert m.select("INBOX") == ("OK", [b"2"])
    typ, fetched = m.fetch("1", "(BODY[])")
    assert typ == "OK"
    first = fetched[0]
    assert isinstance(first, tuple) and first[1] == MESSAGE
    typ, data = m.uid("FETCH", "2", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    assert isinstance(data[0], tuple) and data[0][1] == b"Subject: Second\r\n\r\n"
    assert m.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Flagged \\Seen \\Recent))"]
    assert m.store("2", "+FLAGS", r"(\Deleted)")[0] == "OK"
    assert m.search(None, "DELETED") == ("OK", [b"2"])
    assert m.search(None, "SUBJECT", '"hello there"') == ("OK", [b"1"])
    assert m.expunge() == ("OK", [b"2"])
    assert m.status("INBOX", "(MESSAGES UIDNEXT)")[1] == [b'"INBOX" (MESSAGES 1 UIDNEXT 3)']
    assert m.close()[0] == "OK"
    assert m.logout()[0] == "BYE"
    return []


async def test_imaplib_session(server: ImapServer) -> None:
    assert server.port
    await asyncio.wait_for(asyncio.to_thread(imaplib_session, server.port), TIMEOUT)


def imaplib_authenticate(port: int) -> None:
    """AUTHENTICATE PLAIN waiting for "+", with the user name repeated as authzid (mutt)."""
    m = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    typ, data = m.authenticate("PLAIN", lambda _: b"alice\0alice\0secret")
    first: object = data[0]
    assert typ == "OK" and isinstance(first, bytes) and first.startswith(b"[CAPABILITY IMAP4rev1")
    assert m.logout()[0] == "BYE"


async def test_imaplib_authenticate_plain(server: ImapServer) -> None:
    assert server.port
    await asyncio.wait_for(asyncio.to_thread(imaplib_authenticate, server.port), TIMEOUT)


async def test_aioimaplib_idle_sees_append_from_other_session(server: ImapServer) -> None:
    idler = aioimaplib.IMAP4("127.0.0.1", server.port, timeout=TIMEOUT)
    writer = aioimaplib.IMAP4("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        for client in (idler, writer):
            await client.wait_hello_from_server()
            assert (await client.login("alice", "secret")).result == "OK"
        assert (await idler.select("INBOX")).result == "OK"
        idle = await idler.idle_start(timeout=TIMEOUT)
        assert (await writer.append(MESSAGE, mailbox="INBOX")).result == "OK"
        pushed: list[bytes | str] = []
        while not any(b"EXISTS" in (p if isinstance(p, bytes) else p.encode()) for p in pushed):
            pushed += await asyncio.wait_for(idler.wait_server_push(TIMEOUT), TIMEOUT)
        assert any(b"1 EXISTS" in (p if isinstance(p, bytes) else p.encode()) for p in pushed)
        idler.idle_done()
        assert (await asyncio.wait_for(idle, TIMEOUT)).result == "OK"
    finally:
        for client in (idler, writer):
            await client.logout()


async def raw_connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    greeting = await asyncio.wait_for(reader.readline(), TIMEOUT)
    assert greeting.startswith(b"* OK [CAPABILITY")
    return reader, writer


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  tag: bytes, line: bytes) -> list[bytes]:
    """Send one command; return all lines up to and including its tagged reply."""
    writer.write(tag + b" " + line + b"\r\n")
    await writer.drain()
    lines: list[bytes] = []
    while True:
        got = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert got, lines
        lines.append(got)
        if got.startswith(tag + b" "):
            return lines


async def test_two_sessions_see_each_others_changes(server: ImapServer, store: MemStore) -> None:
    assert server.port
    inbox = await store.get_mailbox(1, "INBOX")
    assert inbox is not None
    for _ in range(3):
        await store.append(inbox.id, MESSAGE, frozenset(), None)
    a = await raw_connect(server.port)
    b = await raw_connect(server.port)
    try:
        for conn in (a, b):
            await command(*conn, b"l", b"LOGIN alice secret")
            await command(*conn, b"s", b"SELECT INBOX")
        await command(*a, b"f", b"STORE 1 +FLAGS (\\Flagged)")
        assert await command(*b, b"n", b"NOOP") == [
            b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n", b"n OK NOOP completed\r\n"]
        await command(*b, b"d", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        assert await command(*b, b"e", b"EXPUNGE") == [
            b"* 2 EXPUNGE\r\n", b"e OK EXPUNGE completed\r\n"]
        assert await command(*a, b"x", b"FETCH 1:* UID") == [
            b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 2)\r\n", b"* 3 FETCH (UID 3)\r\n",
            b"x OK FETCH completed\r\n"]
        # a selected first, so the three messages are \Recent in a's session only
        assert await command(*a, b"y", b"UID FETCH 1:* FLAGS") == [
            b"* 2 EXPUNGE\r\n", b"* 2 RECENT\r\n",
            b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\n",
            b"* 2 FETCH (UID 3 FLAGS (\\Recent))\r\n", b"y OK UID FETCH completed\r\n"]
        # An IDLE session is told of the other session's changes as they happen.
        a[1].write(b"i IDLE\r\n")
        assert await asyncio.wait_for(a[0].readline(), TIMEOUT) == b"+ idling\r\n"
        await command(*b, b"g", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        assert await asyncio.wait_for(a[0].readline(), TIMEOUT) == \
            b"* 2 FETCH (UID 3 FLAGS (\\Deleted \\Recent))\r\n"
        await command(*b, b"h", b"EXPUNGE")
        assert await asyncio.wait_for(a[0].readline(), TIMEOUT) == b"* 2 EXPUNGE\r\n"
        assert await asyncio.wait_for(a[0].readline(), TIMEOUT) == b"* 1 RECENT\r\n"
        a[1].write(b"DONE\r\n")
        assert await asyncio.wait_for(a[0].readline(), TIMEOUT) == b"i OK IDLE terminated\r\n"
        assert await command(*a, b"z", b"SEARCH ALL") == [
            b"* SEARCH 1\r\n", b"z OK SEARCH completed\r\n"]
    finally:
        for _, w in (a, b):
            w.close()


async def test_garbage_then_normal_use(server: ImapServer) -> None:
    assert server.port
    reader, writer = await raw_connect(server.port)
    try:
        writer.write(b"\xff\xfe\x00 garbage {\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(b"* BAD ")
        assert (await command(reader, writer, b"a", b"FETCH ((("))[-1].startswith(b"a BAD ")
        assert (await command(reader, writer, b"b", b"LOGIN alice secret"))[-1].startswith(
            b"b OK [CAPABILITY ")
        assert (await command(reader, writer, b"c", b"SELECT INBOX"))[-1].startswith(b"c OK")
        assert (await command(reader, writer, b"d", b"LOGOUT"))[-1] == b"d OK LOGOUT completed\r\n"
    finally:
        writer.close()


async def test_line_flood_closes_connection(start_server: ServerFactory) -> None:
    srv = await start_server(max_literal=1000)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    writer.write(b"a " + b"x" * 200_000)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert rest == b"a BAD Line too long\r\n* BYE Protocol error, closing connection\r\n"
    writer.close()
    # The server is still fine for others.
    r2, w2 = await raw_connect(srv.port)
    assert (await command(r2, w2, b"n", b"NOOP"))[-1] == b"n OK NOOP completed\r\n"
    w2.close()


async def test_oversized_literal_is_refused(server: ImapServer) -> None:
    assert server.port
    reader, writer = await raw_connect(server.port)
    try:
        await command(reader, writer, b"l", b"LOGIN alice secret")
        assert await command(reader, writer, b"a", b"APPEND INBOX {99999999}") == [
            b"a BAD [TOOBIG] Literal too large\r\n"]
        assert await command(reader, writer, b"b", b"NOOP") == [b"b OK NOOP completed\r\n"]
    finally:
        writer.close()


async def test_stop_says_bye_to_connected_clients(start_server: ServerFactory) -> None:
    srv = await start_server(max_literal=1000)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    await command(reader, writer, b"l", b"LOGIN alice secret")
    await srv.stop()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"* BYE Server shutting down\r\n"
    writer.close()


async def test_connection_limit(start_server: ServerFactory) -> None:
    """A full listener makes room by closing a connection that has not logged in; once
    every connection is a logged-in session, newcomers are refused."""
    srv = await start_server(max_literal=1000, max_connections=1)
    assert srv.port
    first = await raw_connect(srv.port)
    second = await raw_connect(srv.port)
    assert (await asyncio.wait_for(first[0].read(), TIMEOUT)).startswith(
        b"* BYE Too many connections")
    assert (await command(*second, b"a", b"LOGIN alice secret"))[-1].startswith(b"a OK")
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"* BYE ")
    writer.close()
    first[1].close()
    second[1].close()


async def test_login_timeout(start_server: ServerFactory) -> None:
    srv = await start_server(max_literal=1000, login_timeout=0.2)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"* BYE Autologout")
    writer.close()


async def test_idle_timeout_between_commands(start_server: ServerFactory) -> None:
    """A logged-in client that sends nothing is logged out after ``idle_timeout`` (between
    commands the adapter awaits the client's bytes directly, the timeout around the read);
    one that keeps sending commands is not."""
    srv = await start_server(max_literal=1000, idle_timeout=1.0, login_timeout=30)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    assert (await command(reader, writer, b"l", b"LOGIN alice secret"))[-1].startswith(b"l OK")
    for n in range(3):
        assert (await command(reader, writer, b"n%d" % n, b"NOOP"))[-1].endswith(
            b"OK NOOP completed\r\n")
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(
        b"* BYE Autologout: idle for too long")
    writer.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_lists_and_fetches(server: ImapServer, store: MemStore) -> None:
    inbox = await store.get_mailbox(1, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, MESSAGE, frozenset(), None)

    async def curl(url: str) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "-S", "--max-time", str(TIMEOUT), "--login-options", "AUTH=PLAIN",
            "-u", "alice:secret", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT + 5)
        assert proc.returncode == 0, err
        return out

    base = f"imap://127.0.0.1:{server.port}"
    listing = await curl(base + "/")
    assert b'"INBOX"' in listing and b"\\Sent" in listing
    assert await curl(base + "/INBOX;UID=1") == MESSAGE


async def test_a_client_that_stops_reading_is_dropped(start_server: ServerFactory,
                                                      store: MailStore) -> None:
    """A FETCH far larger than the socket buffers, never read: the session does not wait
    for the client forever (nor hold its buffers)."""
    big = MESSAGE + b"x" * 4_000_000 + b"\r\n"
    inbox = await store.get_mailbox(1, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, big, frozenset(), None)
    srv = await start_server(max_literal=1000, send_timeout=0.5)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    assert (await command(reader, writer, b"a", b"LOGIN alice secret"))[-1].startswith(b"a OK")
    await command(reader, writer, b"s", b"SELECT INBOX")
    items = b" ".join(b"BODY.PEEK[]<%d.4000000>" % i for i in range(20))  # 80 MB asked
    writer.write(b"f FETCH 1 (" + items + b")\r\n")
    await writer.drain()


    async def dropped() -> None:
        while len(srv.table):
            await asyncio.sleep(0.05)
    await asyncio.wait_for(dropped(), TIMEOUT)  # it gave up on us
    writer.close()
