"""The fast paths of a message list's header FETCH and of UID SEARCH UNSEEN answer exactly
what the general code answers: HEADER.FIELDS picked by one pattern from the header block the
store cut out, the store's uid-range reads, the SEARCH number list."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from mailnode.imap import commands as c
from mailnode.imap import fetch, mime, responses
from mailnode.mime import analyse, structure_blob
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import Dialog

# Lines made of what field names and values can hold, and of what trips line splitting up:
# bare CR, vertical tab and form feed (stripped from names), folding, lines without a colon.
_piece = st.sampled_from([b"From", b"from", b"FROM", b"To", b"Subject", b"X-Y", b"X Y", b":",
                          b" ", b"\t", b"\x0b", b"\x0c", b"\r", b"\n", b"\r\n", b"a",
                          b"\xc3\xbc", b"Date", b"Sub"])
_line = st.lists(_piece, max_size=8).map(b"".join)
_raw = st.lists(_line, max_size=10).map(lambda lines: b"\r\n".join(lines) + b"\r\n\r\nbody\r\n")
_names = st.lists(st.sampled_from(["FROM", "to", "SUBJECT", "X Y", "X-Y", "DATE", " TO",
                                   "A:B", "SUB", "", "\u00fc", "FROM "]),
                  min_size=1, max_size=4).map(tuple)


@settings(max_examples=400)
@given(_raw, _names)
@example(b"From: a\r\n\x0b To : b\r\n  c\r\nX Y: z\r\n\tfolded\r\nSubject\r\nsubject x: y\r\n"
         b"TOPIC: t\r\n\r\nbody\r\n", ("FROM", "to", "X Y", "SUBJECT"))
@example(b" lead: x\r\nFrom:a\r\n\r\nFrom: body\r\n", ("FROM",))
def test_header_fields_pattern_keeps_what_the_line_walk_keeps(
        raw: bytes, names: tuple[str, ...]) -> None:
    block = raw[:analyse(raw).root.body_start]
    assert fetch.header_fields(block, names) == mime.header_fields(block, names,
                                                                    exclude=False)


@settings(max_examples=200)
@given(_raw, _names, st.sampled_from(["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"]),
       st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(1, 40))))
def test_header_section_of_the_block_is_the_section_of_the_message(
        raw: bytes, names: tuple[str, ...], text: str,
        partial: tuple[int, int] | None) -> None:
    attr = c.FetchAttr("BODY", c.Section((), text, names if text != "HEADER" else ()),
                       peek=True, partial=partial)
    structure = analyse(raw)
    block = raw[:structure.root.body_start]
    assert fetch.header_section(block, attr) == fetch.body_section(raw, attr, structure)


def test_items_with_short_data_are_one_piece_long_data_its_own() -> None:
    meta_attrs = (c.FetchAttr("UID"), c.FetchAttr("BODY", c.Section((), "HEADER"), peek=True))
    from mailnode.store.api import MessageMeta
    meta = MessageMeta(7, frozenset(), datetime(2024, 1, 1, tzinfo=UTC), 10)
    short = b"Subject: x\r\n\r\n"
    assert list(fetch.render_chunks(meta, meta_attrs, short, None, header_block=True)) == [
        b"(UID 7 BODY[HEADER] {14}\r\n" + short + b")"]
    long = b"X: " + b"y" * fetch.JOIN_BELOW + b"\r\n\r\n"
    pieces = list(fetch.render_chunks(meta, meta_attrs, long, None, header_block=True))
    assert pieces == [b"(UID 7 BODY[HEADER] {%d}\r\n" % len(long), long, b")"]
    assert pieces[1] is long  # sent as it is, never copied into a joined piece


@given(st.lists(st.integers(1, 2**32 - 1), unique=True).map(sorted))
def test_number_list(numbers: list[int]) -> None:
    assert responses.number_list(numbers) == b"".join(b" %d" % n for n in numbers)


WANTED = [[], [1], list(range(1, 121)), list(range(70, 121)), [120, 3, 4, 60],
          [1, 120], list(range(40, 60)), [4, 5, 6, 7], [130, 131], [7, 7, 8],
          list(range(1, 121, 3)), list(range(1, 121, 2))]


async def test_reads_by_uid_range_or_list_give_the_same_messages(tmp_path: Path) -> None:
    """Dense uid sets are read as a range (rows not asked for skipped), sparse ones as a
    list; either way exactly the messages asked for that exist."""
    db = Database.open(tmp_path / "t.db")
    store = SqlStore(db, ChangeNotifier())
    try:
        user = await store.create_user("u", "password-long-enough", Identity.generate())
        box = await store.get_mailbox(user.id, "INBOX")
        assert box is not None
        raws = {}
        for i in range(1, 121):
            raw = b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i)
            _, uid = await store.append(box.id, raw, frozenset(), None)
            raws[uid] = raw
        gaps = [5, 6, 50, 51, 52]
        await store.store_flags(box.id, gaps, frozenset({"\\Deleted"}), "add")
        await store.expunge(box.id)
        for uid in gaps:
            del raws[uid]
        for wanted in WANTED:
            present = {u: raws[u] for u in wanted if u in raws}
            assert await store.fetch_bodies(box.id, wanted) == present
            assert await store.fetch_headers(box.id, wanted) == {
                u: raw[:raw.index(b"\r\n\r\n") + 4] for u, raw in present.items()}
            both = await store.fetch_messages(box.id, wanted)
            assert {u: b for u, (b, _) in both.items()} == present
            assert all(st == structure_blob(present[u]) for u, (_, st) in both.items())
            assert set(await store.fetch_structures(box.id, wanted)) == set(present)
    finally:
        db.close()


async def test_uid_search_unseen_lists_the_views_unseen_uids(dialog: Dialog) -> None:
    await dialog.login()
    message = b"Subject: s\r\n\r\nx\r\n"
    for flags in (b"(\\Seen)", b"()", b"()", b"(\\Seen)", b"()"):
        await dialog.send(b"a APPEND INBOX %s {%d+}\r\n" % (flags, len(message)) + message
                          + b"\r\n")
    await dialog.send(b"s SELECT INBOX\r\nx STORE 2 +FLAGS (\\Seen)\r\n")
    out = await dialog.send(b"u UID SEARCH UNSEEN\r\n")
    assert out == b"* SEARCH 3 5\r\nu OK UID SEARCH completed\r\n"
    assert await dialog.send(b"n UID SEARCH CHARSET UTF-8 UNSEEN\r\n") == \
        b"* SEARCH 3 5\r\nn OK UID SEARCH completed\r\n"
    await dialog.send(b"x STORE 3,5 +FLAGS (\\Seen)\r\n")
    assert await dialog.send(b"e UID SEARCH UNSEEN\r\n") == \
        b"* SEARCH\r\ne OK UID SEARCH completed\r\n"


_ITEMS = [c.FetchAttr("UID"), c.FetchAttr("FLAGS"), c.FetchAttr("MODSEQ"),
          c.FetchAttr("INTERNALDATE"), c.FetchAttr("RFC822.SIZE"),
          c.FetchAttr("BODY", c.Section((), "HEADER"), peek=True),
          c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS", ("SUBJECT", "FROM")), peek=True),
          c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS", ("TO",)), partial=(2, 9)),
          c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS", ("X Y", ""))),
          c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS.NOT", ("SUBJECT",)), peek=True)]


@settings(max_examples=200)
@given(_raw, st.lists(st.sampled_from(_ITEMS), min_size=1, max_size=4, unique=True).map(tuple),
       st.frozensets(st.sampled_from(["\\Seen", "\\Recent", "$x"])), st.booleans())
def test_header_lines_are_the_general_rendering(raw: bytes, attrs: tuple[c.FetchAttr, ...],
                                                flags: frozenset[str], block: bool) -> None:
    from mailnode.store.api import MessageMeta
    meta = MessageMeta(9, flags, datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC), len(raw), 12)
    lines = fetch.HeaderLines(attrs)
    data = raw[:analyse(raw).root.body_start] if block else raw
    general = b"".join(fetch.render_chunks(meta, attrs, data, None, header_block=block))
    assert lines.line(4, meta, data, block) == b"* 4 FETCH " + general + b"\r\n"
    assert lines.line(4, meta, data, block) == b"* 4 FETCH " + general + b"\r\n"  # cached
    # The handler adds \\Recent to a message's flags only for lines that show them.
    assert lines.shows_flags == any(a.name == "FLAGS" for a in attrs)
    if not lines.shows_flags:
        other = MessageMeta(9, flags ^ {"\\Recent", "$y"}, meta.internaldate, meta.size, 12)
        assert lines.line(4, other, data, block) == b"* 4 FETCH " + general + b"\r\n"


def test_header_lines_fit_only_message_data_and_header_sections() -> None:
    assert fetch.HeaderLines.fits(tuple(_ITEMS))
    for other in (c.FetchAttr("ENVELOPE"), c.FetchAttr("EMAILID"),
                  c.FetchAttr("BODY", c.Section((1,), "HEADER"), peek=True),
                  c.FetchAttr("BODY", c.Section((), "TEXT"), peek=True),
                  c.FetchAttr("BINARY", c.Section(()), peek=True)):
        assert not fetch.HeaderLines.fits((_ITEMS[0], other))


async def test_header_list_fetch_without_peek_sets_seen_and_says_so(dialog: Dialog) -> None:
    await dialog.login()
    message = b"Subject: s\r\nFrom: f\r\n\r\nx\r\n"
    for flags in (b"(\\Seen)", b"()"):
        await dialog.send(b"a APPEND INBOX %s {%d+}\r\n" % (flags, len(message)) + message
                          + b"\r\n")
    await dialog.send(b"s SELECT INBOX\r\n")
    out = await dialog.send(b"f FETCH 1:2 (UID BODY[HEADER.FIELDS (SUBJECT)])\r\n")
    assert out == (b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {14}\r\n"
                   b"Subject: s\r\n\r\n)\r\n"
                   b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {14}\r\n"
                   b"Subject: s\r\n\r\n FLAGS (\\Seen \\Recent))\r\n"
                   b"f OK FETCH completed\r\n")


async def test_header_list_fetch_shows_recent_only_with_flags(dialog: Dialog) -> None:
    """Lines without FLAGS are made from the message's data as stored; with FLAGS, a
    message that is \\Recent to this session says so."""
    await dialog.login()
    message = b"Subject: s\r\nFrom: f\r\n\r\nx\r\n"
    await dialog.send(b"a APPEND INBOX (\\Seen) {%d+}\r\n" % len(message) + message + b"\r\n")
    await dialog.send(b"s SELECT INBOX\r\n")
    out = await dialog.send(b"f FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (FROM)])\r\n"
                            b"g FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n")
    assert out == (b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM)] {11}\r\nFrom: f\r\n\r\n)\r\n"
                   b"f OK FETCH completed\r\n"
                   b"* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[HEADER.FIELDS (FROM)] {11}\r\n"
                   b"From: f\r\n\r\n)\r\ng OK FETCH completed\r\n")


_LISTED = [c.FetchAttr("UID"), c.FetchAttr("FLAGS"), c.FetchAttr("MODSEQ")]


@given(st.lists(st.frozensets(st.sampled_from(["\\Seen", "\\Flagged", "$x"])), max_size=12),
       st.permutations(_LISTED).flatmap(lambda p: st.integers(1, 3).map(lambda n: tuple(p[:n]))),
       st.sets(st.integers(1, 12)), st.integers(1, 5))
def test_listing_lines_are_the_general_rendering(
        flag_sets: list[frozenset[str]], attrs: tuple[c.FetchAttr, ...], recent: set[int],
        batch: int) -> None:
    from dataclasses import replace

    from mailnode.store.api import MessageMeta
    metas = {u: MessageMeta(u, f, datetime(2024, 1, 1, tzinfo=UTC), 1, 100 + u)
             for u, f in enumerate(flag_sets, start=1)}
    targets = list(enumerate(metas, start=1))
    chunks = list(fetch.listing_lines(targets, metas, recent, attrs, batch))
    assert all(chunk.count(b"\r\n") <= batch for chunk in chunks)
    general = b"".join(
        b"* %d FETCH " % seq + b"".join(fetch.render_chunks(
            replace(metas[u], flags=metas[u].flags | {"\\Recent"}) if u in recent
            else metas[u], attrs, None, None)) + b"\r\n" for seq, u in targets)
    assert b"".join(chunks) == general


@given(st.binary(max_size=40))
def test_string_quotes_exactly_what_has_no_unquotable_octet(raw: bytes) -> None:
    from mailnode.imap.responses import string
    unquotable = any(b in (0x0D, 0x0A, 0x00) or b > 0x7E for b in raw)
    assert string(raw).startswith(b"{%d}\r\n" % len(raw)) == unquotable


async def test_claiming_recent_writes_only_when_there_is_something_to_claim(
        tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db")
    store = SqlStore(db, ChangeNotifier())
    writes: list[object] = []
    real_run = db.run

    async def counting(fn: object, durable: bool = True) -> object:
        writes.append(fn)
        return await real_run(fn, durable)  # type: ignore[arg-type]
    try:
        user = await store.create_user("u", "password-long-enough", Identity.generate())
        box = await store.get_mailbox(user.id, "INBOX")
        assert box is not None
        for _ in range(3):
            await store.append(box.id, b"Subject: x\r\n\r\ny\r\n", frozenset(), None)
        db.run = counting  # type: ignore[method-assign,assignment]
        assert await store.claim_recent(box.id, 3, claim=False) == (0, 3)  # EXAMINE: no claim
        assert writes == []
        assert await store.claim_recent(box.id, 3) == (0, 3)
        assert len(writes) == 1
        assert await store.claim_recent(box.id, 3) == (3, 3)  # nothing left: no write
        assert await store.claim_recent(box.id, 3, claim=False) == (3, 3)
        assert len(writes) == 1
    finally:
        db.close()


def test_shared_plans_keep_a_bounded_number_of_flag_lists() -> None:
    from mailnode.store.api import MessageMeta
    attrs = (c.FetchAttr("FLAGS"), c.FetchAttr("BODY", c.Section((), "HEADER"), peek=True))
    plan = fetch.header_lines(attrs)
    assert plan is not None and fetch.header_lines(attrs) is plan
    assert fetch.header_lines((c.FetchAttr("ENVELOPE"),)) is None
    for i in range(fetch.MAX_FLAG_LISTS * 2):
        meta = MessageMeta(1, frozenset({f"$k{i}"}), datetime(2024, 1, 1, tzinfo=UTC), 1)
        assert plan.line(1, meta, b"\r\n", True) == \
            b"* 1 FETCH (FLAGS ($k%d) BODY[HEADER] {2}\r\n\r\n)\r\n" % i
        assert len(plan._flags) <= fetch.MAX_FLAG_LISTS


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_header_fetch_reads_small_batches_on_the_loop_and_large_ones_off_it(
        store: SqlStore, dialog: Dialog) -> None:
    """A page of small messages' headers is read without the hop to a reader thread; where
    the batch's messages are large in all, the read (SQLite loads a body to cut its header
    out) stays off the event loop. Both answer the same."""
    from mailnode.imap.handlers.messages import SMALL_READ_BYTES

    db = store.db
    await dialog.login()
    small = b"Subject: small\r\n\r\nx\r\n"
    large = b"Subject: large\r\n\r\n" + b"y" * SMALL_READ_BYTES + b"\r\n"
    for raw in (small, small, large):
        await dialog.send(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
    await dialog.send(b"s SELECT INBOX\r\n")
    used: list[str] = []
    read_small, read = db.read_small, db.read

    async def on_loop(fn: Any, large: Any = None) -> Any:
        used.append("loop")
        return await read_small(fn, large)

    async def on_reader(fn: Any) -> Any:
        used.append("reader")
        return await read(fn)

    db.read_small = on_loop  # type: ignore[method-assign]
    db.read = on_reader  # type: ignore[method-assign]
    out = await dialog.send(b"f FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert out == b"".join(b"* %d FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\n"
                           b"Subject: small\r\n\r\n)\r\n" % n for n in (1, 2)) \
        + b"f OK FETCH completed\r\n"
    assert used == ["loop"]
    used.clear()
    out = await dialog.send(b"g FETCH 2:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert out == (b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\n"
                   b"Subject: small\r\n\r\n)\r\n"
                   b"* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\n"
                   b"Subject: large\r\n\r\n)\r\ng OK FETCH completed\r\n")
    assert used == ["reader"]


# Stored fields (migration 0011): names drawn from the stored set in any case, and from
# outside it; messages with stored fields among several copies of a name, folded lines,
# bare CRs and a header without an ending line break.
_stored_piece = st.sampled_from([b"From", b"to", b"SUBJECT", b"Date", b"Message-ID", b"Cc",
                                 b"Received", b"X-Y", b":", b" ", b"\t", b"\x0b", b"\r",
                                 b"\n", b"\r\n", b"a", b"\xc3\xbc", b"Content-Type"])
_stored_raw = st.tuples(st.lists(st.lists(_stored_piece, max_size=8).map(b"".join),
                                 max_size=10).map(b"\r\n".join),
                        st.sampled_from([b"\r\n\r\nbody\r\n", b"\r\n", b""])).map(b"".join)
_stored_names = st.lists(st.sampled_from(["FROM", "to", "Subject", "DATE", "message-id",
                                          "CC", "content-type", "RECEIVED", "X-Y", "FROM "]),
                         min_size=1, max_size=4).map(tuple)


@settings(max_examples=400)
@given(_stored_raw, _stored_names)
@example(b"From: a\r\n b\r\nReceived: x\r\n\tfolded\r\nTo: c\r\nFrom: d", ("FROM",))
@example(b"From: a\r", ("FROM",))
@example(b"to\r\n From: a\r\n\r\n", ("TO", "FROM"))
def test_stored_fields_answer_what_the_header_block_answers(
        raw: bytes, names: tuple[str, ...]) -> None:
    """Wherever the store keeps fields and the names are all among them, HEADER.FIELDS
    picked from the stored fields is byte for byte what is picked from the message."""
    from mailnode.mime import headers as mh
    from mailnode.mime.model import VERSION
    structure = structure_blob(raw)
    stored = mh.stored_fields(raw, structure, VERSION)
    block = raw[:analyse(raw).root.body_start]
    if stored is None:  # only where the last kept line would lose its missing line end
        kept = mime.header_fields(block, mh.STORED_FIELDS, exclude=False)
        assert kept[-3:-2] not in (b"\r", b"\n") and len(kept) > 2
        return
    assert stored[0] == mh.STORED_FIELDS_VERSION
    if not mh.in_stored_fields(names):
        return
    attr = c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS", names), peek=True)
    assert fetch.header_section(stored[1:], attr) == fetch.body_section(raw, attr)
    assert fetch.header_fields(stored[1:], names) == mime.header_fields(block, names,
                                                                        exclude=False)


def test_stored_fields_need_a_structure_of_the_version_given() -> None:
    from mailnode.mime import headers as mh
    from mailnode.mime.model import VERSION
    raw = b"Subject: s\r\nReceived: r\r\n\r\nbody\r\n"
    assert mh.stored_fields(raw, structure_blob(raw), VERSION) == \
        bytes([mh.STORED_FIELDS_VERSION]) + b"Subject: s\r\n\r\n"
    assert mh.stored_fields(raw, None, VERSION) is None
    assert mh.stored_fields(raw, structure_blob(raw), VERSION + 1) is None
    assert mh.stored_fields(raw, bytes([VERSION]) + b"[0,999,", VERSION) is None
    assert mh.in_stored_fields(("from", "SUBJECT"))
    assert not mh.in_stored_fields(("FROM", "RECEIVED"))
    assert not mh.in_stored_fields(("FROM ",))


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_header_list_fetch_reads_stored_fields_only_when_they_answer(
        store: SqlStore, dialog: Dialog) -> None:
    """A message list's HEADER.FIELDS of stored fields is read from them; other header
    sections (and mail stored without fields) from the header block: the same bytes."""
    db = store.db
    await dialog.login()
    raw = (b"Received: from x\r\n\tby y\r\nFrom: A <a@x>\r\nX-Spam: no\r\n"
           b"Subject: hi\r\n  there\r\nTo: b@y\r\n\r\nbody\r\n")
    for _ in range(3):
        await dialog.send(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
    with db.engine.begin() as conn:  # the third as if stored before migration 0011
        from sqlalchemy import text
        conn.execute(text("UPDATE bodies SET fields = NULL WHERE id = "
                          "(SELECT max(body_id) FROM messages)"))
    await dialog.send(b"s SELECT INBOX\r\n")
    asked: list[bool] = []
    real = store.fetch_headers

    async def spy(*args: Any, **kwargs: Any) -> dict[int, bytes | None]:
        asked.append(kwargs.get("fields", False))
        heads = await real(*args, **kwargs)
        if kwargs.get("fields"):
            assert heads[1] == heads[2] == b"From: A <a@x>\r\nSubject: hi\r\n  there\r\n" \
                b"To: b@y\r\n\r\n"
            assert heads[3] == raw[:raw.index(b"\r\n\r\n") + 4]
        return heads
    store.fetch_headers = spy  # type: ignore[method-assign]
    expected = b"From: A <a@x>\r\nSubject: hi\r\n  there\r\n\r\n"
    out = await dialog.send(b"f FETCH 1:3 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT from)])\r\n")
    assert out == b"".join(
        b"* %d FETCH (UID %d BODY[HEADER.FIELDS (SUBJECT FROM)] {%d}\r\n" % (
            n, n, len(expected)) + expected + b")\r\n" for n in (1, 2, 3)) \
        + b"f OK FETCH completed\r\n"
    out = await dialog.send(b"g FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-SPAM FROM)])\r\n"
                            b"h FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)])\r\n")
    assert b"X-Spam: no\r\n" in out and b"Received" not in out
    assert asked == [True, False, False]
