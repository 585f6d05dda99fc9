"""Identity of stored things is never reused: a session can only ever see its own mailbox.

Each test runs on the in-memory store and on the SQLite store (see conftest), so a store that
hands a deleted mailbox's id or UIDVALIDITY out again fails here.
"""

from __future__ import annotations

import re

from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, Dialog

BOB_SECRET = b"Subject: for bob only\r\n\r\nbob's secret\r\n"


def uidvalidity(out: bytes) -> int:
    m = re.search(rb"UIDVALIDITY (\d+)", out)
    assert m is not None, out
    return int(m.group(1))


async def session(store: MailStore, notifier: ChangeNotifier, login: bytes) -> Dialog:
    d = Dialog(ImapSession(store, notifier))
    assert (await d.send(b"L LOGIN " + login + b"\r\n")).startswith(b"L OK")
    return d


async def test_deleted_mailbox_never_shows_another_users_mail(
        store: MailStore, notifier: ChangeNotifier) -> None:
    alice1 = await session(store, notifier, b"alice secret")
    alice2 = await session(store, notifier, b"alice secret")
    bob = await session(store, notifier, b"bob hunter2")
    await alice1.send(b"c CREATE Work\r\n")
    await alice1.send(b"a APPEND Work {%d}\r\n" % len(MESSAGE))
    await alice1.send(MESSAGE + b"\r\n")
    assert b"s OK" in await alice1.send(b"s SELECT Work\r\n")
    assert b"d OK" in await alice2.send(b"d DELETE Work\r\n")
    # Bob's new mailbox is created right after: with reused ids it would be alice1's "Work".
    await bob.send(b"c CREATE Private\r\n")
    out = await bob.send(b"a APPEND Private {%d}\r\n" % len(BOB_SECRET))
    out += await bob.send(BOB_SECRET + b"\r\n")
    assert b"a OK" in out
    reply = await alice1.send(b"f FETCH 1:* (ENVELOPE BODY[])\r\n")
    assert reply.startswith(b"* BYE"), reply
    assert b"bob" not in reply and b"FETCH" not in reply
    assert alice1.session.closed


async def test_renamed_away_mailbox_ends_the_selecting_session(
        store: MailStore, notifier: ChangeNotifier) -> None:
    a1 = await session(store, notifier, b"alice secret")
    a2 = await session(store, notifier, b"alice secret")
    await a1.send(b"c CREATE Old\r\n")
    await a1.send(b"s SELECT Old\r\n")
    assert b"r OK" in await a2.send(b"r RENAME Old New\r\n")
    assert (await a1.send(b"n NOOP\r\n")).startswith(b"* BYE")


async def test_idle_session_on_deleted_mailbox_gets_bye(
        store: MailStore, notifier: ChangeNotifier) -> None:
    a1 = await session(store, notifier, b"alice secret")
    a2 = await session(store, notifier, b"alice secret")
    await a1.send(b"c CREATE Tmp\r\n")
    await a1.send(b"s SELECT Tmp\r\n")
    assert await a1.send(b"i IDLE\r\n") == b"+ idling\r\n"
    await a2.send(b"d DELETE Tmp\r\n")
    await a1.session.refresh()  # what the adapter does when the notifier fires
    assert a1.session.data_to_send().startswith(b"* BYE")
    assert a1.session.closed


async def test_own_delete_and_rename_deselect_without_bye(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"c CREATE A\r\n")
    await dialog.send(b"s SELECT A\r\n")
    assert b"r OK" in await dialog.send(b"r RENAME A B\r\n")
    assert b"BAD" in await dialog.send(b"f FETCH 1 FLAGS\r\n")  # no longer selected
    await dialog.send(b"s SELECT B\r\n")
    assert b"d OK" in await dialog.send(b"d DELETE B\r\n")
    assert b"n OK" in await dialog.send(b"n NOOP\r\n")


async def test_uidvalidity_grows_for_every_new_or_renamed_name(dialog: Dialog) -> None:
    await dialog.login()
    seen = []
    for _ in range(3):  # well within one second
        await dialog.send(b"c CREATE Box\r\n")
        seen.append(uidvalidity(await dialog.send(b"s STATUS Box (UIDVALIDITY)\r\n")))
        await dialog.send(b"d DELETE Box\r\n")
    await dialog.send(b"c CREATE Other\r\n")
    await dialog.send(b"r RENAME Other Box\r\n")
    seen.append(uidvalidity(await dialog.send(b"s STATUS Box (UIDVALIDITY)\r\n")))
    assert seen == sorted(set(seen)), seen
