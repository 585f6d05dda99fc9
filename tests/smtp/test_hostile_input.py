"""Garbage on the submission port: every reply is a well-formed SMTP reply without exception
text, nothing a client sends reaches the log raw, and only genuine bugs log a traceback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from crypto.keys import Identity
from mailnode.client_tls import ensure_certificate, server_context
from mailnode.delivery.submit import SubmissionService
from mailnode.logsafe import LOG_FORMAT, SafeFormatter
from mailnode.smtp.server import SubmissionServer
from mailnode.store.api import User
from mailnode.store.sqlite import SqlStore

PASSWORD = "s3cret-pass"
ENHANCED = re.compile(rb"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} ")
PLAIN = re.compile(rb"^\d{3}[ -][\x20-\x7e]*$")
LOGIN = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASSWORD.encode())


@pytest.fixture
async def server(store: SqlStore) -> AsyncIterator[tuple[int, User]]:
    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    smtp = SubmissionServer(SubmissionService(store, lambda: None,
                                              server_id="0011223344556677.mailnode.invalid"),
                            max_message_size=64 * 1024)
    await smtp.start("127.0.0.1", 0)
    try:
        yield smtp.port, alice
    finally:
        await smtp.stop()


async def dialogue(port: int, lines: list[bytes]) -> list[bytes]:
    """Send everything (pipelined), then QUIT; every reply line until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(b"".join(line + b"\r\n" for line in [*lines, b"QUIT"]))
    replies = []
    while line := await asyncio.wait_for(reader.readline(), 10):
        replies.append(line)
    writer.close()
    return replies


def data(*lines: bytes) -> list[bytes]:
    return [b"DATA", b"\r\n".join(lines) + b"\r\n."]


def hostile(address: bytes) -> list[list[bytes]]:
    mail = b"MAIL FROM:<" + address + b">"
    rcpt = b"RCPT TO:<" + address + b">"
    before_login = [
        [b"\xff\xfe garbage"], [b"EH\x00LO x\x1b[2J"], [b"NO\rOP"], [b"X" * 600],
        [b"NOOP " + b"x" * 70_000], [b"EHLO \xff\xfe"], [b"HELP \xff"], [b"BDAT 10 LAST"],
        [b"EHLO x", b"AUTH PLAIN !!!"], [b"EHLO x", b"AUTH PLAIN \xff\xff"],
        [b"EHLO x", b"AUTH PLAIN ="], [b"EHLO x", b"AUTH PLAIN", b"*"],
        [b"EHLO x", b"AUTH PLAIN", b"x" * 70_000],  # overlong SASL line: was 500 (ValueError)
        [b"EHLO x", b"AUTH LOGIN", b"y" * 70_000],
        [b"EHLO x", b"AUTH LOGIN", base64.b64encode(b"\xff"), base64.b64encode(b"pw")],
        [b"EHLO x", b"AUTH PLAIN " + base64.b64encode(b"\0\xff\xfe\0pw")],
        [b"EHLO x", b"AUTH PLAIN " + base64.b64encode(b"\0bob\r\nINFO forged\x1b[0m\0pw")],
        [b"EHLO x", b"AUTH PLAIN a b c"], [b"EHLO x", b"AUTH XOAUTH2 abc"],
        [b"EHLO x", b"MAIL FROM:<a@b>"], [b"EHLO x", b"DATA"],
    ]
    after_login = [
        [b"MAIL FROM:<\xff>"], [mail + b" SIZE=abc"], [mail + b" SIZE=" + b"9" * 40],
        [mail + b" BODY=x"], [mail + b" SMTPUTF8=1"], [mail + b" FOO=\xff"], [b"MAIL FROM:<>"],
        [b"MAIL FROM:<\xed\xa0\x80@mailnode.invalid>"], [b"VRFY \xff\x1b"], [b"VRFY <\xff"],
        [mail, b"RCPT TO:<\xff@mailnode.invalid>"], [mail, b"RCPT TO:<\x00\r@mailnode.invalid>"],
        [mail, b"RCPT TO:<x@y> NOTIFY=\xff"], [mail, b"RCPT TO:<" + b"\xff" * 300 + b">"],
        [mail + b" SMTPUTF8", b"RCPT TO:<\xc3\xa9\xe2\x80\xa8@mailnode.invalid>"],
        [mail, b"RCPT TO:<@a,@b:" + address + b">"],
        [mail, rcpt, *data(b"From: \xff\xfe", b"Subject: \x00", b"", b"x")],
        [mail, rcpt, *data(b"From: =?utf-8?q?\xff?= <" + address + b">", b"", b"x")],
        [mail, rcpt, *data(b"From: " + b"(" * 500 + b"<" + address + b">", b"", b"x")],
        [mail, rcpt, *data(b"From: " + address, b"X: " + b"y" * 70_000, b"", b"x")],
        [mail, rcpt, *data(b"From: =?x?b?!!!?= <a@b>, " + address, b"", b"x")],
        [mail, rcpt, *data(b"From: " + address, b'From: "\\', b"", b"x")],
        [mail, rcpt, *data(b"\x00\xff" * 10)],
    ]
    return before_login + [[b"EHLO x", LOGIN, *lines] for lines in after_login]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collecting() -> Iterator[_Collect]:
    """Every record of mailnode (and of aiosmtpd's logger), down to DEBUG, kept away from
    pytest's own capture: its report would carry the raw (unescaped, even unencodable) client bytes.
    Entered inside the test: pytest attaches its handlers to non-propagating loggers when
    each test phase starts."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("mail.log", "mailnode")]
    saved = [(lg.level, lg.propagate, lg.handlers) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        lg.handlers = [handler]
    try:
        yield handler
    finally:
        for lg, (level, propagate, handlers) in zip(loggers, saved, strict=True):
            lg.handlers = handlers
            lg.setLevel(level)
            lg.propagate = propagate


async def test_every_reply_is_well_formed_and_nothing_raw_is_logged(
        server: tuple[int, User]) -> None:
    port, alice = server
    with collecting() as logged:
        replies_of = [(lines, await dialogue(port, lines))
                      for lines in hostile(alice.address.encode())]
    for lines, replies in replies_of:
        assert replies[-1] == b"221 2.0.0 Bye\r\n", (lines, replies)  # still serving after it
        for reply in replies:
            assert reply.endswith(b"\r\n") and b"\r" not in reply[:-2], reply
            line = reply[:-2]
            assert ENHANCED.match(line) or PLAIN.match(line), (lines, line)
            # RFC 2034: an enhanced code on all but the greeting, EHLO/HELO and 3xx replies
            unenhanced = (line == b"220 mailnode mailnode ESMTP" or line[:1] == b"3"
                          or line.startswith(b"250-") or line in (b"250 HELP", b"250 mailnode"))
            assert unenhanced or ENHANCED.match(line), (lines, line)
            assert b"Error: (" not in line and b"Exception" not in line, (lines, line)
            assert b"ValueError" not in line and b"Traceback" not in line, (lines, line)
    assert not [r for r in logged.records if r.exc_info], "bad input logged as a bug"
    formatter = SafeFormatter(LOG_FORMAT)
    for record in logged.records:
        rendered = formatter.format(record)
        assert rendered.isprintable(), rendered  # no CR, LF, NUL or ESC from a client
        rendered.encode("utf-8")  # nor a lone surrogate, which the log stream cannot write
    ours = [r.getMessage() for r in logged.records if r.name.startswith("mailnode")]
    assert ('auth failed: service=smtp source=127.0.0.1 user="bob\\r\\nINFO forged\\x1b[0m" '
            'reason=bad-credentials') in ours
    assert all(message.isprintable() for message in ours)


async def test_a_handler_bug_is_logged_with_its_traceback_but_not_told(
        server: tuple[int, User], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port, alice = server

    async def broken(*args: object) -> str:
        raise KeyError("internal detail")
    monkeypatch.setattr("mailnode.delivery.submit.SubmissionService.check_recipient", broken)
    replies = await dialogue(port, [b"EHLO x", LOGIN, b"MAIL FROM:<" + alice.address.encode()
                                    + b">", b"RCPT TO:<" + alice.address.encode() + b">"])
    assert b"451 4.3.0 Internal error; try again later\r\n" in replies
    assert not any(b"internal detail" in r or b"KeyError" in r for r in replies)
    [bug] = [r for r in caplog.records if r.exc_info]
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
    assert isinstance(bug.exc_info[1], KeyError)


async def test_garbage_instead_of_a_tls_handshake_is_no_bug(
        store: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    context = server_context(ensure_certificate(tmp_path, "0.0.0.0", 1_800_000_000))
    smtp = SubmissionServer(SubmissionService(store, lambda: None,
                                              server_id="0011223344556677.mailnode.invalid"),
                            max_message_size=1024, tls_context=context, require_tls=True)
    await smtp.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", smtp.port)
        writer.write(b"EHLO x\r\nSTARTTLS\r\n")
        while not (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220 2.0.0 Ready"):
            pass
        writer.write(b"\x16\x03\x01\x00\x05garbage, not a ClientHello\r\n" * 4)
        while await asyncio.wait_for(reader.read(4096), 10):
            pass  # until the server hangs up, after it has logged what happened
        writer.close()
    finally:
        await smtp.stop()
    assert not [r for r in caplog.records if r.exc_info], caplog.text
