"""The paths a big mailbox's sync takes (FETCH of UID/FLAGS/MODSEQ, SEARCH on one flag)
answer exactly what the general paths answer, and do not build per-message candidates or
test every message for UNSEEN."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailnode.imap import feed, search
from mailnode.imap.feed import Metas
from mailnode.store.api import MessageMeta
from tests.imap.conftest import MESSAGE, Dialog

FLAG_SETS = [b"()", b"(\\Seen)", b"(\\Seen \\Flagged)", b"(\\Answered $Junk)", b"(\\Draft)"]


async def _mailbox(dialog: Dialog, count: int) -> None:
    await dialog.login()
    for i in range(count):
        flags = FLAG_SETS[i % len(FLAG_SETS)]
        await dialog.send(b"a APPEND INBOX %s {%d+}\r\n" % (flags, len(MESSAGE)) + MESSAGE
                          + b"\r\n")
    await dialog.send(b"s SELECT INBOX\r\n")


def _lines(out: bytes) -> list[bytes]:
    return out.split(b"\r\n")[:-2]


async def test_flag_listing_matches_the_general_rendering(dialog: Dialog) -> None:
    await _mailbox(dialog, 12)
    await dialog.send(b"e ENABLE CONDSTORE\r\n")
    await dialog.send(b"t STORE 3:5 +FLAGS (\\Deleted)\r\n")
    fast = _lines(await dialog.send(b"f UID FETCH 1:* (FLAGS MODSEQ)\r\n"))
    # RFC822.SIZE forces the general path; dropping it must leave the same lines.
    general = _lines(await dialog.send(b"g UID FETCH 1:* (FLAGS MODSEQ RFC822.SIZE)\r\n"))
    size = b" RFC822.SIZE %d" % len(MESSAGE)
    assert len(fast) == 12
    assert fast == [line.replace(size, b"") for line in general]
    assert b"\\Recent" in fast[0]  # this session's \Recent is shown like the general path


async def test_flag_listing_in_many_writes(dialog: Dialog,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from mailnode.imap import session as session_module
    monkeypatch.setattr(session_module, "LINE_BATCH", 4)
    await _mailbox(dialog, 10)
    out = await dialog.send(b"f FETCH 1:* (UID FLAGS)\r\n")
    assert [line.split(b" ")[1] for line in _lines(out)] == [b"%d" % i for i in range(1, 11)]


@pytest.mark.parametrize("key", [b"UNSEEN", b"SEEN", b"FLAGGED", b"UNFLAGGED",
                                 b"KEYWORD $Junk", b"UNKEYWORD $Junk", b"DELETED"])
async def test_one_flag_searches_match_the_general_path(dialog: Dialog, key: bytes,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    await _mailbox(dialog, 15)
    await dialog.send(b"x STORE 2,7 -FLAGS (\\Seen)\r\nx STORE 1 +FLAGS (\\Seen)\r\n")
    general = await dialog.send(b"g UID SEARCH ALL " + key + b"\r\n")
    calls = []
    real = search.matches

    def counting(*args: object) -> bool:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(search, "matches", counting)
    fast = await dialog.send(b"f UID SEARCH " + key + b"\r\n")
    assert fast.replace(b"f OK", b"g OK") == general
    assert calls == []  # no candidate was built or matched


async def test_unseen_search_tests_no_message(dialog: Dialog) -> None:
    """UNSEEN comes from the view's unseen set: a mailbox whose messages cannot even be
    looked up still answers it."""
    await _mailbox(dialog, 10)
    sel = dialog.session.selected
    assert sel is not None
    assert sorted(sel.unseen) == [1, 4, 5, 6, 9, 10]

    class Untouchable(Metas):
        def __getitem__(self, uid: int) -> MessageMeta:
            raise AssertionError("SEARCH UNSEEN looked at a message")
    sel.metas = Untouchable(dict(sel.metas))
    out = await dialog.send(b"u SEARCH UNSEEN\r\n")
    assert out == b"* SEARCH 1 4 5 6 9 10\r\nu OK SEARCH completed\r\n"


_DATE = datetime(2024, 1, 1, tzinfo=UTC)
_flags = st.frozensets(st.sampled_from(["\\Seen", "\\Flagged", "$x"]))


@given(st.lists(st.tuples(st.sampled_from(["set", "del"]), st.integers(1, 8), _flags),
                max_size=40))
def test_metas_keeps_its_unseen_set(ops: list[tuple[str, int, frozenset[str]]]) -> None:
    metas = Metas({1: MessageMeta(1, frozenset(), _DATE, 1)})
    for op, uid, flags in ops:
        if op == "set":
            metas[uid] = MessageMeta(uid, flags, _DATE, 1)
        elif uid in metas:
            del metas[uid]
        assert metas.unseen == {u for u, m in metas.items() if "\\Seen" not in m.flags}
    with pytest.raises(TypeError):
        metas.update({})


def test_selected_wraps_a_plain_dict() -> None:
    from mailnode.store.api import Mailbox
    sel = feed.Selected(Mailbox(1, 1, "INBOX", 7, 3, None, 2, 1), False, [1, 2],
                        {1: MessageMeta(1, frozenset({"\\Seen"}), _DATE, 1),
                         2: MessageMeta(2, frozenset(), _DATE, 1)}, 0)
    assert sel.unseen == {2}


@given(st.lists(st.integers(1, 60), unique=True).map(sorted),
       st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 70)),
                          st.one_of(st.none(), st.integers(1, 70))), min_size=1, max_size=5))
def test_uid_targets_number_what_uids_selects(existing: list[int],
                                              ranges: list[tuple[int | None, int | None]],
                                              ) -> None:
    from mailnode.imap.sequences import SequenceSet
    seqset = SequenceSet(tuple(ranges))
    assert seqset.uid_targets(existing) == [(existing.index(u) + 1, u)
                                            for u in seqset.uids(existing)]


HEADER_FETCHES = [b"BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]", b"BODY.PEEK[HEADER]",
                  b"BODY.PEEK[HEADER.FIELDS.NOT (TO DATE)]<5.20>",
                  b"UID BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS RFC822.SIZE"]


@pytest.mark.parametrize("items", HEADER_FETCHES)
async def test_header_fetches_read_no_bodies(dialog: Dialog, items: bytes,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With structures stored at delivery (SQLite), header sections come from the store's
    header blocks: no body is read; the reply is what the general path (which reads the
    whole message, here through BODY[TEXT] alongside) gives for the same items."""
    await _mailbox(dialog, 6)
    await dialog.send(b"x APPEND INBOX {%d+}\r\n" % 26 + b"Subject: no blank line\r\nX" + b"\r\n")
    await dialog.send(b"x APPEND INBOX {%d+}\r\n" % 9 + b"\r\nbody\r\n\r\n" + b"\r\n")
    general = await dialog.send(b"g FETCH 1:* (" + items + b" BODY.PEEK[TEXT])\r\n")
    bodies: list[int] = []
    store = dialog.session.store
    real = store.fetch_bodies

    async def counting(mailbox_id: int, uids: object) -> dict[int, bytes]:
        bodies.extend(uids)  # type: ignore[arg-type]
        return await real(mailbox_id, uids)  # type: ignore[arg-type]
    monkeypatch.setattr(store, "fetch_bodies", counting)
    fast = await dialog.send(b"f FETCH 1:* (" + items + b")\r\n")
    lines = fast.split(b"\r\n")
    assert fast.endswith(b"f OK FETCH completed\r\n") and len(lines) > 8
    # The same header bytes as the general path, message by message.
    for seq in range(1, 9):
        start = b"* %d FETCH (" % seq
        got = fast[fast.index(start):]
        want = general[general.index(start):]
        head = got[:got.index(b")\r\n")]
        assert want.startswith(head), (head, want[:len(head)])
    if type(store).__name__ == "SqlStore":
        assert bodies == []
    else:  # the memory store keeps no structures: the whole messages are read
        assert sorted(bodies) == list(range(1, 9))


async def test_sections_with_structures_take_one_read_per_batch(
        dialog: Dialog, monkeypatch: pytest.MonkeyPatch) -> None:
    await _mailbox(dialog, 5)
    expected = await dialog.send(b"g FETCH 1:* (BODY.PEEK[1] ENVELOPE)\r\n")
    store = dialog.session.store
    calls: list[str] = []
    for name in ("fetch_bodies", "fetch_structures", "fetch_messages"):
        real = getattr(store, name)

        def counting(*args: object, _real: object = real, _name: str = name) -> object:
            calls.append(_name)
            return _real(*args)  # type: ignore[operator]
        monkeypatch.setattr(store, name, counting)
    out = await dialog.send(b"g FETCH 1:* (BODY.PEEK[1] ENVELOPE)\r\n")
    assert out == expected
    assert calls == ["fetch_messages"]
