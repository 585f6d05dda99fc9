"""IMAP commands per second: mailnode's server against Dovecot, in the same run.

10 clients log in, select INBOX (200 messages) and loop over NOOP, UID FETCH 1:* (FLAGS),
FETCH n (BODY.PEEK[HEADER]), UID SEARCH UNSEEN and STORE +/-FLAGS. Dovecot (Debian's
dovecot-imapd) is the baseline when installed; without it only mailnode's figure is printed.
Run: ``python -m bench.imap_commands``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from crypto.keys import Identity
from mailnode.imap.server import ImapServer
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

CLIENTS = 10
ROUNDS = 60
MESSAGES = 200
PASSWORD = "bench-password"
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


def sample(i: int) -> bytes:
    return (f"From: a{i}@example.org\r\nTo: b@example.org\r\nSubject: message {i}\r\n"
            f"Message-ID: <{i}@bench>\r\n\r\n" + "body line\r\n" * 30).encode()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        return cls(reader, writer)

    async def cmd(self, text: str, literal: bytes | None = None) -> bytes:
        self.n += 1
        tag = f"b{self.n}".encode()
        if literal is None:
            self.writer.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.writer.write(tag + b" " + text.encode() + f" {{{len(literal)}}}\r\n".encode())
            await self.reader.readline()  # "+ ..."
            self.writer.write(literal + b"\r\n")
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            m = _LITERAL.search(line)
            if m:
                await self.reader.readexactly(int(m.group(1)))
                continue
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text!r}: {line!r}")
                return line

    async def close(self) -> None:
        await self.cmd("LOGOUT")
        self.writer.close()


async def workload(port: int, user: str) -> float:
    clients = [await Client.connect(port) for _ in range(CLIENTS)]
    for c in clients:
        await c.cmd(f'LOGIN {user} "{PASSWORD}"')
        await c.cmd("SELECT INBOX")

    async def loop(c: Client, k: int) -> None:
        for r in range(ROUNDS):
            n = (k * 7 + r) % MESSAGES + 1
            await c.cmd("NOOP")
            await c.cmd("UID FETCH 1:* (FLAGS)")
            await c.cmd(f"FETCH {n} (BODY.PEEK[HEADER])")
            await c.cmd("UID SEARCH UNSEEN")
            await c.cmd(f"STORE {n} {'+' if r % 2 else '-'}FLAGS (\\Flagged)")
    start = time.perf_counter()
    await asyncio.gather(*(loop(c, k) for k, c in enumerate(clients)))
    elapsed = time.perf_counter() - start
    for c in clients:
        await c.close()
    return CLIENTS * ROUNDS * 5 / elapsed


async def fill(port: int, user: str) -> None:
    c = await Client.connect(port)
    await c.cmd(f'LOGIN {user} "{PASSWORD}"')
    for i in range(MESSAGES):
        await c.cmd("APPEND INBOX ()", sample(i))
    await c.close()


async def mailnode(tmp: Path) -> float:
    db = Database.open(tmp / "bench.db")
    notifier = ChangeNotifier()
    store = SqlStore(db, notifier)
    await store.create_user("bench", PASSWORD, Identity.generate())
    server = ImapServer(store, notifier, max_literal=1 << 20)
    await server.start("127.0.0.1", 0)
    assert server.port is not None
    try:
        await fill(server.port, "bench")
        return await workload(server.port, "bench")
    finally:
        await server.stop()
        db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dovecot(tmp: Path, port: int, user: str = "bench", password: str = PASSWORD,
                  extra: str = "") -> subprocess.Popen[bytes] | None:
    """A throwaway Debian Dovecot in ``tmp`` serving ``user`` on ``port``; None if not installed."""
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot"
                                         if os.path.exists("/usr/sbin/dovecot") else None)
    if binary is None:
        return None
    tmp.chmod(0o755)  # dovecot's auth process runs as its own user and reads the passwd-file
    (tmp / "users").write_text(f"{user}:{{PLAIN}}{password}\n")
    (tmp / "home").mkdir()
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # dovecot refuses to serve mail as root: use nobody
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        os.chown(tmp / "home", uid, gid)
    conf = tmp / "dovecot.conf"
    conf.write_text(f"""
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{tmp}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={tmp}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
}}
{extra}""")
    return subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def dovecot(tmp: Path) -> float | None:
    port = free_port()
    proc = start_dovecot(tmp, port)
    if proc is None:
        return None
    try:
        for _ in range(200):
            try:
                await fill(port, "bench")
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            return None
        return await workload(port, "bench")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if os.environ.get("BENCH_DEBUG"):
            print((tmp / "dovecot.log").read_text()[-3000:])


def main() -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        base = asyncio.run(dovecot(Path(b)))
        ours = asyncio.run(mailnode(Path(a)))
    total = CLIENTS * ROUNDS * 5
    print(f"{total} commands from {CLIENTS} clients on a {MESSAGES}-message INBOX")
    if base is None:
        print("dovecot not installed: no baseline (apt-get install dovecot-imapd)")
        print(f"mailnode : {ours:7.0f} commands/s")
        return
    print(f"dovecot  : {base:7.0f} commands/s (1.00)")
    print(f"mailnode : {ours:7.0f} commands/s ({ours / base:.2f} of dovecot)")


if __name__ == "__main__":
    main()
