"""Password guesses per second that 50 parallel IMAP connections get, before and after the
login guard, in the same run.

A real in-process IMAP server on a fresh SQLite store (real scrypt hashes) with one user.
50 attacker connections loop ``LOGIN victim <wrong password>``; a guess counts when the
server checked it (``NO [AUTHENTICATIONFAILED]``). A refused connection or a lockout
(``NO [UNAVAILABLE]``/``BYE``) sends the attacker back to reconnect after 0.1 s, so the
attack keeps going without spinning the shared event loop. Half way through, the owner logs
in with the right password from another address; the time that takes is printed too.

* before: the behaviour without the guard: no penalty, no per-source cap, every failure
  answered after a flat ``failed_login_delay`` (1 s) sleep, as the store used to do.
* after, 1 address: the node's defaults (mailnode.config), all 50 connections from 127.0.0.2.
* after, 50 addresses: the same, one connection from each of 127.0.5.1 ... 127.0.5.50.

Run: ``python -m bench.login_guessing`` (Linux: all of 127.0.0.0/8 is loopback).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from crypto.keys import Identity
from mailnode.auth import Authenticator
from mailnode.config import Config
from mailnode.guard import LoginPenalty
from mailnode.imap.server import ImapServer
from mailnode.store.api import User
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

CONNECTIONS = 50
DURATION = 30.0
WARMUP = 10.0
"""Guesses after WARMUP seconds are the sustained rate (the first ones are the burst)."""
PASSWORD = "the-owners-password"


class NoPenalty(LoginPenalty):
    """The guard switched off."""

    def reserve(self, source: str, account: str, now: float) -> float:
        return 0.0

    def failed(self, source: str, account: str, now: float) -> None:
        pass


class FlatDelayStore(SqlStore):
    """The store as it was: every failed login sleeps ``delay`` seconds after the hash."""

    delay = Config().failed_login_delay

    async def authenticate(self, login: str, password: str) -> User | None:
        user = await super().authenticate(login, password)
        if user is None:
            await asyncio.sleep(self.delay)
        return user


@dataclass
class Result:
    start: float = field(default_factory=time.monotonic)
    guesses: list[float] = field(default_factory=list)
    """When each checked guess was answered, in seconds since the start."""
    owner_login: float = 0.0

    def rate(self, since: float = 0.0) -> float:
        return sum(1 for t in self.guesses if t >= since) / (DURATION - since)


async def attacker(port: int, source: str, n: int, stop: asyncio.Event, result: Result) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            if not (await reader.readline()).startswith(b"* OK"):
                raise ConnectionError("refused")
            i = 0
            while not stop.is_set():
                i += 1
                writer.write(b'g%d LOGIN victim "wrong-%d-%d"\r\n' % (i, n, i))
                line = await reader.readline()
                while line.startswith(b"* "):
                    if line.startswith(b"* BYE"):  # throttled or evicted
                        raise ConnectionError("hung up")
                    line = await reader.readline()
                if b"[AUTHENTICATIONFAILED]" not in line:
                    raise ConnectionError("refused")
                if not stop.is_set():
                    result.guesses.append(time.monotonic() - result.start)
        except ConnectionError:
            await asyncio.sleep(0.1)
        finally:
            writer.close()


async def owner(port: int, stop: asyncio.Event, result: Result) -> None:
    await asyncio.sleep(DURATION / 2)
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   local_addr=("127.0.0.200", 0))
    await reader.readline()
    writer.write(f'o LOGIN victim "{PASSWORD}"\r\n'.encode())
    while not (line := await reader.readline()).startswith(b"o "):
        pass
    assert line.startswith(b"o OK"), line
    result.owner_login = time.perf_counter() - start
    writer.close()


async def scenario(tmp: Path, guarded: bool, sources: list[str]) -> Result:
    db = Database.open(tmp / "bench.db")
    notifier = ChangeNotifier()
    store = SqlStore(db, notifier) if guarded else FlatDelayStore(db, notifier)
    if await store.find_user("victim") is None:
        await store.create_user("victim", PASSWORD, Identity.generate())
    config = Config()
    if guarded:
        auth = Authenticator(store, LoginPenalty(base_delay=config.failed_login_delay,
                                                 lockout_after=config.login_lockout_after,
                                                 lockout=config.login_lockout))
        server = ImapServer(store, notifier, max_literal=1 << 20, auth=auth,
                            max_connections=config.max_connections,
                            max_connections_per_source=config.max_connections_per_source,
                            max_sessions_per_user=config.max_sessions_per_user)
    else:
        server = ImapServer(store, notifier, max_literal=1 << 20,
                            auth=Authenticator(store, NoPenalty()),
                            max_connections=config.max_connections,
                            max_connections_per_source=CONNECTIONS * 2)
    await server.start("127.0.0.1", 0)
    assert server.port is not None
    result, stop = Result(), asyncio.Event()
    tasks = [asyncio.create_task(attacker(server.port, sources[n % len(sources)], n, stop,
                                          result)) for n in range(CONNECTIONS)]
    owner_task = asyncio.create_task(owner(server.port, stop, result))
    await asyncio.sleep(DURATION)
    stop.set()
    await owner_task
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.stop()
    db.close()
    return result


def main() -> None:
    logging.disable(logging.WARNING)  # one line per failed login is the point, not here
    one = ["127.0.0.2"]
    many = [f"127.0.5.{i + 1}" for i in range(CONNECTIONS)]
    runs = [("before (no guard, flat 1 s delay)", False, one),
            ("after, 50 connections from 1 address", True, one),
            ("after, 1 connection from each of 50 addresses", True, many)]
    results = []
    for label, guarded, sources in runs:
        with tempfile.TemporaryDirectory() as tmp:
            results.append((label, asyncio.run(scenario(Path(tmp), guarded, sources))))
    base, base_late = results[0][1].rate(), results[0][1].rate(WARMUP)
    print(f"wrong-password IMAP LOGINs checked, {CONNECTIONS} parallel connections, "
          f"{DURATION:.0f} s each; sustained = after the first {WARMUP:.0f} s")
    for label, r in results:
        print(f"{label:46}: {r.rate():6.2f} guesses/s ({r.rate() / base:.3f}), sustained "
              f"{r.rate(WARMUP):6.2f} ({r.rate(WARMUP) / base_late:.3f}); "
              f"owner's login {r.owner_login * 1000:.0f} ms")


if __name__ == "__main__":
    main()
