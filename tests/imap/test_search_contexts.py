"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267): updating contexts over bytes, on both stores.

The checks act as a client would: a result list is kept from the first ESEARCH and changed
only by the ADDTO/REMOVEFROM items (and by renumbering on EXPUNGE, for sequence-number
contexts) in the order they arrive; after each change it must equal what a fresh search
returns. Changes come from the session itself and from another session (append, flag
change, expunge). Also: REMOVEFROM before EXPUNGE, CANCELUPDATE, tag reuse, NOUPDATE when
contexts run out, contexts ending with the selection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import commands as c
from mailnode.imap import contexts as cx
from mailnode.imap import search, sortthread
from mailnode.imap.handlers import esearch as ext
from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import Dialog
from tests.imap.test_esearch import MAIL, message

_ESEARCH = re.compile(rb'\* ESEARCH \(TAG "([^"]*)"\)( UID)?(.*)')
_PAIR_ITEM = re.compile(rb" (ADDTO|REMOVEFROM) \(([^)]*)\)")


def expand(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.split(b","):
        lo, _, hi = part.partition(b":")
        a, b = int(lo), int(hi or lo)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


@dataclass
class ClientView:
    """What a client keeps of one context: its result list, changed only by the server's
    update items (RFC 5267 4.3.3/4.3.4) and by EXPUNGE renumbering."""

    tag: bytes
    uid: bool
    results: list[int] = field(default_factory=list)

    def feed(self, out: bytes) -> None:
        for line in out.split(b"\r\n"):
            m = re.fullmatch(rb"\* (\d+) EXPUNGE", line)
            if m and not self.uid:
                gone = int(m.group(1))
                assert gone not in self.results, "REMOVEFROM must come before EXPUNGE"
                self.results = [n - 1 if n > gone else n for n in self.results]
                continue
            m = _ESEARCH.fullmatch(line)
            if m is None or m.group(1) != self.tag:
                continue
            assert bool(m.group(2)) == self.uid
            for kind, payload in _PAIR_ITEM.findall(m.group(3)):
                words = payload.split(b" ")
                for pos_raw, numbers in zip(words[::2], words[1::2], strict=True):
                    self._apply(kind, int(pos_raw), expand(numbers))

    def _apply(self, kind: bytes, pos: int, numbers: list[int]) -> None:
        if kind == b"ADDTO":
            if pos == 0:
                self.results = sorted(set(self.results) | set(numbers))
            else:
                self.results[pos - 1:pos - 1] = numbers
            return
        if pos == 0:
            assert set(numbers) <= set(self.results)
            self.results = [n for n in self.results if n not in numbers]
        else:
            assert self.results[pos - 1:pos - 1 + len(numbers)] == numbers
            del self.results[pos - 1:pos - 1 + len(numbers)]


async def session(store: MailStore, notifier: ChangeNotifier) -> Dialog:
    d = Dialog(ImapSession(store, notifier))
    assert (await d.login()).startswith(b"L OK")
    return d


async def append(d: Dialog, raw: bytes, flags: bytes = b"") -> bytes:
    await d.send(b"a APPEND INBOX %s{%d}\r\n" % (flags, len(raw)))
    out = await d.send(raw + b"\r\n")
    assert b"a OK" in out
    return out


def all_of(out: bytes, tag: bytes) -> list[int]:
    for line in out.split(b"\r\n"):
        m = _ESEARCH.fullmatch(line)
        if m and m.group(1) == tag:
            found = re.search(rb" ALL (\S+)", m.group(3))
            return expand(found.group(1)) if found else []
    raise AssertionError(f"no ESEARCH for {tag!r} in {out!r}")


def ordered(out: bytes, tag: bytes) -> list[int]:
    """ALL of a SORT result: the order matters, ranges expand upwards."""
    return all_of(out, tag)


async def test_contexts_follow_every_kind_of_change(store: MailStore,
                                                    notifier: ChangeNotifier) -> None:
    watcher, writer = await session(store, notifier), await session(store, notifier)
    for raw in MAIL:
        await append(writer, raw)
    await watcher.send(b"s SELECT INBOX\r\n")
    await writer.send(b"s SELECT INBOX\r\n")
    programs = {
        b"S1": b"SEARCH RETURN (UPDATE ALL) UNSEEN",
        b"S2": b"UID SEARCH RETURN (UPDATE ALL) OR FLAGGED SUBJECT echo",
        b"S3": b"SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN",
        b"S4": b"UID SORT RETURN (UPDATE ALL) (REVERSE DATE) UTF-8 NOT FLAGGED",
    }
    views = {}
    for tag, program in programs.items():
        out = await watcher.send(tag + b" " + program + b"\r\n")
        assert tag + b" OK" in out, out
        views[tag] = ClientView(tag, b"UID " in program, all_of(out, tag))

    async def check() -> None:
        for tag, program in programs.items():
            fresh = program.replace(b"UPDATE ", b"")
            out = await watcher.send(b"F " + fresh + b"\r\n")
            assert views[tag].results == ordered(out, b"F"), (tag, views[tag].results, out)

    await check()
    steps = [
        (writer, b"x STORE 2,4 +FLAGS (\\Seen)"),
        (watcher, b"x STORE 1 +FLAGS (\\Flagged \\Seen)"),  # the session's own change
        (writer, b"x STORE 2 -FLAGS (\\Seen)"),
        (writer, b"x STORE 3,5 +FLAGS (\\Deleted)"),
        (writer, b"x EXPUNGE"),
        (writer, None),  # an append
        (writer, b"x STORE 1:* +FLAGS (\\Seen)"),
        (watcher, b"x STORE 1:2 -FLAGS (\\Seen \\Flagged)"),
        (writer, b"x STORE 1 +FLAGS (\\Deleted)"),
        (watcher, b"x EXPUNGE"),
    ]
    for actor, command in steps:
        if command is None:
            out = await append(actor, message("golf", "Sat, 06 Jan 2024 10:00:00 +0000"))
        else:
            out = await actor.send(command + b"\r\n")
            assert b"x OK" in out, (command, out)
        if actor is watcher:
            for view in views.values():
                view.feed(out)
        out = await watcher.send(b"n NOOP\r\n")
        for view in views.values():
            view.feed(out)
        await check()


async def test_update_items_come_in_the_right_place(store: MailStore,
                                                   notifier: ChangeNotifier) -> None:
    watcher, writer = await session(store, notifier), await session(store, notifier)
    for raw in MAIL[:3]:
        await append(writer, raw)
    await watcher.send(b"s SELECT INBOX\r\n")
    await writer.send(b"s SELECT INBOX\r\n")
    out = await watcher.send(b"A SEARCH RETURN (UPDATE) SEEN\r\n")
    assert b'* ESEARCH (TAG "A")\r\n' in out  # UPDATE alone returns no results
    await writer.send(b"x STORE 2:3 +FLAGS (\\Seen)\r\n")
    out = await watcher.send(b"n NOOP\r\n")
    assert b'* ESEARCH (TAG "A") ADDTO (0 2:3)\r\n' in out, out
    await writer.send(b"x STORE 2 +FLAGS (\\Deleted)\r\n")
    await writer.send(b"x EXPUNGE\r\n")
    out = await watcher.send(b"n NOOP\r\n")
    assert out.index(b'* ESEARCH (TAG "A") REMOVEFROM (0 2)\r\n') < out.index(
        b"* 2 EXPUNGE\r\n"), out
    await append(writer, MAIL[4], b"(\\Seen) ")
    out = await watcher.send(b"n NOOP\r\n")
    # ADDTO after the EXISTS that makes the new number valid.
    assert out.index(b"* 3 EXISTS\r\n") < out.index(b'* ESEARCH (TAG "A") ADDTO (0 3)'), out
    # A flag change that does not change membership says nothing.
    await writer.send(b"x STORE 3 +FLAGS (\\Flagged)\r\n")
    assert b"ESEARCH" not in await watcher.send(b"n NOOP\r\n")


async def test_updates_reach_an_idling_client(store: MailStore,
                                              notifier: ChangeNotifier) -> None:
    watcher, writer = await session(store, notifier), await session(store, notifier)
    await append(writer, MAIL[0])
    await watcher.send(b"s SELECT INBOX\r\n")
    await watcher.send(b"A UID SEARCH RETURN (UPDATE) UNSEEN\r\n")
    assert (await watcher.send(b"i IDLE\r\n")).startswith(b"+ ")
    await append(writer, MAIL[1])
    await watcher.session.refresh()  # what the adapter does when the notifier fires
    out = watcher.session.data_to_send()
    assert b"* 2 EXISTS" in out and b'* ESEARCH (TAG "A") UID ADDTO (0 2)' in out, out
    assert b"i OK" in await watcher.send(b"DONE\r\n")


async def test_sort_context_positions(store: MailStore, notifier: ChangeNotifier) -> None:
    watcher, writer = await session(store, notifier), await session(store, notifier)
    for raw in MAIL[:4]:  # delta alpha echo bravo
        await append(writer, raw)
    await watcher.send(b"s SELECT INBOX\r\n")
    await writer.send(b"s SELECT INBOX\r\n")
    out = await watcher.send(b"B SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN\r\n")
    assert b'* ESEARCH (TAG "B") ALL 2,4,1,3\r\n' in out, out
    await append(writer, message("charlie", "Mon, 01 Jan 2024 10:00:00 +0000"))
    out = await watcher.send(b"n NOOP\r\n")
    assert b'* ESEARCH (TAG "B") ADDTO (3 5)\r\n' in out, out  # alpha bravo charlie ...
    await writer.send(b"x STORE 4,5 +FLAGS (\\Seen)\r\n")
    out = await watcher.send(b"n NOOP\r\n")
    assert b'* ESEARCH (TAG "B") REMOVEFROM (2 4:5)\r\n' in out, out


async def test_cancelupdate_and_tags(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await session(store, notifier)
    for raw in MAIL[:3]:
        await append(d, raw)
    await d.send(b"s SELECT INBOX\r\n")
    assert b"A OK" in await d.send(b"A SEARCH RETURN (UPDATE) SEEN\r\n")
    # RFC 5267 4.3: a tag in use by an updating context is refused.
    assert (await d.send(b"A SEARCH RETURN (UPDATE COUNT) ALL\r\n")).startswith(b"A BAD")
    assert b'ADDTO (0 1)' in await d.send(b"x STORE 1 +FLAGS (\\Seen)\r\n")
    assert (await d.send(b'c CANCELUPDATE "nope"\r\n')).startswith(b"c NO")
    assert (await d.send(b'c CANCELUPDATE "A" "nope"\r\n')).startswith(b"c NO")
    assert (await d.send(b"c CANCELUPDATE A\r\n")).startswith(b"c BAD")  # tags are quoted
    assert (await d.send(b"c CANCELUPDATE\r\n")).startswith(b"c BAD")
    assert b"c OK" in await d.send(b'c CANCELUPDATE "A"\r\n')
    assert b"ESEARCH" not in await d.send(b"x STORE 2 +FLAGS (\\Seen)\r\n")
    # The tag is free again.
    assert b"A OK" in await d.send(b"A SEARCH RETURN (UPDATE) SEEN\r\n")
    # A new selection ends the contexts of the old one.
    await d.send(b"s SELECT INBOX\r\n")
    assert b"ESEARCH" not in await d.send(b"x STORE 3 +FLAGS (\\Seen)\r\n")
    assert (await d.send(b'c CANCELUPDATE "A"\r\n')).startswith(b"c NO")
    await d.send(b"u UNSELECT\r\n")
    assert (await d.send(b'c CANCELUPDATE "A"\r\n')).startswith(b"c BAD")  # not selected


async def test_many_contexts_get_noupdate(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await session(store, notifier)
    await append(d, MAIL[0])
    await d.send(b"s SELECT INBOX\r\n")
    for i in range(cx.MAX_CONTEXTS):
        out = await d.send(b"T%d SEARCH RETURN (UPDATE COUNT) SEEN\r\n" % i)
        assert b"NOUPDATE" not in out and b"T%d OK" % i in out
    out = await d.send(b"X SORT RETURN (UPDATE COUNT) (ARRIVAL) UTF-8 ALL\r\n")
    # Refused, but the other return options are still honoured (RFC 5267 4.3.1).
    assert b'* NO [NOUPDATE "X"]' in out and b'* ESEARCH (TAG "X") COUNT 1' in out, out
    assert b"X OK" in out
    out = await d.send(b"x STORE 1 +FLAGS (\\Seen)\r\n")
    assert out.count(b"ADDTO (0 1)") == cx.MAX_CONTEXTS and b'"X"' not in out
    # Cancelling one makes room.
    await d.send(b'c CANCELUPDATE "T0"\r\n')
    assert b"NOUPDATE" not in await d.send(b"Y SEARCH RETURN (UPDATE) SEEN\r\n")


async def test_sequence_numbers_in_a_context_keep_naming_the_same_messages(
        store: MailStore, notifier: ChangeNotifier) -> None:
    d = await session(store, notifier)
    for raw in MAIL[:4]:
        await append(d, raw)
    await d.send(b"s SELECT INBOX\r\n")
    assert b"ALL 2:3" in await d.send(b"A SEARCH RETURN (UPDATE ALL) 2:3 UNSEEN\r\n")
    await d.send(b"x STORE 1 +FLAGS (\\Deleted)\r\n")
    out = await d.send(b"e EXPUNGE\r\n")
    assert b"ESEARCH" not in out  # messages 2 and 3 are now 1 and 2, still in the result
    out = await d.send(b"x STORE 1:3 +FLAGS (\\Seen)\r\n")
    assert b'* ESEARCH (TAG "A") REMOVEFROM (0 1:2)' in out, out
    out = await d.send(b"x STORE 3 -FLAGS (\\Seen)\r\n")
    assert b"ESEARCH" not in out  # message 3 was never one of the "2:3" named


@st.composite
def changes(draw: st.DrawFn) -> tuple[list[int], set[int], set[int], set[int]]:
    """Messages, the current members, which of them stop matching and which others start
    (disjoint, as re-evaluation produces them)."""
    universe = draw(st.lists(st.integers(1, 60), min_size=1, max_size=40, unique=True))
    members = draw(st.sets(st.sampled_from(universe)))
    removed = {u for u in members if draw(st.booleans())}
    added = {u for u in universe if u not in members and draw(st.booleans())}
    return sorted(universe), members, removed, added


@settings(max_examples=200, deadline=None)
@given(changes(), st.booleans(), st.booleans())
def test_update_items_rebuild_the_new_result(
        change: tuple[list[int], set[int], set[int], set[int]], sort_it: bool,
        reverse: bool) -> None:
    """Whatever leaves and enters, applying the items to the old list gives the new one."""
    universe, members, removed, added = change
    msgs = {u: sortthread.SortMessage(u, _date(u), size=(u * 7919) % 13) for u in universe}
    criteria = (("SIZE", reverse),)
    ctx = cx.Context("t", c.SearchAll(), uid=True, criteria=criteria if sort_it else None,
                     members=set(members))
    if sort_it:
        ctx.messages = {u: msgs[u] for u in members}
        ctx.order = sortthread.sort(list(ctx.messages.values()), criteria)
    before = list(ctx.order) if sort_it else sorted(members)
    view = ClientView(b"t", uid=True, results=before)
    line = cx.update_items(ctx, set(removed), {u: msgs[u] for u in added},
                           {u: u for u in universe})
    if line is not None:
        view.feed(b"* " + line + b"\r\n")
    final = (members - removed) | added
    expected = sortthread.sort([msgs[u] for u in final], criteria) if sort_it else sorted(final)
    assert view.results == expected
    assert (ctx.order if sort_it else sorted(ctx.members)) == expected


def _date(u: int) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=u)


async def test_a_change_re_evaluates_only_the_changed_message(
        store: MailStore, notifier: ChangeNotifier, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeping contexts current costs the changed messages times the contexts, not the
    mailbox: counted as search-key evaluations."""
    watcher, writer = await session(store, notifier), await session(store, notifier)
    for _ in range(40):
        await append(writer, MAIL[0])
    await watcher.send(b"s SELECT INBOX\r\n")
    await writer.send(b"s SELECT INBOX\r\n")
    await watcher.send(b"A SEARCH RETURN (UPDATE) SEEN\r\n")
    await watcher.send(b"B UID SORT RETURN (UPDATE) (SUBJECT) UTF-8 SEEN\r\n")
    evaluated: list[int] = []
    real = search.matches

    def counting(key: c.SearchKey, m: search.Candidate) -> bool:
        evaluated.append(m.meta.uid)
        return real(key, m)

    monkeypatch.setattr(search, "matches", counting)
    await writer.send(b"x STORE 17 +FLAGS (\\Seen)\r\n")
    out = await watcher.send(b"n NOOP\r\n")
    assert b'(TAG "A") ADDTO (0 17)' in out and b'(TAG "B") UID ADDTO (1 17)' in out, out
    assert sorted(evaluated) == [17, 17]  # once per context (SEEN is one key)


async def test_a_context_too_large_is_not_kept(store: MailStore, notifier: ChangeNotifier,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cx, "MAX_CONTEXT_RESULTS", 2)
    monkeypatch.setattr(ext, "MAX_CONTEXT_RESULTS", 2)
    d = await session(store, notifier)
    for raw in MAIL[:4]:
        await append(d, raw)
    await d.send(b"s SELECT INBOX\r\n")
    out = await d.send(b"A SEARCH RETURN (UPDATE COUNT) ALL\r\n")
    assert b'* NO [NOUPDATE "A"]' in out and b"COUNT 4" in out, out
    assert b"NOUPDATE" not in await d.send(b"B SEARCH RETURN (UPDATE) SEEN\r\n")
    await d.send(b"x STORE 1:2 +FLAGS (\\Seen)\r\n")
    # Growing past the bound ends the updates, with NOUPDATE saying so.
    out = await d.send(b"x STORE 3 +FLAGS (\\Seen)\r\n")
    assert b'* NO [NOUPDATE "B"]' in out, out
    assert b"ESEARCH" not in await d.send(b"x STORE 1:4 -FLAGS (\\Seen)\r\n")
