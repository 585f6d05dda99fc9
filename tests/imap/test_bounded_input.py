"""Hostile sizes: small literals and lines before login, large literals spooled to a file
after it, and FETCH responses sent in pieces instead of built whole (issue 5)."""

from __future__ import annotations

import asyncio
import re
import tempfile
from typing import IO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import commands as c
from mailnode.imap import session as imap_session
from mailnode.imap.errors import ParseError
from mailnode.imap.parser import (
    ID_LINE,
    PRE_AUTH_LINE,
    PRE_AUTH_LITERAL,
    CommandParser,
    Limits,
    NeedContinuation,
)
from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import Dialog, ServerFactory
from tests.imap.test_e2e import TIMEOUT, command, raw_connect

MiB = 1024 * 1024


def big_message(size: int) -> bytes:
    header = b"From: a@example.mailnode\r\nSubject: big\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return header + line * ((size - len(header)) // len(line))


class SpoolSpy:
    """A spool factory that remembers every file it made, to check they all get closed."""

    def __init__(self) -> None:
        self.files: list[IO[bytes]] = []

    def __call__(self) -> IO[bytes]:
        f = tempfile.TemporaryFile()  # noqa: SIM115  # closed by the code under test
        self.files.append(f)
        return f


# --- before login ----------------------------------------------------------------------------


async def test_pre_auth_literal_of_a_megabyte_is_refused(dialog: Dialog) -> None:
    assert await dialog.send(b"a LOGIN alice {1048576}\r\n") == \
        b"a BAD [TOOBIG] Literal too large\r\n"
    assert not dialog.session.closed
    assert (await dialog.send(b"b LOGIN {5}\r\n")) == b"+ Ready for literal data\r\n"
    assert (await dialog.send(b"alice {6}\r\n")) == b"+ Ready for literal data\r\n"
    assert (await dialog.send(b"secret\r\n")).startswith(b"b OK [CAPABILITY")


async def test_pre_auth_non_synchronising_literal_closes(dialog: Dialog) -> None:
    out = await dialog.send(b"a LOGIN alice {1048576+}\r\n" + b"x" * 65536)
    assert out == (b"a BAD [TOOBIG] Literal too large\r\n"
                   b"* BYE Protocol error, closing connection\r\n")
    assert dialog.session.closed


async def test_pre_auth_limits_are_small_and_login_lifts_them(dialog: Dialog) -> None:
    # synchronising: before login only LITERAL- (4096 octets) is offered for "{n+}"
    assert await dialog.send(b"p LOGIN alice {%d}\r\n" % PRE_AUTH_LITERAL) == \
        b"+ Ready for literal data\r\n"
    just_fits = b"x" * PRE_AUTH_LITERAL + b"\r\n"
    assert (await dialog.send(just_fits)).startswith(b"p NO [AUTHENTICATIONFAILED]")
    assert (await dialog.send(b"q LOGIN alice {%d}\r\n" % (PRE_AUTH_LITERAL + 1))).startswith(
        b"q BAD [TOOBIG]")
    assert (await dialog.login()).startswith(b"L OK")
    # After login: a line longer than the pre-auth line limit, and a 1 MiB literal.
    seqset = b",".join([b"1:*"] * (PRE_AUTH_LINE // 4 + 10))
    assert len(seqset) > PRE_AUTH_LINE
    await dialog.send(b"s SELECT INBOX\r\n")
    assert await dialog.send(b"f UID FETCH " + seqset + b" FLAGS\r\n") == \
        b"f OK UID FETCH completed\r\n"
    body = big_message(MiB)
    out = await dialog.send(b"ap APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert re.search(rb"ap OK \[APPENDUID \d+ 1\] APPEND completed", out), out


async def test_pre_auth_long_line_closes(dialog: Dialog) -> None:
    out = await dialog.send(b"a LOGIN alice " + b"x" * (PRE_AUTH_LINE + 1))
    assert out.endswith(b"* BYE Protocol error, closing connection\r\n")
    assert dialog.session.closed


async def test_an_id_within_rfc_2971_bounds_is_taken_before_login(dialog: Dialog) -> None:
    """RFC 2971 allows 30 pairs of 30-octet fields and 1,024-octet values, and clients send
    ID first: such a line may exceed the pre-login limit, nothing else may."""
    pairs = b" ".join(b'"f%029d" "%s"' % (i, b"v" * 1024) for i in range(30))
    line = b"i ID (" + pairs + b")\r\n"
    assert len(line) > PRE_AUTH_LINE
    out = await dialog.send(line)
    assert out.endswith(b"i OK ID completed\r\n"), out[-200:]
    assert not dialog.session.closed
    out = await dialog.send(b"j ID (" + b'"x" "' + b"v" * (ID_LINE) + b'")\r\n')
    assert out.endswith(b"* BYE Protocol error, closing connection\r\n")


# --- spooling after login --------------------------------------------------------------------


def test_large_literal_is_streamed_to_a_file_not_buffered() -> None:
    spy = SpoolSpy()
    p = CommandParser(Limits(max_literal=8 * MiB), spool=spy)
    body = big_message(5 * MiB)
    p.feed(b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(body))
    assert p.next_event() == NeedContinuation(len(body))
    largest = 0
    chunk = 64 * 1024
    for i in range(0, len(body), chunk):
        p.feed(body[i:i + chunk])
        assert p.next_event() is None
        largest = max(largest, p.buffered)
    p.feed(b"\r\n")
    cmd = p.next_event()
    assert isinstance(cmd, c.Append) and cmd.message.spooled and cmd.message.size == len(body)
    assert largest < 2 * chunk  # the command line and at most one chunk, never the message
    assert cmd.message.read() == body
    assert "xxx" not in repr(cmd)
    cmd.message.close()
    assert len(spy.files) == 1 and spy.files[0].closed


def test_small_literals_stay_in_memory() -> None:
    spy = SpoolSpy()
    p = CommandParser(Limits(spool_above=100), spool=spy)
    p.feed(b"a APPEND INBOX {100+}\r\n" + b"y" * 100 + b"\r\n")
    cmd = p.next_event()
    assert isinstance(cmd, c.Append) and not cmd.message.spooled
    assert cmd.message == c.LiteralBody(b"y" * 100) and spy.files == []


@pytest.mark.parametrize("tail", [
    b" extra\r\n",  # the command turns out invalid after the literal
])
def test_spool_is_closed_when_the_command_is_invalid(tail: bytes) -> None:
    spy = SpoolSpy()
    p = CommandParser(Limits(spool_above=100), spool=spy)
    p.feed(b"a APPEND INBOX {500+}\r\n" + b"z" * 500 + tail + b"b NOOP\r\n")
    with pytest.raises(ParseError) as err:
        p.next_event()
    assert err.value.tag == "a"
    assert p.next_event() == c.Noop("b")
    assert len(spy.files) == 1 and spy.files[0].closed


def test_spool_is_closed_when_the_connection_drops_mid_literal() -> None:
    spy = SpoolSpy()
    p = CommandParser(Limits(spool_above=100), spool=spy)
    p.feed(b"a APPEND INBOX {500+}\r\n" + b"z" * 300)
    assert p.next_event() is None
    p.close()
    assert len(spy.files) == 1 and spy.files[0].closed


def test_spooled_literal_is_refused_as_a_string() -> None:
    spy = SpoolSpy()
    p = CommandParser(Limits(spool_above=100), spool=spy)
    p.feed(b"a SEARCH TEXT {500+}\r\n" + b"z" * 500 + b"\r\n")
    with pytest.raises(ParseError) as err:
        p.next_event()
    assert err.value.code == "TOOBIG" and not err.value.fatal
    assert spy.files[0].closed


def test_literal_budget_covers_all_literals_of_a_command() -> None:
    p = CommandParser(Limits(max_literal=100, max_line=100))
    p.feed(b"a SEARCH TEXT {90+}\r\n" + b"q" * 90 + b" TEXT {90+}\r\n" + b"q" * 90
           + b" TEXT {90+}\r\n")
    with pytest.raises(ParseError) as err:
        p.next_event()
    assert err.value.code == "TOOBIG"


async def test_append_of_several_megabytes_is_spooled_and_stored(
        store: MailStore, notifier: ChangeNotifier) -> None:
    spy = SpoolSpy()
    session = ImapSession(store, notifier, limits=Limits(max_literal=8 * MiB))
    session.parser = CommandParser(session.parser.limits, spool=spy)
    d = Dialog(session)
    await d.login()
    body = big_message(3 * MiB)
    assert await d.send(b"a APPEND INBOX {%d}\r\n" % len(body)) == \
        b"+ Ready for literal data\r\n"
    largest = 0
    for i in range(0, len(body), 64 * 1024):
        assert await d.send(body[i:i + 64 * 1024]) == b""
        largest = max(largest, session.parser.buffered)
    assert (await d.send(b"\r\n")).startswith(b"a OK [APPENDUID")
    assert largest < 128 * 1024
    assert len(spy.files) == 1 and spy.files[0].closed
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"f FETCH 1 BODY.PEEK[]\r\n")
    assert out == (b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
                   b"f OK FETCH completed\r\n")


async def test_append_spool_closed_when_refused(store: MailStore,
                                                notifier: ChangeNotifier) -> None:
    spy = SpoolSpy()
    session = ImapSession(store, notifier, limits=Limits(spool_above=100))
    session.parser = CommandParser(session.parser.limits, spool=spy)
    d = Dialog(session)
    await d.login()
    out = await d.send(b"a APPEND Nowhere {500+}\r\n" + b"z" * 500 + b"\r\n")
    assert out.startswith(b"a NO [TRYCREATE]")
    assert len(spy.files) == 1 and spy.files[0].closed


# --- FETCH: each item once, sent in pieces ---------------------------------------------------


async def fetching_dialog(store: MailStore, notifier: ChangeNotifier, size: int,
                          count: int = 1) -> tuple[Dialog, list[int], list[bytes], list[bytes]]:
    """A logged-in session with ``count`` messages of ``size`` selected; its flush callback
    records how much output was pending each time and collects it. Returns the bodies too."""
    d = Dialog(ImapSession(store, notifier, limits=Limits(max_literal=8 * MiB)))
    await d.login()
    bodies = [big_message(size).replace(b"Subject: big", b"Subject: %d" % i)
              for i in range(count)]
    for body in bodies:
        await d.send(b"ap APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    await d.send(b"s SELECT INBOX\r\n")
    pending: list[int] = []
    sent: list[bytes] = []

    async def flush() -> None:
        pending.append(d.session.pending_output)
        sent.append(d.session.data_to_send())

    d.session.flush = flush
    return d, pending, sent, bodies


async def test_repeated_body_items_are_answered_once(store: MailStore,
                                                     notifier: ChangeNotifier) -> None:
    d, _, sent, (body,) = await fetching_dialog(store, notifier, MiB)
    items = b" ".join([b"BODY[]", b"BODY.PEEK[]"] * 500)
    tail = await d.send(b"f FETCH 1 (" + items + b")\r\n")
    out = b"".join(sent) + tail
    assert out == (b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b" FLAGS (\\Seen \\Recent))"
                   b"\r\nf OK FETCH completed\r\n")


async def test_distinct_large_items_are_flushed_in_pieces(store: MailStore,
                                                          notifier: ChangeNotifier) -> None:
    d, pending, sent, (body,) = await fetching_dialog(store, notifier, MiB)
    part = 300_000
    items = [(i * 1000, part) for i in range(20)]
    request = b" ".join(b"BODY.PEEK[]<%d.%d>" % item for item in items)
    tail = await d.send(b"f FETCH 1 (" + request + b")\r\n")
    expected = b"* 1 FETCH (" + b" ".join(
        b"BODY[]<%d> {%d}\r\n" % (start, part) + body[start:start + count]
        for start, count in items) + b")\r\nf OK FETCH completed\r\n"
    assert b"".join(sent) + tail == expected
    assert len(pending) >= 10  # 6 MB went out in pieces...
    # ...and never more than the threshold plus one item was waiting.
    assert max(pending) <= imap_session.FLUSH_ABOVE + part + 100


async def test_fetch_loads_large_bodies_a_few_at_a_time(store: MailStore,
                                                        notifier: ChangeNotifier,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    d, pending, sent, _ = await fetching_dialog(store, notifier, 400_000, count=6)
    loads: list[int] = []
    real = store.fetch_bodies

    async def counting(mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        loads.append(len(uids))
        return await real(mailbox_id, uids)

    monkeypatch.setattr(store, "fetch_bodies", counting)
    tail = await d.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
    out = b"".join(sent) + tail
    assert out.count(b"* ") == 6 and out.endswith(b"f OK FETCH completed\r\n")
    assert sum(loads) == 6 and max(loads) <= imap_session.BODY_BATCH_BYTES // 400_000
    assert len(pending) >= 6  # each message went out before the next was rendered


# --- over a real socket ----------------------------------------------------------------------


async def until(reader: asyncio.StreamReader, tag: bytes) -> list[bytes]:
    lines = [await asyncio.wait_for(reader.readline(), TIMEOUT)]
    while not lines[-1].startswith(tag + b" "):
        assert lines[-1], lines
        lines.append(await asyncio.wait_for(reader.readline(), TIMEOUT))
    return lines


async def test_server_streams_big_fetch_and_refuses_big_pre_auth_literal(
        start_server: ServerFactory) -> None:
    srv = await start_server(max_literal=4 * MiB)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    try:
        assert await command(reader, writer, b"a", b"LOGIN alice {1048576}") == [
            b"a BAD [TOOBIG] Literal too large\r\n"]
        writer.write(b"b LOGIN alice {6}\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == \
            b"+ Ready for literal data\r\n"
        writer.write(b"secret\r\n")
        assert (await until(reader, b"b"))[-1].startswith(b"b OK")
        body = big_message(2 * MiB)
        writer.write(b"c APPEND INBOX {%d+}\r\n" % len(body))
        for i in range(0, len(body), 256 * 1024):
            writer.write(body[i:i + 256 * 1024])
            await writer.drain()
        writer.write(b"\r\n")
        assert (await until(reader, b"c"))[-1].startswith(b"c OK [APPENDUID")
        await command(reader, writer, b"s", b"SELECT INBOX")
        writer.write(b"f FETCH 1 (" + b" ".join([b"BODY.PEEK[]"] * 300) + b" RFC822.SIZE)\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert head == b"* 1 FETCH (BODY[] {%d}\r\n" % len(body)
        assert await asyncio.wait_for(reader.readexactly(len(body)), TIMEOUT) == body
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == \
            b" RFC822.SIZE %d)\r\n" % len(body)
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"f OK FETCH completed\r\n"
    finally:
        writer.close()


async def test_client_gone_during_flush_ends_the_command_quietly(
        store: MailStore, notifier: ChangeNotifier, caplog: pytest.LogCaptureFixture) -> None:
    d, _, _, _ = await fetching_dialog(store, notifier, MiB)

    async def gone() -> None:
        raise ConnectionResetError("peer closed")

    d.session.flush = gone
    with pytest.raises(ConnectionResetError):
        await d.send(b"f FETCH 1 BODY.PEEK[]\r\n")
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.lists(st.integers(1, 64), max_size=20),
       st.booleans())
def test_spooled_or_not_any_chunking_gives_the_same_message(body: bytes, cuts: list[int],
                                                            sync: bool) -> None:
    data = b"a APPEND INBOX {%d%s}\r\n" % (len(body), b"" if sync else b"+") + body + \
        b"\r\nb NOOP\r\n"
    for spool_above in (16, 1024):
        spy = SpoolSpy()
        p = CommandParser(Limits(spool_above=spool_above), spool=spy)
        got: list[object] = []
        pos = 0
        for size in [*cuts, len(data)]:
            p.feed(data[pos:pos + size])
            pos += size
            while (ev := p.next_event()) is not None:
                if not isinstance(ev, NeedContinuation):
                    got.append(ev)
        assert len(got) == 2 and got[1] == c.Noop("b")
        append = got[0]
        assert isinstance(append, c.Append) and append.message.read() == body
        assert append.message.spooled == (len(body) > spool_above)
        append.message.close()
        assert all(f.closed for f in spy.files)
