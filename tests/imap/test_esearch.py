"""ESEARCH (RFC 4731), ESORT and PARTIAL (RFC 5267) as dialogues over bytes, on both stores:
every return option, UID and sequence-number forms, empty results, the windows PARTIAL
selects, and the malformed and hostile RETURN lists that must get BAD (never a crash)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import esearch
from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import Dialog


def message(subject: str, date: str, size_pad: int = 0) -> bytes:
    return (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: <{subject}@x>\r\n\r\nbody{'x' * size_pad}\r\n"
            ).encode()


# Sent dates run against the append order, subjects sort differently again.
MAIL = [
    message("delta", "Fri, 05 Jan 2024 10:00:00 +0000"),
    message("alpha", "Thu, 04 Jan 2024 10:00:00 +0000"),
    message("echo", "Wed, 03 Jan 2024 10:00:00 +0000"),
    message("bravo", "Tue, 02 Jan 2024 10:00:00 +0000"),
    message("charlie", "Mon, 01 Jan 2024 10:00:00 +0000"),
    message("foxtrot", "Sun, 31 Dec 2023 10:00:00 +0000"),
]


async def selected(store: MailStore, notifier: ChangeNotifier, *, expunge_first: bool = True,
                   ) -> Dialog:
    """Six messages; with ``expunge_first`` the first is expunged, so uids (2..6) and
    sequence numbers (1..5) differ."""
    d = Dialog(ImapSession(store, notifier))
    assert (await d.login()).startswith(b"L OK")
    for raw in MAIL:
        await d.send(b"a APPEND INBOX {%d}\r\n" % len(raw))
        assert b"a OK" in await d.send(raw + b"\r\n")
    assert b"s OK" in await d.send(b"s SELECT INBOX\r\n")
    if expunge_first:
        await d.send(b"d STORE 1 +FLAGS (\\Deleted)\r\n")
        assert b"* 1 EXPUNGE" in await d.send(b"e EXPUNGE\r\n")
    return d


def lines(out: bytes) -> list[bytes]:
    return [line for line in out.split(b"\r\n") if line.startswith(b"* ESEARCH")]


async def test_capabilities_are_advertised(dialog: Dialog) -> None:
    await dialog.login()
    out = await dialog.send(b"c CAPABILITY\r\n")
    for cap in (b"ESEARCH", b"ESORT", b"CONTEXT=SEARCH", b"CONTEXT=SORT", b"SEARCHRES"):
        assert b" " + cap + b" " in out or b" " + cap + b"\r\n" in out, cap


async def test_search_return_options(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    cases = [
        (b"SEARCH RETURN (ALL) ALL", b'* ESEARCH (TAG "t") ALL 1:5'),
        (b"SEARCH RETURN () ALL", b'* ESEARCH (TAG "t") ALL 1:5'),
        (b"SEARCH RETURN (MIN) ALL", b'* ESEARCH (TAG "t") MIN 1'),
        (b"SEARCH RETURN (MAX) ALL", b'* ESEARCH (TAG "t") MAX 5'),
        (b"SEARCH RETURN (COUNT) ALL", b'* ESEARCH (TAG "t") COUNT 5'),
        (b"SEARCH RETURN (MIN MAX COUNT ALL) 2,4:5",
         b'* ESEARCH (TAG "t") MIN 2 MAX 5 ALL 2,4:5 COUNT 3'),
        (b"UID SEARCH RETURN (ALL) ALL", b'* ESEARCH (TAG "t") UID ALL 2:6'),
        (b"UID SEARCH RETURN (MIN MAX) ALL", b'* ESEARCH (TAG "t") UID MIN 2 MAX 6'),
        (b"UID SEARCH RETURN (COUNT) SUBJECT echo", b'* ESEARCH (TAG "t") UID COUNT 1'),
        # Nothing matches: MIN, MAX and ALL are left out, COUNT is 0.
        (b"SEARCH RETURN (MIN MAX ALL) 1000", b'* ESEARCH (TAG "t")'),
        (b"SEARCH RETURN (COUNT) SUBJECT nowhere", b'* ESEARCH (TAG "t") COUNT 0'),
        (b"UID SEARCH RETURN () 1000", b'* ESEARCH (TAG "t") UID'),
        (b"SEARCH RETURN (COUNT) CHARSET UTF-8 ALL", b'* ESEARCH (TAG "t") COUNT 5'),
    ]
    for command, expected in cases:
        out = await d.send(b"t " + command + b"\r\n")
        assert lines(out) == [expected], (command, out)
        assert b"* SEARCH" not in out and b"t OK" in out


async def test_partial_windows(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    cases = [
        (b"SEARCH RETURN (PARTIAL 1:1) ALL", b"PARTIAL (1:1 1)"),
        (b"SEARCH RETURN (PARTIAL 2:4) ALL", b"PARTIAL (2:4 2:4)"),
        (b"SEARCH RETURN (PARTIAL 4:2) ALL", b"PARTIAL (2:4 2:4)"),  # the range normalised
        (b"SEARCH RETURN (PARTIAL 1:9) ALL", b"PARTIAL (1:9 1:5)"),  # what exists of it
        (b"SEARCH RETURN (PARTIAL 6:6) ALL", b"PARTIAL (6:6 NIL)"),
        (b"SEARCH RETURN (PARTIAL 2:3) 1:2,4:5", b"PARTIAL (2:3 2,4)"),
        (b"UID SEARCH RETURN (PARTIAL 2:2) ALL", b"UID PARTIAL (2:2 3)"),
        (b"SEARCH RETURN (PARTIAL 2:3 COUNT MIN) ALL", b"MIN 1 PARTIAL (2:3 2:3) COUNT 5"),
        # The widest window costs what the results cost, not what the range spans.
        (b"SEARCH RETURN (PARTIAL 1:4294967295) ALL", b"PARTIAL (1:4294967295 1:5)"),
        (b"SEARCH RETURN (PARTIAL 4294967295:4294967295) ALL",
         b"PARTIAL (4294967295:4294967295 NIL)"),
    ]
    for command, expected in cases:
        out = await d.send(b"t " + command + b"\r\n")
        assert lines(out) == [b'* ESEARCH (TAG "t") ' + expected], (command, out)


@pytest.mark.parametrize("options", [
    b"(PARTIAL 1)", b"(PARTIAL 1:*)", b"(PARTIAL *:1)", b"(PARTIAL 0:3)", b"(PARTIAL)",
    b"(PARTIAL 1:2 PARTIAL 3:4)", b"(PARTIAL 1:2 ALL)", b"(PARTIAL 1:4294967296)",
    b"(PARTIAL 1:99999999999)", b"(MIN BOGUS)", b"(MIN", b"MIN", b"((MIN))",
    b"(" + b"MIN " * 40 + b"MAX)",
])
async def test_malformed_return_lists_are_bad(store: MailStore, notifier: ChangeNotifier,
                                             options: bytes) -> None:
    d = await selected(store, notifier)
    for verb in (b"SEARCH", b"UID SEARCH", b"SORT"):
        tail = b" (ARRIVAL) UTF-8 ALL" if verb == b"SORT" else b" ALL"
        out = await d.send(b"t " + verb + b" RETURN " + options + tail + b"\r\n")
        assert out.startswith(b"t BAD"), (verb, options, out)
    # The session goes on.
    assert lines(await d.send(b"u SEARCH RETURN (COUNT) ALL\r\n")) == [
        b'* ESEARCH (TAG "u") COUNT 5']


async def test_plain_search_and_sort_are_unchanged(store: MailStore,
                                                   notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    assert b"* SEARCH 1 2 3 4 5\r\n" in await d.send(b"t SEARCH ALL\r\n")
    assert b"* SORT 1 3 4 2 5\r\n" in await d.send(b"t SORT (SUBJECT) UTF-8 ALL\r\n")


async def test_esort_returns_sort_order(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    # Messages 1..5 are alpha(uid 2) echo bravo charlie foxtrot: by subject 1 3 4 2 5.
    cases = [
        (b"SORT RETURN (ALL) (SUBJECT) UTF-8 ALL", b"ALL 1,3:4,2,5"),
        (b"SORT RETURN () (SUBJECT) UTF-8 ALL", b"ALL 1,3:4,2,5"),
        # MIN/MAX: the first and last message in sort order (RFC 5267 3.1).
        (b"SORT RETURN (MIN MAX COUNT) (SUBJECT) UTF-8 ALL", b"MIN 1 MAX 5 COUNT 5"),
        (b"SORT RETURN (ALL) (DATE) UTF-8 ALL", b"ALL 5,4,3,2,1"),
        (b"SORT RETURN (MIN MAX) (DATE) UTF-8 ALL", b"MIN 5 MAX 1"),
        (b"SORT RETURN (PARTIAL 2:4) (DATE) UTF-8 ALL", b"PARTIAL (2:4 4,3,2)"),
        (b"SORT RETURN (PARTIAL 4:9) (REVERSE DATE) UTF-8 ALL", b"PARTIAL (4:9 4:5)"),
        (b"UID SORT RETURN (ALL) (SUBJECT) UTF-8 ALL", b"UID ALL 2,4:5,3,6"),
        (b"SORT RETURN (COUNT) (SUBJECT) UTF-8 SUBJECT nowhere", b"COUNT 0"),
    ]
    for command, expected in cases:
        out = await d.send(b"t " + command + b"\r\n")
        assert lines(out) == [b'* ESEARCH (TAG "t") ' + expected], (command, out)
        assert b"* SORT" not in out and b"t OK" in out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"MIN", b"MAX", b"ALL", b"COUNT", b"SAVE", b"UPDATE",
                                 b"CONTEXT", b"PARTIAL", b"1:5", b"0:1", b"5:1", b"1",
                                 b"4294967295:1", b"x", b"min", b"\xff"]), max_size=20))
def test_return_option_parsing_only_accepts_or_refuses(words: list[bytes]) -> None:
    """Any RETURN list parses into options or is refused with ValueError (BAD)."""
    try:
        opts = esearch.parse_return_options(words)
    except ValueError:
        return
    assert not (opts.partial and opts.all)
    if opts.partial is not None:
        assert 1 <= opts.partial[0] <= opts.partial[1] <= 0xFFFFFFFF


async def test_cancelupdate_flood_is_refused(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    out = await d.send(b"c CANCELUPDATE" + b' "t"' * 5000 + b"\r\n")
    assert out.startswith(b"c BAD"), out[:100]
    assert b"u OK" in await d.send(b"u NOOP\r\n")
