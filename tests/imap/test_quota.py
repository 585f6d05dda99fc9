"""RFC 9208 QUOTA over bytes on both stores: GETQUOTA/GETQUOTAROOT report the user's usage
and limit, APPEND and COPY past the limit get [OVERQUOTA] (MOVE does not count twice),
SETQUOTA is refused, STATUS SIZE/DELETED/DELETED-STORAGE; delivery from other nodes is
deferred when the mailbox is full."""

from __future__ import annotations

import pytest

from mailnode.store.api import MailStore, OverQuota
from mailnode.store.sqlite import SqlStore
from tests.imap.conftest import MESSAGE, Dialog

LIMIT = 3 * 1024
"""Room for a few MESSAGEs (about 200 bytes each) and not for a 3 KiB one."""


def limit(store: MailStore, octets: int | None) -> None:
    store.user_quota = octets  # type: ignore[attr-defined]  # both stores have it


def append(message: bytes = MESSAGE, box: bytes = b"INBOX") -> bytes:
    return b"A APPEND %s {%d+}\r\n%s\r\n" % (box, len(message), message)


async def test_no_limit_reports_a_root_with_no_resources(dialog: Dialog) -> None:
    await dialog.login()
    assert await dialog.send(b"a GETQUOTAROOT INBOX\r\n") == (
        b'* QUOTAROOT "INBOX"\r\na OK GETQUOTAROOT completed\r\n')
    assert await dialog.send(b'b GETQUOTA ""\r\n') == (
        b"b NO [NONEXISTENT] No such quota root\r\n")


async def test_usage_and_limit_in_kib(dialog: Dialog, store: MailStore) -> None:
    limit(store, LIMIT)
    await dialog.login()
    assert (await dialog.send(append())).startswith(b"A OK")
    await dialog.send(append(box=b"Sent"))
    used = -(-2 * len(MESSAGE) // 1024)  # both mailboxes count; rounded up
    assert await dialog.send(b"a GETQUOTAROOT Sent\r\n") == (
        b'* QUOTAROOT "Sent" ""\r\n* QUOTA "" (STORAGE %d 3)\r\n'
        b"a OK GETQUOTAROOT completed\r\n" % used)
    assert await dialog.send(b'b GETQUOTA ""\r\n') == (
        b'* QUOTA "" (STORAGE %d 3)\r\nb OK GETQUOTA completed\r\n' % used)
    assert (await dialog.send(b"c GETQUOTA other\r\n")).startswith(b"c NO [NONEXISTENT]")
    assert (await dialog.send(b"d GETQUOTAROOT Nope\r\n")).startswith(b"d NO [NONEXISTENT]")


async def test_append_and_copy_past_the_quota_are_refused(dialog: Dialog,
                                                          store: MailStore) -> None:
    limit(store, LIMIT)
    await dialog.login()
    big = MESSAGE + b"x" * (LIMIT - 2 * len(MESSAGE))
    assert (await dialog.send(append(big))).startswith(b"A OK")
    out = await dialog.send(append(big))
    assert out == b"A NO [OVERQUOTA] Storage quota exceeded\r\n"
    assert (await dialog.send(append())).startswith(b"A OK")  # a small one still fits
    await dialog.send(b"s SELECT INBOX\r\n")
    assert await dialog.send(b"c COPY 1 Sent\r\n") == (
        b"c NO [OVERQUOTA] Storage quota exceeded\r\n")
    # MOVE takes no more room, so it is allowed at the limit
    assert (await dialog.send(b"m MOVE 1 Sent\r\n")).endswith(b"m OK MOVE completed\r\n")
    # deleting makes room again
    await dialog.send(b"e SELECT Sent\r\nf STORE 1 +FLAGS \\Deleted\r\ng EXPUNGE\r\n")
    assert (await dialog.send(append(big))).startswith(b"A OK")


async def test_setquota_is_refused_and_bad_syntax_gets_bad(dialog: Dialog) -> None:
    await dialog.login()
    assert (await dialog.send(b'a SETQUOTA "" (STORAGE 512)\r\n')).startswith(b"a NO [NOPERM]")
    for line in [b"GETQUOTA", b"GETQUOTAROOT", b'SETQUOTA ""', b'SETQUOTA "" (STORAGE)',
                 b'SETQUOTA "" (STORAGE x)', b'GETQUOTA "" extra', b"GETQUOTAROOT INBOX x"]:
        out = await dialog.send(b"t " + line + b"\r\n")
        assert out.startswith(b"t BAD "), (line, out)


async def test_status_size_and_deleted(dialog: Dialog) -> None:
    await dialog.login()
    other = MESSAGE + b"y" * 3000
    await dialog.send(append() + append(other))
    await dialog.send(b"s SELECT INBOX\r\nf STORE 2 +FLAGS \\Deleted\r\n")
    out = await dialog.send(b"a STATUS INBOX (MESSAGES SIZE DELETED DELETED-STORAGE)\r\n")
    assert out == (b'* STATUS "INBOX" (MESSAGES 2 SIZE %d DELETED 1 DELETED-STORAGE %d)\r\n'
                   b"a OK STATUS completed\r\n"
                   % (len(MESSAGE) + len(other), -(-len(other) // 1024)))
    out = await dialog.send(b"b STATUS Trash (SIZE DELETED)\r\n")
    assert out.startswith(b'* STATUS "Trash" (SIZE 0 DELETED 0)\r\n')


async def test_inbound_delivery_past_the_quota_is_refused(store: MailStore) -> None:
    if not isinstance(store, SqlStore):
        pytest.skip("inbound delivery is the SQLite store's")
    limit(store, LIMIT)
    user = await store.find_user("alice")
    assert user is not None
    assert await store.deliver_inbound(user.id, b"k" * 32, b"m" * 16, MESSAGE)
    with pytest.raises(OverQuota):
        await store.deliver_inbound(user.id, b"k" * 32, b"n" * 16, b"x" * LIMIT)
    # not remembered as received: the sender's retry is filed once there is room
    limit(store, None)
    assert await store.deliver_inbound(user.id, b"k" * 32, b"n" * 16, b"x" * LIMIT)
    assert (await store.usage(user.id)).messages == 2
