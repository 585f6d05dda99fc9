"""SMTP submission throughput against aiosmtpd with a no-op handler, in the same run.

16 concurrent connections each log in once and, once all have, send small messages (the
logins are not timed). Baseline: aiosmtpd with
a handler that accepts everything and stores nothing. Measured: mailnode's submission server
filing each message durably into a local user's INBOX before its 250.
Run: ``python -m bench.smtp_submission``.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult

from crypto.keys import Identity
from mailnode.delivery.submit import SubmissionService
from mailnode.smtp.server import SubmissionServer
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

CONNECTIONS = 16
PER_CONNECTION = 200


async def client(port: int, sender: str, rcpt: str, password: str,
                 ready: asyncio.Barrier) -> float:
    """Log in, wait until every client has, then send; returns when sending started."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    async def cmd(text: str, expect: bytes) -> None:
        writer.write(text.encode() + b"\r\n")
        line = await reply()
        assert line.startswith(expect), (text, line)

    await reply()
    await cmd("EHLO bench", b"250")
    blob = base64.b64encode(f"\0bench\0{password}".encode()).decode()
    await cmd(f"AUTH PLAIN {blob}", b"235")
    await ready.wait()
    start = time.perf_counter()
    body = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench\r\n\r\n"
            + "hello\r\n" * 20 + ".\r\n")
    for _ in range(PER_CONNECTION):
        await cmd(f"MAIL FROM:<{sender}> SIZE={len(body)}", b"250")  # as smtplib does
        await cmd(f"RCPT TO:<{rcpt}>", b"250")
        await cmd("DATA", b"354")
        writer.write(body.encode())
        line = await reply()
        assert line.startswith(b"250"), line
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    return start


class NoopHandler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


async def run_clients(port: int, sender: str, rcpt: str, password: str) -> float:
    """Seconds from the moment all clients are logged in to the last 250. Logins are not
    timed: mailnode checks each password with scrypt (~30 ms, on purpose), the baseline
    accepts any."""
    ready = asyncio.Barrier(CONNECTIONS)
    starts = await asyncio.gather(*(client(port, sender, rcpt, password, ready)
                                    for _ in range(CONNECTIONS)))
    return time.perf_counter() - min(starts)


async def baseline() -> float:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(
        NoopHandler(), auth_required=True, auth_require_tls=False,
        authenticator=lambda *a: AuthResult(success=True)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await run_clients(port, "a@example.org", "b@example.org", "x")
    finally:
        server.close()
        await server.wait_closed()


async def ours(tmp: Path) -> float:
    db = Database.open(tmp / "bench.db")
    store = SqlStore(db, ChangeNotifier())
    sender = await store.create_user("bench", "bench-password", Identity.generate())
    rcpt = await store.create_user("rcpt", "bench-password", Identity.generate())
    service = SubmissionService(store, lambda: None, messages_per_minute=1_000_000,
                                server_id="bench.mailnode.invalid")
    server = SubmissionServer(service,
                              max_message_size=1 << 20)
    await server.start("127.0.0.1", 0)
    try:
        return await run_clients(server.port, sender.address, rcpt.address, "bench-password")
    finally:
        await server.stop()
        db.close()


def main() -> None:
    total = CONNECTIONS * PER_CONNECTION
    base = asyncio.run(baseline())
    with tempfile.TemporaryDirectory() as tmp:
        mine = asyncio.run(ours(Path(tmp)))
    print(f"{total} messages over {CONNECTIONS} connections")
    print(f"aiosmtpd no-op handler : {total / base:7.0f} msg/s (1.00)")
    print(f"mailnode submission    : {total / mine:7.0f} msg/s ({base / mine:.2f} of baseline; "
          "each 250 waits for a durable SQLite commit)")


if __name__ == "__main__":
    main()
