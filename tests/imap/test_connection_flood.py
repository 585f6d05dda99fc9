"""A real IMAP listener under hundreds of idle and trickling connections from several
loopback addresses: the owner still logs in, sessions are capped per user and per source,
and a client that never logs in is closed at the deadline however busy it is."""

from __future__ import annotations

import asyncio
import contextlib

from tests.imap.conftest import ServerFactory
from tests.imap.test_e2e import TIMEOUT, command, raw_connect

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect_from(port: int, source: str) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return reader, writer


async def trickle(conn: Conn) -> bytes:
    """NOOP after NOOP, never logging in, until the server ends it; returns its BYE."""
    reader, writer = conn
    n = 0
    with contextlib.suppress(ConnectionError):
        while True:
            n += 1
            writer.write(b"t%d NOOP\r\n" % n)
            while True:
                line = await reader.readline()
                if not line or line.startswith(b"* BYE"):
                    return line
                if line.startswith(b"t%d " % n):
                    break
    return b""


async def test_owner_logs_in_past_hundreds_of_idle_and_trickling_strangers(
        start_server: ServerFactory) -> None:
    srv = await start_server(max_connections=40, max_connections_per_source=20,
                             login_timeout=60)
    assert srv.port
    bystander = await raw_connect(srv.port)
    assert (await command(*bystander, b"a", b"LOGIN bob hunter2"))[-1].startswith(b"a OK")
    strangers: list[Conn] = []
    tricklers: list[asyncio.Task[bytes]] = []
    for i in range(300):
        conn = await connect_from(srv.port, f"127.0.2.{i % 15 + 1}")
        strangers.append(conn)
        if i % 3 == 0:
            tricklers.append(asyncio.create_task(trickle(conn)))
    assert len(srv.table) <= 40
    owner = await raw_connect(srv.port)
    assert (await command(*owner, b"a", b"LOGIN alice secret"))[-1].startswith(b"a OK")
    assert (await command(*owner, b"b", b"SELECT INBOX"))[-1].startswith(b"b OK")
    for i in range(100):  # more strangers never push out a logged-in session
        strangers.append(await connect_from(srv.port, f"127.0.3.{i % 15 + 1}"))
    assert (await command(*owner, b"c", b"NOOP"))[-1].startswith(b"c OK")
    assert (await command(*bystander, b"d", b"NOOP"))[-1].startswith(b"d OK")
    byes = await asyncio.wait_for(asyncio.gather(*tricklers[:50]), TIMEOUT)
    assert all(b.startswith(b"* BYE Too many connections") for b in byes)
    for _, writer in (*strangers, owner, bystander):
        writer.close()
    for task in tricklers:
        task.cancel()


async def test_busy_client_is_closed_at_the_login_deadline(start_server: ServerFactory) -> None:
    srv = await start_server(login_timeout=0.5)
    assert srv.port
    user = await raw_connect(srv.port)
    assert (await command(*user, b"a", b"LOGIN alice secret"))[-1].startswith(b"a OK")
    conn = await connect_from(srv.port, "127.0.0.9")
    assert (await asyncio.wait_for(conn[0].readline(), TIMEOUT)).startswith(b"* OK")
    bye = await asyncio.wait_for(trickle(conn), TIMEOUT)
    assert bye.startswith(b"* BYE Autologout: no login in time")
    # a half-sent command does not hold the connection open either
    reader, writer = await connect_from(srv.port, "127.0.0.9")
    writer.write(b"x LOGIN alice")
    rest = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert rest.endswith(b"* BYE Autologout: no login in time\r\n")
    assert (await command(*user, b"b", b"NOOP"))[-1].startswith(b"b OK")
    for w in (conn[1], writer, user[1]):
        w.close()


async def test_one_users_sessions_do_not_lock_out_others(start_server: ServerFactory) -> None:
    srv = await start_server(max_connections=10, max_sessions_per_user=4)
    assert srv.port
    idlers = [await raw_connect(srv.port) for _ in range(4)]
    for conn in idlers:
        assert (await command(*conn, b"a", b"LOGIN alice secret"))[-1].startswith(b"a OK")
        assert (await command(*conn, b"b", b"SELECT INBOX"))[-1].startswith(b"b OK")
        conn[1].write(b"c IDLE\r\n")
        assert (await asyncio.wait_for(conn[0].readline(), TIMEOUT)).startswith(b"+")
    extra = await raw_connect(srv.port)
    assert (await command(*extra, b"a", b"LOGIN alice secret"))[-1] == (
        b"a NO [LIMIT] Too many sessions for this user\r\n")
    bob = await raw_connect(srv.port)
    assert (await command(*bob, b"a", b"LOGIN bob hunter2"))[-1].startswith(b"a OK")
    for _, writer in (*idlers, extra, bob):
        writer.close()


async def test_per_source_cap(start_server: ServerFactory) -> None:
    srv = await start_server(max_connections_per_source=3)
    assert srv.port
    held = [await connect_from(srv.port, "127.0.0.8") for _ in range(3)]
    for reader, _ in held:
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(b"* OK")
    reader, writer = await connect_from(srv.port, "127.0.0.8")
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(
        b"* BYE Too many connections from your address")
    other = await raw_connect(srv.port)  # 127.0.0.1
    assert (await command(*other, b"a", b"LOGIN alice secret"))[-1].startswith(b"a OK")
    # Logged-in sessions are capped per user, not per address: the owner's clients that
    # share one address (all of them, on a loopback node) are not limited to three.
    for conn in held:
        assert (await command(*conn, b"b", b"LOGIN bob hunter2"))[-1].startswith(b"b OK")
    more = [await connect_from(srv.port, "127.0.0.8") for _ in range(3)]
    for r, _ in more:
        assert (await asyncio.wait_for(r.readline(), TIMEOUT)).startswith(b"* OK")
    for _, w in (*held, (reader, writer), other, *more):
        w.close()
