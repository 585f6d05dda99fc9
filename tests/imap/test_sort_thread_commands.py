"""SORT and THREAD (RFC 5256) as commands, over bytes, on both stores: parsing, the search
program, sequence numbers vs UIDs, and the response syntax."""

from __future__ import annotations

from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import Dialog


def message(subject: str, sender: str, date: str, mid: str, refs: str = "") -> bytes:
    extra = f"References: {refs}\r\nIn-Reply-To: {refs.split()[-1]}\r\n" if refs else ""
    return (f"From: {sender}\r\nTo: x@example.org\r\nSubject: {subject}\r\nDate: {date}\r\n"
            f"Message-ID: {mid}\r\n{extra}\r\nbody\r\n").encode()


MAIL = [
    message("Zebra", "c@example.org", "Mon, 01 Jan 2024 10:00:00 +0000", "<1@x>"),
    message("apple", "a@example.org", "Tue, 02 Jan 2024 10:00:00 +0000", "<2@x>"),
    message("Re: Zebra", "b@example.org", "Wed, 03 Jan 2024 10:00:00 +0000", "<3@x>", "<1@x>"),
    message("Mango", "b@example.org", "Sun, 31 Dec 2023 10:00:00 +0000", "<4@x>"),
]


async def selected(store: MailStore, notifier: ChangeNotifier) -> Dialog:
    d = Dialog(ImapSession(store, notifier))
    await d.login()
    for raw in MAIL:
        await d.send(b"a APPEND INBOX {%d}\r\n" % len(raw))
        assert b"a OK" in await d.send(raw + b"\r\n")
    assert b"s OK" in await d.send(b"s SELECT INBOX\r\n")
    return d


async def test_capabilities_are_advertised(dialog: Dialog) -> None:
    out = await dialog.send(b"c CAPABILITY\r\n")
    for cap in (b"SORT", b"SORT=DISPLAY", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES"):
        assert b" " + cap + b" " in out or b" " + cap + b"\r\n" in out


async def test_sort_orders_the_matches(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    assert b"* SORT 2 4 1 3\r\n" in await d.send(b"1 SORT (SUBJECT) UTF-8 ALL\r\n")
    assert b"* SORT 3 2 1 4\r\n" in await d.send(b"2 SORT (REVERSE DATE) UTF-8 ALL\r\n")
    assert b"* SORT 2 4 3 1\r\n" in await d.send(b"3 SORT (FROM DATE) US-ASCII ALL\r\n")
    # The search program narrows first; UID SORT answers uids.
    out = await d.send(b"4 SORT (DATE) UTF-8 NOT FROM a@example.org NOT SUBJECT re:\r\n")
    assert b"* SORT 4 1\r\n" in out
    out = await d.send(b"5 UID SORT (SUBJECT) UTF-8 ALL\r\n")
    assert b"* SORT 2 4 1 3\r\n" in out and b"5 OK UID SORT" in out
    assert b"* SORT\r\n" in await d.send(b"6 SORT (SIZE) UTF-8 SUBJECT nothing-like-this\r\n")


async def test_thread_groups_replies(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    out = await d.send(b"1 THREAD REFERENCES UTF-8 ALL\r\n")
    assert b"* THREAD (4)(1 3)(2)\r\n" in out, out
    # Grouped by base subject; threads in the order of their first message's date.
    out = await d.send(b"2 THREAD ORDEREDSUBJECT UTF-8 ALL\r\n")
    assert b"* THREAD (4)(1 3)(2)\r\n" in out, out
    assert b"* THREAD\r\n" in await d.send(b"3 THREAD REFERENCES UTF-8 SUBJECT nope\r\n")


async def test_bad_arguments(store: MailStore, notifier: ChangeNotifier) -> None:
    d = await selected(store, notifier)
    assert b"1 BAD" in await d.send(b"1 SORT (NOPE) UTF-8 ALL\r\n")
    assert b"2 BAD" in await d.send(b"2 SORT (REVERSE) UTF-8 ALL\r\n")
    assert b"3 BAD" in await d.send(b"3 SORT (SUBJECT) ALL\r\n")  # the charset is required
    assert b"4 BAD" in await d.send(b"4 THREAD FANCY UTF-8 ALL\r\n")
    assert b"5 NO [BADCHARSET" in await d.send(b"5 SORT (DATE) KOI8-R ALL\r\n")
    assert b"6 NO [BADCHARSET" in await d.send(b"6 THREAD REFERENCES X-NONE ALL\r\n")
