"""SORT, THREAD and SEARCH FROM/TO/CC/BCC/SUBJECT on the SQLite store, answered in SQL from
the typed keys stored at delivery (``message_keys``, migration 0013), answer exactly as the
pure functions do over each message's bytes (the tests' memory store keeps no keys), over
generated headers; and the SQL order of random keys is the pure sort's order (octet order
of ``sortkeys.octets`` = code point order, ties by uid, REVERSE on its own key only)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from mailnode.imap import sortthread
from mailnode.imap.session import ImapSession
from mailnode.mime import analyse, sortkeys
from mailnode.store.api import MailStore
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import Dialog
from tests.imap.memstore import MemStore

COMMANDS = [
    b"UID SORT (SUBJECT) UTF-8 ALL",
    b"SORT (REVERSE DATE) UTF-8 ALL",
    b"UID SORT (FROM REVERSE TO CC) UTF-8 ALL",
    b"UID SORT (DISPLAYFROM DISPLAYTO ARRIVAL) UTF-8 ALL",
    b"UID SORT (SIZE REVERSE SUBJECT) UTF-8 UID 2:*",
    b"UID THREAD REFERENCES UTF-8 ALL",
    b"THREAD REFERENCES UTF-8 NOT UID 3",
    b"UID THREAD ORDEREDSUBJECT UTF-8 ALL",
    b"UID SORT RETURN (ALL COUNT) (DATE) UTF-8 ALL",
    b'UID SORT (DATE) UTF-8 FROM "a"',
    b'UID SEARCH FROM "a"',
    b'SEARCH OR TO "x" CC "team"',
    b'UID SEARCH NOT BCC "bob"',
    b'UID SEARCH CHARSET UTF-8 FROM "\xc3\xa9mile"',
    b'UID SEARCH SUBJECT "hello"',
    b'UID SEARCH SUBJECT ""',
    b'UID SEARCH HEADER Subject "re" LARGER 1',
    b'UID SEARCH RETURN (MIN COUNT) OR SUBJECT "fwd" FROM "@y"',
    b'UID SEARCH FROM "%"',
    b'UID SEARCH TO "_"',
    b'UID SEARCH CHARSET UTF-8 SUBJECT "\xc3\x9c"',
    b'UID SEARCH CHARSET UTF-8 FROM "\xc3\xbcser"',
    b'UID SEARCH FROM "ZED" NOT SUBJECT "HELLO" UNSEEN',
    b'UID SORT (REVERSE SUBJECT) UTF-8 SUBJECT "e"',
    b'SORT (REVERSE DISPLAYFROM REVERSE ARRIVAL) UTF-8 ALL',
    b'SORT (CC DATE) UTF-8 NOT FROM "b"',
]

_subject = st.lists(st.sampled_from([
    "Re:", "RE: ", "fwd:", "Fw:", "[list]", " ", "\t", "(fwd)", "[fwd: ", "]", "hello",
    "Hello", "=?utf-8?q?h=C3=A9llo?=", "=?utf-8?b?w7w=?=", "\u00fc", "x"]),
    max_size=6).map("".join)
_address = st.sampled_from([
    "a@x", "B@x", "Zed <z@y>", "=?utf-8?q?=C3=A9mile?= <e@x>", '"Bob" <bob@x>',
    "team: c@x, d@x;", "undisclosed-recipients:;", "<@r:route@x>", "bare", "(c) q@x",
    "\u00fcser@x"])
_addresses = st.lists(_address, max_size=3).map(", ".join)
_date = st.sampled_from([
    "Mon, 1 Jan 2024 10:00:00 +0000", "Mon, 1 Jan 2024 10:00:00 +0100",
    "2 Jan 2024 00:00 -0000", "bad", "Mon, 1 Jan 9999 23:59:59 -9999", ""])
_id = st.sampled_from(["<1@x>", "<2@x>", "<3@x>", "< 4@x >", "<5@x>", "junk", ""])
_ids = st.lists(_id, max_size=4).map(" ".join)
_FIELDS = {"Subject": _subject, "From": _addresses, "To": _addresses, "Cc": _addresses,
           "Bcc": _addresses,
           "Date": _date, "Message-ID": _id, "In-Reply-To": _ids, "References": _ids}
_message = st.tuples(st.fixed_dictionaries({}, optional=_FIELDS),
                     st.sampled_from(["", "Subject: =?utf-8?q?second_Hello?=\r\n",
                                      "subject:\r\n fwd folded\r\n"])).map(
    lambda m: "".join(f"{k}: {v}\r\n" for k, v in m[0].items()).encode()
    + m[1].encode() + b"\r\nbody\r\n")


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A migrated database with one user: copied for each example (opening a database at
    the head revision runs no migration)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.db"

        async def make() -> None:
            db = Database.open(path)
            try:
                await SqlStore(db, ChangeNotifier()).create_user(
                    "alice", "secret", Identity.generate())
            finally:
                db.close()
        asyncio.run(make())
        yield path


async def _answers(store: MailStore, notifier: ChangeNotifier) -> list[bytes]:
    d = Dialog(ImapSession(store, notifier))
    await d.login()
    assert b"S OK" in await d.send(b"S SELECT INBOX\r\n")
    return [await d.send(b"T " + cmd + b"\r\n") for cmd in COMMANDS]


async def _fill(store: MailStore, mailbox_id: int, messages: list[bytes]) -> None:
    for i, raw in enumerate(messages):
        when = datetime(2024, 1, 1 + i % 3, tzinfo=UTC)  # ties of ARRIVAL too
        await store.append(mailbox_id, raw, frozenset({"\\Seen"} if i % 2 else ()), when)
        if i % 3 == 2:  # a copy: a second message on the same stored body
            await store.copy(mailbox_id, [i + 1], mailbox_id)


async def _compare(path: Path, messages: list[bytes]) -> None:
    db = Database.open(path)
    try:
        notifier = ChangeNotifier()
        store = SqlStore(db, notifier)
        user = await store.find_user("alice")
        assert user is not None
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        await _fill(store, inbox.id, messages)
        mem_notifier = ChangeNotifier()
        mem = MemStore(mem_notifier)
        mem_user = mem.add_user("alice", "secret")
        mem_inbox = await mem.get_mailbox(mem_user.id, "INBOX")
        assert mem_inbox is not None
        await _fill(mem, mem_inbox.id, messages)
        read = 0
        real = store.fetch_bodies, store.fetch_structures

        async def reading(mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
            nonlocal read
            read += len(uids)
            return await real[0](mailbox_id, uids)

        async def decoding(mailbox_id: int, uids: list[int]) -> dict[int, bytes | None]:
            nonlocal read
            read += len(uids)
            return await real[1](mailbox_id, uids)
        store.fetch_bodies = reading  # type: ignore[method-assign,assignment]
        store.fetch_structures = decoding  # type: ignore[method-assign,assignment]
        stored = await _answers(store, notifier)
        assert read == 0  # every answer from the stored keys: no message read or decoded
        pure = await _answers(mem, mem_notifier)
        assert stored == pure
        assert all(b"T OK" in out for out in stored), stored
    finally:
        db.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_message, min_size=1, max_size=8))
def test_sort_thread_search_in_sql_answer_as_the_pure_functions(
        template: Path, messages: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.db"
        shutil.copy(template, path)
        asyncio.run(_compare(path, messages))


# Keys as SORT compares them (the base subject casemapped, as ``keys_of`` gives it; the
# address keys of both cases, so the order must not depend on that): Latin-1, surrogates
# left by undecodable bytes, astral characters, "", NUL; few characters, so ties are common.
_text = st.text(st.sampled_from(["a", "B", "b", "_", "%", " ", "\u00e9", "\u00c9", "\u00ff",
                                 "\u0100", "\udc80", "\ud800", "\ue000", "\uffff",
                                 "\U0001f600", "\x00"]), max_size=3)
_keys = st.builds(
    lambda base, sent, a, b, c, d, e: sortkeys.SortKeys(base, sent, a, b, c, d, e, None, ()),
    st.tuples(_text.map(sortkeys.casemap), st.booleans()),
    st.one_of(st.none(), st.integers(-2**40, 2**40)), _text, _text, _text, _text, _text)
_criteria = st.lists(st.tuples(st.sampled_from(sorted(sortthread.SORT_KEYS)), st.booleans()),
                     min_size=1, max_size=3)


async def _orders(path: Path, rows: list[tuple[sortkeys.SortKeys, int, int]],
                  criteria: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    db = Database.open(path)
    try:
        store = SqlStore(db, ChangeNotifier())
        octets = sortkeys.octets

        def insert(conn: object) -> None:
            for uid, (k, arrival, size) in enumerate(rows, start=1):
                conn.execute(  # type: ignore[attr-defined]
                    "INSERT INTO message_keys VALUES (7, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " NULL, x'', x'', x'', x'', x'', x'')",
                    (uid, arrival, size, arrival if k.sent is None else k.sent,
                     octets(k.base[0]), int(k.base[1]), octets(k.from_), octets(k.to),
                     octets(k.cc), octets(k.display_from), octets(k.display_to)))
        await db.run(insert)
        sql = await store.sort_order(7, criteria)
    finally:
        db.close()
    pure = sortthread.sort([sortthread.SortMessage.from_keys(
        uid, datetime.fromtimestamp(arrival, UTC), size, k)
        for uid, (k, arrival, size) in enumerate(rows, start=1)], criteria)
    return sql, pure


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_keys, st.integers(0, 3), st.integers(0, 3)), max_size=12),
       _criteria)
def test_sql_order_is_the_pure_order(template: Path,
                                     rows: list[tuple[sortkeys.SortKeys, int, int]],
                                     criteria: list[tuple[str, bool]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.db"
        shutil.copy(template, path)
        sql, pure = asyncio.run(_orders(path, rows, criteria))
    assert sql == pure


def test_octets_order_is_code_point_order() -> None:
    values = ["", "a", "B", "\x7f", "\u00e9", "\u07ff", "\u0800", "\ud7ff", "\ud800", "\udc80",
              "\udfff", "\ue000", "\uffff", "\U00010000", "\U0010ffff", "a\udc80", "ab"]
    assert sorted(values) == sorted(values, key=sortkeys.octets)
    assert all(sortkeys.unoctets(sortkeys.octets(v)) == v for v in values)


_piece = st.sampled_from(["a", "A", "\u00e9", "\u00c9", "\u00df", "SS", "ss", "%", "_", "\\",
                          "*", " ", "@", "x", "=?utf-8?q?=C3=89?=", "\u0130", "i"])
_words = st.lists(_piece, min_size=1, max_size=4).map("".join)
_header = st.tuples(_words, _words, _words).map(
    lambda w: (f"Subject: {w[0]}\r\nFrom: {w[1]} <{w[2]}@x>\r\nTo: {w[2]}@y\r\n"
               f"Cc: {w[0]} <c@x>\r\nBcc: {w[1]}@b\r\n\r\nbody\r\n").encode())


async def _found(path: Path, messages: list[bytes], needle: str) -> None:
    db = Database.open(path)
    try:
        store = SqlStore(db, ChangeNotifier())
        user = await store.find_user("alice")
        assert user is not None
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        mem = MemStore(ChangeNotifier())
        mem_inbox = await mem.get_mailbox(mem.add_user("alice", "secret").id, "INBOX")
        assert mem_inbox is not None
        await _fill(store, inbox.id, messages)
        await _fill(mem, mem_inbox.id, messages)
        folded = needle.casefold()
        for name in ("FROM", "TO", "CC", "BCC", "SUBJECT") if needle else ("SUBJECT",):
            assert await store.search_texts(inbox.id, name, folded) == \
                await mem.search_texts(mem_inbox.id, name, folded), name
    finally:
        db.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_header, min_size=1, max_size=5), st.lists(_piece, max_size=3).map("".join))
def test_search_in_sql_finds_what_the_pure_search_finds(
        template: Path, messages: list[bytes], needle: str) -> None:
    """``instr`` on the stored case-folded octets = the pure substring test, for needles
    with LIKE's wildcards, case variants that fold to more characters (ß, İ) and
    encoded words; an empty SUBJECT finds the messages with a Subject field (SEARCH sends
    no empty FROM/TO/CC/BCC to the store)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.db"
        shutil.copy(template, path)
        asyncio.run(_found(path, messages, needle))


async def _unseen_changes(store: MailStore, notifier: ChangeNotifier, inbox: int) -> list[bytes]:
    """SORT ALL while the database holds a message the view has not been told of and
    lacks one it still shows (expunged by another session, not yet reported)."""
    for subject in ("b", "a", "c"):
        await store.append(inbox, f"Subject: {subject}\r\n\r\nx\r\n".encode(), frozenset(),
                           None)
    mine, other = Dialog(ImapSession(store, notifier)), Dialog(ImapSession(store, notifier))
    for d in (mine, other):
        await d.login()
        assert b"S OK" in await d.send(b"S SELECT INBOX\r\n")
    out = [await mine.send(b"A SORT (SUBJECT) UTF-8 ALL\r\n")]
    assert b"A OK" in await other.send(b"A UID STORE 2 +FLAGS (\\Deleted)\r\n")
    assert b"A OK" in await other.send(b"A UID EXPUNGE 2\r\n")
    await store.append(inbox, b"Subject: 0\r\n\r\nx\r\n", frozenset(), None)
    for cmd in (b"SORT (SUBJECT) UTF-8 ALL", b"SORT (REVERSE SUBJECT) US-ASCII ALL",
                b"THREAD ORDEREDSUBJECT UTF-8 ALL", b"SORT (SUBJECT) UTF-8 NOT SUBJECT b",
                b"UID SORT (SUBJECT) UTF-8 ALL", b"SORT (SUBJECT) UTF-8 ALL"):
        out.append(await mine.send(b"T " + cmd + b"\r\n"))
    return out


async def test_sort_all_with_changes_the_view_has_not_seen(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db")
    try:
        notifier = ChangeNotifier()
        store = SqlStore(db, notifier)
        user = await store.create_user("alice", "secret", Identity.generate())
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        stored = await _unseen_changes(store, notifier, inbox.id)
    finally:
        db.close()
    mem_notifier = ChangeNotifier()
    mem = MemStore(mem_notifier)
    mem_inbox = await mem.get_mailbox(mem.add_user("alice", "secret").id, "INBOX")
    assert mem_inbox is not None
    assert stored == await _unseen_changes(mem, mem_notifier, mem_inbox.id)
    assert stored[0].startswith(b"* SORT 2 1 3\r\n")
    assert stored[1].startswith(b"* SORT 2 1 3\r\n")  # 2 expunged meanwhile, 4 not yet seen


def test_hostile_messages_store_bounded_keys_that_answer_as_the_pure_path(
        template: Path) -> None:
    """Each hostile header class (``tests.mime.corpus``): the stored subject and ids keep
    the pure functions' caps, and SORT, THREAD and SEARCH in SQL answer as over the
    messages' bytes."""
    from tests.mime.corpus import CLASSES

    messages = [make(60_000) for _, make in sorted(CLASSES.items())]
    for raw in messages:
        keys = sortkeys.stored_keys(raw, analyse(raw))
        assert len(keys.subject) <= 4 * sortkeys.MAX_SUBJECT
        assert keys.message_id is None or len(keys.message_id) <= 4 * 998
        assert len(keys.parents) <= sortkeys.MAX_REFERENCES * (4 * 998 + 1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.db"
        shutil.copy(template, path)
        asyncio.run(_compare(path, messages))
