"""How soon other selected sessions see a change, at N messages (in-process, SQLite store).

Times SELECT, a one-message STORE until a second session's NOOP reports it, and an APPEND
until five other selected sessions' NOOPs report it (medians of 7). Before the change feed
each of these re-listed the mailbox; now catching up reads only the changes.
Run: ``python -m bench.imap_feed [--messages 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from crypto.keys import Identity
from mailnode.imap.session import ImapSession
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

MESSAGE = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"


async def send(session: ImapSession, data: bytes) -> bytes:
    await session.receive(data)
    return session.data_to_send()


async def run(count: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(Path(tmp) / "feed.db")
        try:
            notifier = ChangeNotifier()
            store = SqlStore(db, notifier, keep_structure=False)
            user = await store.create_user("u", "password1", Identity.generate())
            inbox = await store.get_mailbox(user.id, "INBOX")
            assert inbox is not None
            for i in range(0, count, 256):  # group commits fill the mailbox quickly
                await asyncio.gather(*(store.append(inbox.id, MESSAGE, frozenset(), None)
                                       for _ in range(min(256, count - i))))

            async def session() -> ImapSession:
                s = ImapSession(store, notifier)
                await send(s, b"L LOGIN u password1\r\n")
                return s

            writer = await session()
            start = time.perf_counter()
            await send(writer, b"s SELECT INBOX\r\n")
            select = time.perf_counter() - start
            others = [await session() for _ in range(5)]
            for other in others:
                await send(other, b"s SELECT INBOX\r\n")
            stores, appends = [], []
            for i in range(7):
                start = time.perf_counter()
                await send(writer, b"f STORE %d +FLAGS.SILENT (\\Flagged)\r\n" % (i + 1))
                assert b"FETCH" in await send(others[0], b"n NOOP\r\n")
                stores.append(time.perf_counter() - start)
                start = time.perf_counter()
                await store.append(inbox.id, MESSAGE, frozenset(), None)
                for other in others:
                    assert b"EXISTS" in await send(other, b"n NOOP\r\n")
                appends.append(time.perf_counter() - start)
        finally:
            db.close()
    return (f"{count} messages: SELECT {select * 1000:.0f} ms; STORE seen by a second "
            f"session {statistics.median(stores) * 1000:.1f} ms; APPEND seen by five "
            f"sessions {statistics.median(appends) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    print(asyncio.run(run(parser.parse_args().messages)))


if __name__ == "__main__":
    main()
