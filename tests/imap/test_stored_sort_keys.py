"""SORT, THREAD and SEARCH FROM/TO/CC/BCC/SUBJECT on the SQLite store answer the same from
the keys stored at delivery (``bodies.sortkeys``) as from the stored structures and bytes
(mail stored before migration 0012), over generated headers; with the keys stored, no
structure is decoded and no message read."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from mailnode.imap.session import ImapSession
from mailnode.mime import analyse, sortkeys
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import Dialog

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


async def _answers(store: SqlStore, notifier: ChangeNotifier) -> list[bytes]:
    d = Dialog(ImapSession(store, notifier))
    await d.login()
    assert b"S OK" in await d.send(b"S SELECT INBOX\r\n")
    return [await d.send(b"T " + cmd + b"\r\n") for cmd in COMMANDS]


async def _compare(path: Path, messages: list[bytes]) -> None:
    db = Database.open(path)
    try:
        notifier = ChangeNotifier()
        store = SqlStore(db, notifier)
        user = await store.find_user("alice")
        assert user is not None
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        for i, raw in enumerate(messages):
            await store.append(inbox.id, raw, frozenset(), None)
            if i % 3 == 2:  # a copy: a second message on the same stored body
                await store.copy(inbox.id, [i + 1], inbox.id)
        decoded = read = 0
        real, real_bodies = store.fetch_structures, store.fetch_bodies

        async def counting(mailbox_id: int, uids: list[int]) -> dict[int, bytes | None]:
            nonlocal decoded
            decoded += len(uids)
            return await real(mailbox_id, uids)

        async def reading(mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
            nonlocal read
            read += len(uids)
            return await real_bodies(mailbox_id, uids)
        store.fetch_structures = counting  # type: ignore[method-assign,assignment]
        store.fetch_bodies = reading  # type: ignore[method-assign,assignment]
        stored = await _answers(store, notifier)
        assert decoded == read == 0  # every message answered from its stored keys
        with db.engine.begin() as conn:
            conn.exec_driver_sql(  # as before 0012
                "UPDATE bodies SET sortkeys = NULL, searchkeys = NULL")
        derived = await _answers(store, notifier)
        assert decoded > 0 and read > 0
        assert stored == derived
        assert all(b"T OK" in out for out in stored), stored
    finally:
        db.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_message, min_size=1, max_size=8))
def test_sort_and_thread_same_from_stored_keys_and_from_structures(
        template: Path, messages: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.db"
        shutil.copy(template, path)
        asyncio.run(_compare(path, messages))


@given(_message)
def test_record_round_trips_and_matches_the_envelope(raw: bytes) -> None:
    structure = analyse(raw)
    text, search = sortkeys.record(raw, structure.encode())
    assert text is not None and text.isascii() and search is not None and search.isascii()
    assert sortkeys.decode(text) == sortkeys.keys_of(
        structure.root.envelope, sortkeys.references_value(raw, structure))
    assert sortkeys.decode_search(search) == sortkeys.search_keys_of(
        structure.root.envelope, sortkeys.header_values(raw, structure.root, "Subject"))


def test_record_of_something_else_is_none_and_old_records_are_ignored() -> None:
    assert sortkeys.record(b"Subject: x\r\n\r\n", None) == (None, None)
    assert sortkeys.record(b"Subject: x\r\n\r\n", b"\x00junk") == (None, None)
    for text in (None, "", "[", "{}", "[99,\"a\",false,null,\"\",\"\",\"\",\"\",\"\",null]",
                 "[1,\"a\"]"):
        assert sortkeys.decode(text) is None
    for text in (None, "", "[", "[99,[],[],[],[],[]]", "[1,[],[]]", "[1,1,2,3,4,5]"):
        assert sortkeys.decode_search(text) is None
