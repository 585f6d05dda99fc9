"""SMTP replies over a real socket (smtplib): enhanced status codes on all of them, limits in
the text, ENHANCEDSTATUSCODES advertised, 421 before an idle connection is closed."""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import AsyncIterator

import pytest

from crypto.keys import Identity
from mailnode.delivery.submit import SubmissionService
from mailnode.smtp import replies
from mailnode.smtp.server import SubmissionServer
from mailnode.store.api import User
from mailnode.store.sqlite import SqlStore

PASSWORD = "s3cret-pass"
SERVER_ID = "00112233aabbccdd.mailnode.invalid"
LIMIT = 1024 * 1024
ENHANCED = re.compile(r"^([245])\d\d[ -]([245])\.\d{1,3}\.\d{1,3}( |$)")


def message(sender: str, to: str, body: bytes = b"Hello there.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: test\r\n"
            "Message-ID: <t1@example>\r\n\r\n").encode() + body


@pytest.fixture
async def served(store: SqlStore) -> AsyncIterator[tuple[SubmissionServer, User]]:
    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    server = SubmissionServer(SubmissionService(store, lambda: None, server_id=SERVER_ID),
                              max_message_size=LIMIT)
    await server.start("127.0.0.1", 0)
    try:
        yield server, alice
    finally:
        await server.stop()


def _enhanced(code: int, text: bytes) -> bool:
    """smtplib splits the code off; the text must start with a matching enhanced code."""
    match = ENHANCED.match(f"{code} {text.decode(errors='replace').splitlines()[-1]}")
    return match is not None and match.group(1) == match.group(2)


async def test_ehlo_advertises_enhanced_status_codes(
        served: tuple[SubmissionServer, User]) -> None:
    server, _ = served

    def dialogue() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.ehlo("test")
            assert smtp.has_extn("enhancedstatuscodes")
            assert smtp.has_extn("size") and smtp.esmtp_features["size"] == str(LIMIT)
    await asyncio.to_thread(dialogue)


async def test_every_reply_of_a_session_carries_an_enhanced_code(
        served: tuple[SubmissionServer, User]) -> None:
    server, alice = served

    def dialogue() -> list[tuple[int, bytes]]:
        seen = []
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.ehlo("test")
            for command in ("MAIL FROM:<x@y>", "NOOP", "RSET", "FROB", "VRFY someone",
                            "EXPN list", "DATA", "RCPT TO:<x@y>", "AUTH", "AUTH X Y Z"):
                seen.append(smtp.docmd(command))
            smtp.login("alice", PASSWORD)
            for command in ("DATA", "RCPT TO:<x@y>", f"MAIL FROM:<{alice.address}>",
                            f"MAIL FROM:<{alice.address}>", "RCPT TO:<nobody@example.com>",
                            "HELP"):
                seen.append(smtp.docmd(command))
            seen.append(smtp.rset())
            seen.append(smtp.noop())
            seen.append(smtp.docmd("QUIT"))
        return seen

    seen = await asyncio.to_thread(dialogue)
    for code, text in seen:
        assert _enhanced(code, text), (code, text)
    assert (221, b"2.0.0 Bye") in seen and (250, b"2.0.0 OK") in seen
    assert (503, b"5.5.1 Send RCPT TO first") in seen
    assert (503, b"5.5.1 MAIL FROM already given; send RSET first") in seen


async def test_oversize_message_states_the_limit(
        served: tuple[SubmissionServer, User]) -> None:
    server, alice = served
    big = message(alice.address, alice.address, (b"y" * 70 + b"\r\n") * (LIMIT // 70 + 10))

    def dialogue() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.login("alice", PASSWORD)
            declared = smtp.docmd(f"MAIL FROM:<{alice.address}> SIZE={LIMIT + 1}")
            smtp.rset()
            # no SIZE declared: refused after the data, the limit in the text
            assert smtp.docmd(f"MAIL FROM:<{alice.address}>")[0] == 250
            assert smtp.docmd(f"RCPT TO:<{alice.address}>")[0] == 250
            assert smtp.docmd("DATA")[0] == 354
            smtp.send(big + b".\r\n")
            undeclared = smtp.getreply()
            # a small SIZE declared, then far more sent
            assert smtp.docmd(f"MAIL FROM:<{alice.address}> SIZE=2000")[0] == 250
            assert smtp.docmd(f"RCPT TO:<{alice.address}>")[0] == 250
            assert smtp.docmd("DATA")[0] == 354
            smtp.send(big + b".\r\n")
            lied = smtp.getreply()
            return [declared, undeclared, lied]

    declared, undeclared, lied = await asyncio.to_thread(dialogue)
    assert declared == (552, b"5.3.4 Message too big: limit 1 MB")
    assert undeclared == (552, b"5.3.4 Message too big: limit 1 MB")
    assert lied == (552, b"5.3.4 Message larger than the SIZE declared in MAIL FROM (1 MB)")


async def test_idle_timeout_answers_421_before_closing(store: SqlStore) -> None:
    await store.create_user("alice", PASSWORD, Identity.generate())
    server = SubmissionServer(SubmissionService(store, lambda: None, server_id=SERVER_ID),
                              max_message_size=LIMIT, idle_timeout=2.0)
    await server.start("127.0.0.1", 0)

    def dialogue() -> tuple[tuple[int, bytes], bool]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.login("alice", PASSWORD)
            reply = smtp.getreply()  # waits: the next line is the server's, when idle ends
            assert smtp.sock is not None
            closed = smtp.sock.recv(1) == b""
            smtp.close()
            return reply, closed

    try:
        (code, text), closed = await asyncio.to_thread(dialogue)
    finally:
        await server.stop()
    assert code == 421 and text.startswith(b"4.4.2 Idle for"), text
    assert closed


def test_size_text_reads_as_people_write_limits() -> None:
    assert replies.size_text(25 * 1024 * 1024) == "25 MB"
    assert replies.size_text(1536 * 1024) == "1.5 MB"
    assert replies.size_text(2048) == "2 KB"
    assert replies.size_text(100) == "100 bytes"
    assert replies.TOO_BIG.format(limit=replies.size_text(25 * 1024 * 1024)) == \
        "552 5.3.4 Message too big: limit 25 MB"


def test_every_reply_has_a_code_of_its_reply_class() -> None:
    """The constants are all the server says besides the greeting, EHLO/HELO and the 3xx
    continuations (tests/smtp/test_protocol.py checks every reply of any dialogue)."""
    lines = [v for k, v in vars(replies).items() if k.isupper() and isinstance(v, str)]
    assert len(lines) > 50
    for line in lines:
        match = ENHANCED.match(line)
        assert match is not None and match.group(1) == match.group(2), line
