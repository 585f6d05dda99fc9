"""LITERAL- before login and LITERAL+ after it (RFC 7888), and UTF8=ACCEPT (RFC 6855): the
parser reads names as UTF-8 once the client enabled it, and the session writes them so."""

from __future__ import annotations

from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, Dialog

NAME = "Répertoire/日本".encode()


async def test_literal_minus_before_login_literal_plus_after(dialog: Dialog) -> None:
    greeting = dialog.session.greeting()
    assert b" LITERAL- " in greeting and b"LITERAL+" not in greeting
    caps = await dialog.send(b"C CAPABILITY\r\n")
    assert b" LITERAL- " in caps and b"LITERAL+" not in caps
    await dialog.login()
    caps = await dialog.send(b"C CAPABILITY\r\n")
    assert b" LITERAL+ " in caps and b"LITERAL-" not in caps


async def test_non_synchronising_literal_of_4096_is_taken_before_login(
        dialog: Dialog) -> None:
    reply = await dialog.send(b"a LOGIN alice {4096+}\r\n" + b"x" * 4096 + b"\r\n")
    assert reply.startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert (await dialog.login()).startswith(b"L OK")


async def test_larger_non_synchronising_literal_before_login_is_too_big(
        dialog: Dialog) -> None:
    reply = await dialog.send(b"a LOGIN alice {4097+}\r\n" + b"x" * 4097 + b"\r\n")
    assert reply.startswith(b"a BAD [TOOBIG]") and b"* BYE" in reply
    assert dialog.session.closed


async def test_synchronising_literal_above_4096_before_login_is_fine(dialog: Dialog) -> None:
    assert await dialog.send(b"a LOGIN alice {5000}\r\n") == b"+ Ready for literal data\r\n"
    reply = await dialog.send(b"y" * 5000 + b"\r\n")
    assert reply.startswith(b"a NO [AUTHENTICATIONFAILED]")


async def test_large_non_synchronising_literal_after_login(dialog: Dialog) -> None:
    await dialog.login()
    message = MESSAGE + b"z" * 20000
    reply = await dialog.send(b"A APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert b"A OK [APPENDUID" in reply


async def test_enable_reports_only_what_it_newly_enabled(dialog: Dialog) -> None:
    await dialog.login()
    caps = await dialog.send(b"C CAPABILITY\r\n")
    assert b" UTF8=ACCEPT" in caps
    assert await dialog.send(b"E ENABLE utf8=accept X-NOPE\r\n") == \
        b"* ENABLED UTF8=ACCEPT\r\nE OK ENABLE completed\r\n"
    assert await dialog.send(b"E ENABLE UTF8=ACCEPT\r\n") == \
        b"* ENABLED\r\nE OK ENABLE completed\r\n"


async def test_utf8_names_both_ways_once_enabled(store: MailStore,
                                                 notifier: ChangeNotifier) -> None:
    plain = Dialog(ImapSession(store, notifier))
    await plain.login()
    utf8 = Dialog(ImapSession(store, notifier))
    await utf8.login()
    await utf8.send(b"E ENABLE UTF8=ACCEPT\r\n")
    assert await utf8.send(b'C CREATE "' + NAME + b'"\r\n') == b"C OK CREATE completed\r\n"
    reply = await utf8.send(b'L LIST "" "R*"\r\n')
    assert b'* LIST (\\Noselect \\HasChildren) "/" "R\xc3\xa9pertoire"\r\n' in reply
    assert b'* LIST (\\HasNoChildren) "/" "' + NAME + b'"\r\n' in reply
    reply = await utf8.send(b'L LIST "" ("' + NAME + b'") RETURN (STATUS (MESSAGES))\r\n')
    assert b'* STATUS "' + NAME + b'" (MESSAGES 0)\r\n' in reply
    reply = await utf8.send(b'S STATUS "' + NAME + b'" (MESSAGES)\r\n')
    assert reply.startswith(b'* STATUS "' + NAME + b'" (MESSAGES 0)\r\n')
    # the other session still speaks modified UTF-7 about the same mailbox
    reply = await plain.send(b'L LIST "" "R*"\r\n')
    assert b'"R&AOk-pertoire/&ZeVnLA-"' in reply
    assert b"\xc3" not in reply


async def test_modified_utf7_is_plain_text_once_enabled(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"E ENABLE UTF8=ACCEPT\r\n")
    assert b"C OK" in await dialog.send(b"C CREATE &AOk-\r\n")
    reply = await dialog.send(b'L LIST "" "&*"\r\n')
    assert b'"/" "&AOk-"\r\n' in reply  # the name is the five characters sent


async def test_invalid_utf8_name_gets_no(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"E ENABLE UTF8=ACCEPT\r\n")
    assert (await dialog.send(b'C CREATE "\xff\xfe"\r\n')).startswith(b"C NO")
    assert (await dialog.send(b'L LIST "" "\xff*"\r\n')).startswith(b"L BAD")
    assert b"N OK" in await dialog.send(b"N NOOP\r\n")


async def test_search_charset_is_refused_once_enabled(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"S SELECT INBOX\r\n")
    assert b"S OK" in await dialog.send(b"S SEARCH CHARSET UTF-8 ALL\r\n")
    await dialog.send(b"E ENABLE UTF8=ACCEPT\r\n")
    assert (await dialog.send(b"S SEARCH CHARSET UTF-8 ALL\r\n")).startswith(b"S BAD")
    assert b"S OK" in await dialog.send(b'S SEARCH SUBJECT "caf\xc3\xa9"\r\n')


async def test_append_utf8_data(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"E ENABLE UTF8=ACCEPT\r\n")
    message = "From: José <jose@example.org>\r\nSubject: ¿Qué?\r\n\r\nhola\r\n".encode()
    reply = await dialog.send(b"A APPEND INBOX UTF8 (~{%d+}\r\n" % len(message) + message
                              + b")\r\n")
    assert b"A OK [APPENDUID" in reply
    await dialog.send(b"S SELECT INBOX\r\n")
    reply = await dialog.send(b"F FETCH 1 BODY.PEEK[]\r\n")
    assert b"{%d}\r\n" % len(message) + message in reply
    for bad in (b"A APPEND INBOX UTF8 ({3+}\r\nabc)", b"A APPEND INBOX UTF8 (~{3+}\r\nabc",
                b"A APPEND INBOX UTF8 ~{3+}\r\nabc"):
        assert (await dialog.send(bad + b"\r\n")).startswith(b"A BAD"), bad


async def test_quota_and_metadata_name_mailboxes_in_utf8_once_enabled(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"E ENABLE UTF8=ACCEPT\r\n")
    await dialog.send(b'C CREATE "' + NAME + b'"\r\n')
    reply = await dialog.send(b'Q GETQUOTAROOT "' + NAME + b'"\r\n')
    assert reply.startswith(b'* QUOTAROOT "' + NAME + b'"'), reply
    await dialog.send(b'M SETMETADATA "' + NAME + b'" (/private/comment "hi")\r\n')
    reply = await dialog.send(b'M GETMETADATA "' + NAME + b'" /private/comment\r\n')
    assert reply.startswith(b'* METADATA "' + NAME + b'" (/private/comment '), reply
