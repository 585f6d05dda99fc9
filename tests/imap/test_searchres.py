"""SEARCHRES (RFC 5182) over bytes, on both stores: RETURN (SAVE) and ``$`` in every place a
sequence set goes, what is saved with MIN/MAX, what a failed search leaves, and ``$`` after
expunges and reselection."""

from __future__ import annotations

import re

from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.test_esearch import selected


def fetched(out: bytes) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(rb"\* (\d+) FETCH \(UID (\d+)", out)]


async def test_save_then_use_dollar(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)  # sequence numbers 1..5 are uids 2..6
    out = await d.send(b"a SEARCH RETURN (SAVE) 2,4\r\n")
    assert b"ESEARCH" not in out and b"a OK" in out  # SAVE alone sends no result
    assert fetched(await d.send(b"f FETCH $ (UID)\r\n")) == [(2, 3), (4, 5)]
    assert fetched(await d.send(b"f UID FETCH $ (UID)\r\n")) == [(2, 3), (4, 5)]
    assert b"* SEARCH 2 4\r\n" in await d.send(b"s SEARCH $\r\n")
    assert b"* SEARCH 4\r\n" in await d.send(b"s SEARCH UID $ 3:5\r\n")
    assert b"* SEARCH 1 3 5\r\n" in await d.send(b"s SEARCH NOT $\r\n")
    out = await d.send(b"t STORE $ +FLAGS (\\Flagged)\r\n")
    assert b"* 2 FETCH (FLAGS (\\Flagged " in out and b"* 4 FETCH" in out, out
    assert b"c OK" in await d.send(b"c CREATE Other\r\n")
    assert b"[COPYUID" in await d.send(b"c COPY $ Other\r\n")
    # An expunged message leaves the saved result; the others are renumbered with it.
    await d.send(b"x STORE 1 +FLAGS (\\Deleted)\r\n")
    await d.send(b"e EXPUNGE\r\n")
    assert fetched(await d.send(b"f FETCH $ (UID)\r\n")) == [(1, 3), (3, 5)]
    await d.send(b"x UID STORE 3,6 +FLAGS (\\Deleted)\r\n")
    out = await d.send(b"e UID EXPUNGE $\r\n")  # uid 3 only: 6 is deleted, not saved
    assert b"* 1 EXPUNGE" in out and out.count(b"EXPUNGE\r\n") == 1, out
    assert fetched(await d.send(b"f FETCH 1:* (UID)\r\n")) == [(1, 4), (2, 5), (3, 6)]
    # New messages are not added; reselecting starts with nothing saved.
    await d.send(b"a SEARCH RETURN (SAVE) ALL\r\n")
    assert len(fetched(await d.send(b"f FETCH $ (UID)\r\n"))) == 3
    await d.send(b"s SELECT INBOX\r\n")
    assert fetched(await d.send(b"f FETCH $ (UID)\r\n")) == []


async def test_what_is_saved(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    out = await d.send(b"a SEARCH RETURN (SAVE MIN MAX) 2:4\r\n")
    assert b'* ESEARCH (TAG "a") MIN 2 MAX 4' in out
    assert b"* SEARCH 2 4\r\n" in await d.send(b"s SEARCH $\r\n")  # only MIN and MAX
    await d.send(b"a SEARCH RETURN (SAVE MIN COUNT) 2:4\r\n")
    assert b"* SEARCH 2 3 4\r\n" in await d.send(b"s SEARCH $\r\n")  # COUNT: all of them
    await d.send(b"a UID SEARCH RETURN (SAVE) UID 3,5\r\n")
    assert b"* SEARCH 2 4\r\n" in await d.send(b"s SEARCH $\r\n")
    await d.send(b"a SORT RETURN (SAVE) (SUBJECT) UTF-8 1:2\r\n")
    assert b"* SEARCH 1 2\r\n" in await d.send(b"s SEARCH $\r\n")
    # "$" in a saving search means the previous result.
    await d.send(b"a SEARCH RETURN (SAVE) OR $ 5\r\n")
    assert b"* SEARCH 1 2 5\r\n" in await d.send(b"s SEARCH $\r\n")
    # A saving search that fails leaves nothing saved.
    out = await d.send(b"a SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n")
    assert out.startswith(b"a NO [BADCHARSET")
    assert b"* SEARCH\r\n" in await d.send(b"s SEARCH $\r\n")


async def test_dollar_syntax(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    for bad in (b"FETCH $,1 (UID)", b"FETCH $:3 (UID)", b"FETCH 1,$ (UID)", b"SEARCH $$",
                b"STORE $1 +FLAGS (\\Seen)"):
        out = await d.send(b"b " + bad + b"\r\n")
        assert out.startswith(b"b BAD"), (bad, out)
    # Unsaved: "$" selects nothing, and is no error.
    assert b"f OK" in await d.send(b"f FETCH $ (UID)\r\n")
