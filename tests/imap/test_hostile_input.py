"""Arbitrary bytes and arbitrary command lines, in every session state: the session never
raises, never answers with a Python exception's text, and logs no traceback for them."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailnode.client_tls import ensure_certificate, server_context
from mailnode.imap.session import ImapSession
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, ServerFactory
from tests.imap.memstore import MemStore

PYTHON_TEXT = re.compile(
    rb"Traceback|Exception|[A-Z][a-z]+Error\b|invalid literal|codec can't|has no attribute|"
    rb"unsupported operand|out of range|not subscriptable|NoneType|object is not|SERVERBUG")

STATES = [b"", b"l LOGIN alice secret\r\n",
          b"l LOGIN alice secret\r\ns SELECT INBOX\r\n",
          b"l LOGIN alice secret\r\ns SELECT INBOX\r\ni IDLE\r\n",
          b"a AUTHENTICATE PLAIN\r\n"]


class _Bugs(logging.Handler):
    """Collects log records that carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def bugs() -> Iterator[_Bugs]:
    handler = _Bugs()
    logger = logging.getLogger("mailnode")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def run(prefix: bytes, chunks: list[bytes]) -> bytes:
    notifier = ChangeNotifier()
    store = MemStore(notifier)
    user = store.add_user("alice", "secret")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, MESSAGE, frozenset(), None)
    await store.append(inbox.id, b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
                       b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nhi\r\n--B--\r\n",
                       frozenset({"\\Seen"}), None)
    session = ImapSession(store, notifier)
    await session.receive(prefix)
    session.data_to_send()
    out = []
    for chunk in chunks:
        await session.receive(chunk)  # must not raise
        out.append(session.data_to_send())
        if session.closed:
            break
    return b"".join(out)


def check(out: bytes, bugs: _Bugs) -> None:
    found = PYTHON_TEXT.search(out)
    assert found is None, out[max(0, found.start() - 200):found.end() + 100]
    assert not bugs.records, bugs.records[0].getMessage()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(STATES), st.lists(st.binary(max_size=120), max_size=6))
async def test_arbitrary_bytes(bugs: _Bugs, prefix: bytes, chunks: list[bytes]) -> None:
    check(await run(prefix, chunks), bugs)


_VERBS = st.sampled_from([
    b"CAPABILITY", b"NOOP", b"LOGOUT", b"ID", b"ENABLE", b"LOGIN", b"AUTHENTICATE", b"NAMESPACE",
    b"LIST", b"LSUB", b"SELECT", b"EXAMINE", b"STATUS", b"CREATE", b"DELETE", b"RENAME",
    b"SUBSCRIBE", b"UNSUBSCRIBE", b"APPEND", b"CHECK", b"CLOSE", b"UNSELECT", b"EXPUNGE",
    b"FETCH", b"STORE", b"SEARCH", b"COPY", b"MOVE", b"UID FETCH", b"UID SEARCH", b"UID STORE",
    b"UID COPY", b"UID MOVE", b"UID EXPUNGE", b"UID", b"IDLE", b"DONE", b"STARTTLS", b"\xff"])
_ARGS = st.one_of(
    st.sampled_from([
        b"1", b"0", b"*", b"1:*", b"4294967295", b"4294967296", b"99999999999999999999",
        b"-1", b"1:0", b"2,1:*,*:3", b"$", b"NIL", b"()", b"(", b")", b"[", b"]", b"\"",
        b"\"\\\"", b"\\", b"\x00", b"\r", b"\x1b[2J", b"\xff\xfe", b"\xc3\xa9", b"INBOX",
        b"&", b"&-", b"&AAA", b"&ZeVnLIqe-", b"&Jjo-&Jjo", b"inbox/..", b"%", b"*%*%*%*%",
        b"BODY[]", b"BODY[0]", b"BODY[1.2.3.4.5.6.7.8.9]", b"BODY.PEEK[HEADER.FIELDS ()]",
        b"BODY[HEADER.FIELDS (\xff)]", b"BINARY[1]", b"BODY[]<4294967296.1>",
        b"BODY[]<0.0>", b"BODY[TEXT]<5.99999999999999>", b"RFC822.SIZE", b"ENVELOPE",
        b"BODYSTRUCTURE", b"(FLAGS UID INTERNALDATE)", b"FULL", b"ALL", b"FAST",
        b"+FLAGS", b"-FLAGS.SILENT", b"(\\Seen \\Bogus $x \\*)", b"\\Recent",
        b"CHARSET", b"UTF-8", b"\xffCHARSET", b"KOI8-R", b"OR", b"NOT", b"HEADER", b"BEFORE",
        b"SINCE", b"31-Feb-2024", b"1-Jan-99999", b"00-Xyz-0000", b"LARGER", b"SMALLER",
        b"UID", b"KEYWORD", b"TEXT", b"BODY", b"\"25-Dec-2024 25:61:61 +9999\"",
        b"(MESSAGES UIDNEXT UNSEEN BOGUS)", b"{0}", b"{3+}\r\nabc", b"{99999999999}",
        b"{4294967296+}", b"{-1}", b"{1}\r\n\xff", b"~{3}", b"AGFsaWNlAHNlY3JldA==",
        b"=", b"!!!", b"(\"name\" \"x\" \"name\" NIL)", b"((((((((((((((((((((",
    ]),
    st.binary(max_size=12))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(STATES),
       st.lists(st.tuples(_VERBS, st.lists(_ARGS, max_size=6)), min_size=1, max_size=5))
async def test_arbitrary_command_lines(bugs: _Bugs, prefix: bytes,
                                       commands: list[tuple[bytes, list[bytes]]]) -> None:
    lines = [b"t%d %s %s\r\n" % (i, verb, b" ".join(args))
             for i, (verb, args) in enumerate(commands)]
    check(await run(prefix, lines), bugs)


async def test_garbage_instead_of_a_tls_handshake_is_no_bug(
        start_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A client that says STARTTLS and then sends no ClientHello is ordinary bad input: the
    connection ends, the log gets no traceback (ssl.SSLError is not a ConnectionError)."""
    context = server_context(ensure_certificate(tmp_path, "0.0.0.0", 1_800_000_000))
    server = await start_server(tls_context=context, require_tls=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await asyncio.wait_for(reader.readline(), 10)
    writer.write(b"s STARTTLS\r\n")
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"s OK")
    writer.write(b"\x16\x03\x01\x00\x05garbage, not a ClientHello\r\n" * 4)
    while await asyncio.wait_for(reader.read(4096), 10):
        pass  # until the server hangs up, after it has logged what happened
    writer.close()
    assert not [r for r in caplog.records if r.exc_info], caplog.text
