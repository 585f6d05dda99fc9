"""A full outbound queue, or a nearly full disk, is said at once over SMTP: ``452 4.3.1`` at
RCPT or DATA, never a ``250`` for a message that then cannot be kept."""

from __future__ import annotations

import asyncio
import smtplib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.address import address_for
from crypto.keys import Identity
from mailnode.delivery.submit import SubmissionService
from mailnode.smtp.server import SubmissionServer
from mailnode.store.api import User
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import Outgoing, QueueFull, SqlStore, Submission

PASSWORD = "s3cret-pass"
SERVER_ID = "00112233aabbccdd.mailnode.invalid"
LIMIT = 2000
MIN_FREE = 10_000


def message(sender: str, to: str, body: bytes) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: fill\r\n\r\n".encode() + body


@dataclass
class Env:
    store: SqlStore
    port: int
    alice: User
    bob: User
    disk: list[int]
    """Free bytes the service sees on the data directory's filesystem (settable)."""


@pytest.fixture
async def env(store: SqlStore) -> AsyncIterator[Env]:
    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    bob = await store.create_user("bob", PASSWORD, Identity.generate())
    disk = [10 * MIN_FREE]
    service = SubmissionService(store, lambda: None, server_id=SERVER_ID,
                                max_queue_size=LIMIT, disk_free=lambda: disk[0],
                                min_disk_free=MIN_FREE)
    server = SubmissionServer(service, max_message_size=64 * 1024)
    await server.start("127.0.0.1", 0)
    try:
        yield Env(store, server.port, alice, bob, disk)
    finally:
        await server.stop()


def session(env: Env) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", env.port, timeout=10)
    smtp.ehlo("test")
    smtp.login("alice", PASSWORD)
    return smtp


def send(smtp: smtplib.SMTP, sender: str, rcpt: str, data: bytes) -> list[tuple[int, bytes]]:
    """MAIL, RCPT and (if RCPT was accepted) DATA; the replies, for the test to judge."""
    replies = [smtp.docmd(f"MAIL FROM:<{sender}>"), smtp.docmd(f"RCPT TO:<{rcpt}>")]
    if replies[-1][0] == 250:
        assert smtp.docmd("DATA")[0] == 354
        smtp.send(data + b"\r\n.\r\n")
        replies.append(smtp.getreply())
    else:
        smtp.rset()
    return replies


async def test_full_queue_refuses_at_once_and_keeps_what_it_accepted(env: Env) -> None:
    carol = address_for(Identity.generate().verify_key)
    data = message(env.alice.address, carol, b"x" * 600 + b"\r\n")

    def fill() -> list[list[tuple[int, bytes]]]:
        with session(env) as smtp:
            return [send(smtp, env.alice.address, carol, data) for _ in range(5)]
    outcomes = await asyncio.to_thread(fill)
    codes = [[code for code, _ in replies] for replies in outcomes]
    fits = LIMIT // (len(data) + 2)  # as queued: the content DATA ended with CRLF
    assert fits == 2
    # Two copies fit in the limit; the third would not: refused at DATA. The queue is not
    # yet at its limit, so RCPT is still accepted and the next DATA is refused again.
    assert codes[:fits] == [[250, 250, 250]] * fits
    assert codes[fits:] == [[250, 250, 452]] * (5 - fits), outcomes
    assert all(replies[2][1].startswith(b"4.3.1") for replies in outcomes[fits:])
    queued = await env.store.due_outbound(now=2**40)
    assert len(queued) == fits  # every 250 is queued; nothing refused was kept
    assert await env.store.queued_bytes() == fits * (len(data) + 2) <= LIMIT

    # Filled to the byte: now RCPT itself is refused, for remote recipients only.
    top_up = LIMIT - await env.store.queued_bytes()
    await env.store.submit(Submission(env.alice.id, b"", (), b"y" * top_up, b"",
                                      (Outgoing(b"\1" * 16, carol),)))
    assert await env.store.queued_bytes() == LIMIT

    def when_full() -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        with session(env) as smtp:
            return (send(smtp, env.alice.address, carol, data),
                    send(smtp, env.alice.address, env.bob.address,
                         message(env.alice.address, env.bob.address, b"local\r\n")))
    remote, local = await asyncio.to_thread(when_full)
    assert [code for code, _ in remote] == [250, 452] and remote[1][1].startswith(b"4.3.1")
    assert [code for code, _ in local] == [250, 250, 250]  # local mail needs no queue
    inbox = await env.store.get_mailbox(env.bob.id, "INBOX")
    assert inbox is not None and inbox.messages == 1

    # Sent copies free their room: the queue takes mail again.
    for item in await env.store.due_outbound(now=2**40):
        await env.store.outbound_done(item.id)
    assert await env.store.queued_bytes() == 0

    def again() -> list[tuple[int, bytes]]:
        with session(env) as smtp:
            return send(smtp, env.alice.address, carol, data)
    assert [code for code, _ in await asyncio.to_thread(again)] == [250, 250, 250]


async def test_nearly_full_disk_refuses_every_recipient(env: Env) -> None:
    env.disk[0] = MIN_FREE - 1
    data = message(env.alice.address, env.bob.address, b"hello\r\n")

    def attempt() -> list[tuple[int, bytes]]:
        with session(env) as smtp:
            return send(smtp, env.alice.address, env.bob.address, data)
    replies = await asyncio.to_thread(attempt)
    assert [code for code, _ in replies] == [250, 452] and replies[1][1].startswith(b"4.3.1")
    env.disk[0] = MIN_FREE
    assert [code for code, _ in await asyncio.to_thread(attempt)] == [250, 250, 250]


async def test_concurrent_submissions_never_pass_the_limit(store: SqlStore) -> None:
    """The check is in the transaction: many submissions at once cannot all slip past."""
    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    rcpt = address_for(Identity.generate().verify_key)

    async def one(i: int) -> bool:
        try:
            await store.submit(Submission(alice.id, b"", (), b"z" * 300, b"",
                                          (Outgoing(i.to_bytes(16, "big"), rcpt),)),
                               max_queued=LIMIT)
        except QueueFull:
            return False
        return True
    accepted = await asyncio.gather(*(one(i) for i in range(40)))
    assert sum(accepted) == LIMIT // 300
    assert await store.queued_bytes() == 300 * sum(accepted)
    assert len(await store.due_outbound(now=2**40, limit=100)) == sum(accepted)


async def test_queued_bytes_are_counted_from_the_database(store: SqlStore) -> None:
    """A store opened on an existing queue starts from what is queued there."""
    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    rcpt = address_for(Identity.generate().verify_key)
    for i in range(3):
        await store.submit(Submission(alice.id, b"", (), b"q" * 100, b"",
                                      (Outgoing(i.to_bytes(16, "big"), rcpt),)))
    fresh = SqlStore(store.db, store.notifier)
    assert await fresh.queued_bytes() == 300


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 900), st.just(0)), min_size=1, max_size=25))
def test_queue_count_follows_a_model(steps: list[int]) -> None:
    """Submissions (a size) and sent copies (0: the oldest queued copy leaves) in any order:
    a submission is accepted exactly when what is queued plus its size fits the limit, and
    the count the limit is checked against is what the queue really holds."""
    async def run(path: Path) -> None:
        db = Database.open(path)
        try:
            store = SqlStore(db, ChangeNotifier())
            alice = await store.create_user("alice", PASSWORD, Identity.generate())
            rcpt = address_for(Identity.generate().verify_key)
            model: list[int] = []
            for i, size in enumerate(steps):
                if size == 0:
                    due = await store.due_outbound(now=2**40, limit=1000)
                    if due:
                        oldest = min(due, key=lambda item: item.id)
                        await store.outbound_done(oldest.id)
                        model.pop(0)
                    continue
                fits = sum(model) + size <= LIMIT
                try:
                    await store.submit(Submission(alice.id, b"", (), b"m" * size, b"",
                                                  (Outgoing(i.to_bytes(16, "big"), rcpt),)),
                                       max_queued=LIMIT)
                except QueueFull:
                    assert not fits
                else:
                    assert fits
                    model.append(size)
                assert await store.queued_bytes() == sum(model)
            assert await SqlStore(db, ChangeNotifier()).queued_bytes() == sum(model)
        finally:
            db.close()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "q.db"))
