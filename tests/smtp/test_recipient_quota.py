"""Local copies of a submission count against the recipient's quota (``user_quota_mb``):
a recipient already at the limit is refused at RCPT with ``452 4.2.2`` (the others are
still accepted); a message that does not fit is refused at DATA, for all recipients, and
nothing of it is kept (a submission is filed whole or not at all)."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from crypto.address import address_for
from crypto.keys import Identity
from mailnode.delivery.submit import SubmissionService
from mailnode.smtp.server import SubmissionServer
from mailnode.store.api import User
from mailnode.store.sqlite import SqlStore

PASSWORD = "s3cret-pass"
SERVER_ID = "00112233aabbccdd.mailnode.invalid"
QUOTA = 4000


@dataclass
class Env:
    store: SqlStore
    port: int
    alice: User
    bob: User
    carol: User


@pytest.fixture
async def env(store: SqlStore) -> AsyncIterator[Env]:
    store.user_quota = QUOTA
    users = [await store.create_user(n, PASSWORD, Identity.generate())
             for n in ("alice", "bob", "carol")]
    service = SubmissionService(store, lambda: None, server_id=SERVER_ID)
    server = SubmissionServer(service, max_message_size=64 * 1024)
    await server.start("127.0.0.1", 0)
    try:
        yield Env(store, server.port, *users)
    finally:
        await server.stop()


def message(sender: str, body: bytes) -> bytes:
    return f"From: {sender}\r\nTo: friends\r\nSubject: q\r\n\r\n".encode() + body


def send(env: Env, rcpts: list[str], data: bytes) -> list[tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", env.port, timeout=10) as smtp:
        smtp.ehlo("test")
        smtp.login("alice", PASSWORD)
        replies = [smtp.docmd(f"MAIL FROM:<{env.alice.address}>")]
        replies += [smtp.docmd(f"RCPT TO:<{rcpt}>") for rcpt in rcpts]
        if any(code == 250 for code, _ in replies[1:]):
            assert smtp.docmd("DATA")[0] == 354
            smtp.send(data + b"\r\n.\r\n")
            replies.append(smtp.getreply())
        return replies


async def inbox_count(env: Env, user: User) -> int:
    box = await env.store.get_mailbox(user.id, "INBOX")
    assert box is not None
    return box.messages


async def test_full_recipient_refused_at_rcpt_others_get_it(env: Env) -> None:
    bob_inbox = await env.store.get_mailbox(env.bob.id, "INBOX")
    assert bob_inbox is not None
    await env.store.append(bob_inbox.id, b"x" * QUOTA, frozenset(), None)  # exactly full
    data = message(env.alice.address, b"hello\r\n")
    replies = await asyncio.to_thread(send, env, [env.bob.address, env.carol.address], data)
    assert [code for code, _ in replies] == [250, 452, 250, 250]
    assert replies[1][1] == f"4.2.2 Mailbox of {env.bob.address} is full; try again " \
                            "later".encode()
    assert await inbox_count(env, env.bob) == 1  # only what filled it
    assert await inbox_count(env, env.carol) == 1


async def test_message_that_does_not_fit_is_refused_whole_at_data(env: Env) -> None:
    carol_inbox = await env.store.get_mailbox(env.carol.id, "INBOX")
    assert carol_inbox is not None
    await env.store.append(carol_inbox.id, b"x" * (QUOTA - 1000), frozenset(), None)
    remote = address_for(Identity.generate().verify_key)
    big = message(env.alice.address, (b"y" * 98 + b"\r\n") * 15)
    replies = await asyncio.to_thread(
        send, env, [env.bob.address, env.carol.address, remote], big)
    assert [code for code, _ in replies] == [250, 250, 250, 250, 452]
    assert replies[-1][1] == f"4.2.2 Mailbox of {env.carol.address} is full; try again " \
                             "later".encode()
    # nothing of the refused message was kept: not bob's copy, not the remote one
    assert await inbox_count(env, env.bob) == 0
    assert await env.store.due_outbound(now=2**40) == []
    assert (await env.store.usage(env.bob.id)).storage == 0
    # a message that fits goes to all of them
    small = message(env.alice.address, b"small\r\n")
    replies = await asyncio.to_thread(send, env, [env.bob.address, env.carol.address], small)
    assert [code for code, _ in replies] == [250, 250, 250, 250]
    assert await inbox_count(env, env.carol) == 2
    assert (await env.store.usage(env.carol.id)).storage <= QUOTA
