"""Protocol dialogues in memory: bytes in, bytes out, no sockets."""

from __future__ import annotations

import base64
import re

from mailnode.imap.session import ImapSession
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, Dialog, no_mailboxid
from tests.imap.memstore import MemStore

CAPS_AFTER = (b"IMAP4rev1 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS SORT SORT=DISPLAY "
              b"THREAD=ORDEREDSUBJECT THREAD=REFERENCES UNSELECT CHILDREN "
              b"SPECIAL-USE MOVE ESEARCH ESORT CONTEXT=SEARCH CONTEXT=SORT SEARCHRES "
              b"METADATA QUOTA QUOTA=RES-STORAGE STATUS=SIZE COMPRESS=DEFLATE LIST-EXTENDED "
              b"LIST-STATUS BINARY MULTIAPPEND CATENATE UTF8=ACCEPT OBJECTID SAVEDATE "
              b"CREATE-SPECIAL-USE CONDSTORE QRESYNC")


def plain(authzid: str, authcid: str, password: str) -> bytes:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode())


async def test_greeting_carries_capabilities(dialog: Dialog) -> None:
    greeting = dialog.session.greeting()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"AUTH=PLAIN" in greeting and b"SASL-IR" in greeting
    assert b"LOGINDISABLED" not in greeting


async def test_login_ok_carries_capabilities(dialog: Dialog) -> None:
    assert await dialog.login() == b"L OK [CAPABILITY " + CAPS_AFTER + b"] Logged in\r\n"


async def test_login_failure(dialog: Dialog) -> None:
    assert await dialog.send(b"a LOGIN alice wrong\r\n") == \
        b"a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
    assert (await dialog.login()).startswith(b"L OK")


async def test_login_by_address(dialog: Dialog, alice_address: str) -> None:
    out = await dialog.send(b'a LOGIN "' + alice_address.encode() + b'" {6}\r\n')
    assert out == b"+ Ready for literal data\r\n"
    assert (await dialog.send(b"secret\r\n")).startswith(b"a OK [CAPABILITY")


async def test_authenticate_plain_with_continuation(dialog: Dialog) -> None:
    assert await dialog.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    out = await dialog.send(plain("", "alice", "secret") + b"\r\n")
    assert out == b"a OK [CAPABILITY " + CAPS_AFTER + b"] Logged in\r\n"


async def test_authenticate_plain_sasl_ir_with_authzid_repeated(dialog: Dialog) -> None:
    out = await dialog.send(b"a AUTHENTICATE PLAIN " + plain("alice", "alice", "secret") + b"\r\n")
    assert out.startswith(b"a OK [CAPABILITY")


async def test_authenticate_plain_authzid_address(dialog: Dialog, alice_address: str) -> None:
    ir = plain(alice_address, "alice", "secret")
    assert (await dialog.send(b"a AUTHENTICATE PLAIN " + ir + b"\r\n")).startswith(b"a OK")


async def test_authenticate_plain_other_authzid_refused(dialog: Dialog) -> None:
    out = await dialog.send(b"a AUTHENTICATE PLAIN " + plain("bob", "alice", "secret") + b"\r\n")
    assert out.startswith(b"a NO [AUTHORIZATIONFAILED]")
    assert not dialog.session.authenticated


async def test_authenticate_failures(dialog: Dialog) -> None:
    ir = plain("", "alice", "nope")
    out = await dialog.send(b"a AUTHENTICATE PLAIN " + ir + b"\r\n")
    assert out.startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert await dialog.send(b"b AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert (await dialog.send(b"*\r\n")).startswith(b"b BAD")
    assert (await dialog.send(b"c AUTHENTICATE CRAM-MD5\r\n")).startswith(b"c NO")
    assert (await dialog.send(b"d AUTHENTICATE PLAIN\r\n!!!\r\n")).endswith(
        b"d BAD Invalid base64 in authentication response\r\n")
    assert (await dialog.login()).startswith(b"L OK")


async def test_list_and_lsub(dialog: Dialog, store: MemStore) -> None:
    await dialog.login()
    assert no_mailboxid(await dialog.send(b"c CREATE Work/Projects\r\n")) \
        == b"c OK CREATE completed\r\n"
    out = await dialog.send(b'a LIST "" *\r\n')
    assert out == (b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
                   b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"\r\n'
                   b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"\r\n'
                   b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"\r\n'
                   b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n'
                   b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\n'
                   b'* LIST (\\Noselect \\HasChildren) "/" "Work"\r\n'
                   b'* LIST (\\HasNoChildren) "/" "Work/Projects"\r\n'
                   b"a OK LIST completed\r\n")
    assert await dialog.send(b'b LIST "" %\r\n') == out.replace(
        b'* LIST (\\HasNoChildren) "/" "Work/Projects"\r\n', b"").replace(b"a OK", b"b OK")
    assert await dialog.send(b'c LIST "" inbox\r\n') == \
        b'* LIST (\\HasNoChildren) "/" "INBOX"\r\nc OK LIST completed\r\n'
    assert await dialog.send(b"d LIST Work/ %\r\n") == \
        b'* LIST (\\HasNoChildren) "/" "Work/Projects"\r\nd OK LIST completed\r\n'
    assert await dialog.send(b'e LIST "" ""\r\n') == \
        b'* LIST (\\Noselect) "/" ""\r\ne OK LIST completed\r\n'
    lsub = await dialog.send(b'f LSUB "" *\r\n')
    assert lsub.count(b"* LSUB ") == 6  # the special mailboxes; Work/Projects is not subscribed
    assert await dialog.send(b"g SUBSCRIBE Work/Projects\r\n") == \
        b"g OK SUBSCRIBE completed\r\n"
    assert b'"Work/Projects"' in await dialog.send(b'h LSUB "" *\r\n')
    assert (await dialog.send(b"i SUBSCRIBE Nope\r\n")).startswith(b"i NO [NONEXISTENT]")
    await dialog.send(b"j UNSUBSCRIBE Work/Projects\r\n")
    await dialog.send(b"k UNSUBSCRIBE Trash\r\n")
    lsub = await dialog.send(b'l LSUB "" *\r\n')
    assert b"Work/Projects" not in lsub and b"Trash" not in lsub and lsub.count(b"* LSUB ") == 5


async def test_create_delete_rename(dialog: Dialog) -> None:
    await dialog.login()
    assert no_mailboxid(await dialog.send(b"a CREATE Stuff\r\n")) == b"a OK CREATE completed\r\n"
    assert await dialog.send(b"b CREATE Stuff\r\n") == \
        b"b NO [ALREADYEXISTS] Mailbox already exists\r\n"
    assert await dialog.send(b"c RENAME Stuff Things\r\n") == b"c OK RENAME completed\r\n"
    assert await dialog.send(b"d DELETE Things\r\n") == b"d OK DELETE completed\r\n"
    assert await dialog.send(b"e DELETE Things\r\n") == b"e NO [NONEXISTENT] No such mailbox\r\n"
    assert (await dialog.send(b"f DELETE Trash\r\n")).startswith(b"f NO [CANNOT]")
    assert (await dialog.send(b"g DELETE INBOX\r\n")).startswith(b"g NO [CANNOT]")
    assert no_mailboxid(await dialog.send(b"h CREATE &AOk-t&AOk-\r\n")) \
        == b"h OK CREATE completed\r\n"
    assert b'"&AOk-t&AOk-"' in await dialog.send(b'i LIST "" *\r\n')


async def append(dialog: Dialog, message: bytes = MESSAGE, flags: bytes = b"",
                 mailbox: bytes = b"INBOX") -> bytes:
    return await dialog.send(b"ap APPEND %s %s{%d+}\r\n" % (mailbox, flags, len(message))
                             + message + b"\r\n")


async def test_append_and_select(dialog: Dialog) -> None:
    await dialog.login()
    out = await dialog.send(b'a APPEND INBOX (\\Flagged) "01-Feb-2024 12:00:00 +0000" {%d}\r\n'
                            % len(MESSAGE))
    assert out == b"+ Ready for literal data\r\n"
    out = await dialog.send(MESSAGE + b"\r\n")
    assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1\] APPEND completed\r\n", out)
    await append(dialog, flags=b"(\\Seen) ")
    out = await dialog.send(b"s SELECT INBOX\r\n")
    uidvalidity = re.search(rb"UIDVALIDITY (\d+)", out)
    assert uidvalidity is not None
    mailboxid = re.search(rb"MAILBOXID \((M[0-9a-f]{24})\)", out)
    assert mailboxid is not None
    assert out == (b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                   b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]"
                   b" Permanent flags\r\n"
                   b"* 2 EXISTS\r\n* 2 RECENT\r\n"  # this session is the first to see them
                   b"* OK [UNSEEN 1] First unseen message\r\n"
                   b"* OK [UIDVALIDITY " + uidvalidity.group(1) + b"] UIDs valid\r\n"
                   b"* OK [UIDNEXT 3] Predicted next UID\r\n"
                   b"* OK [MAILBOXID (" + mailboxid.group(1) + b")] Ok\r\n"
                   b"* OK [HIGHESTMODSEQ 3] Highest\r\n"  # RFC 7162: two appends since 1
                   b"s OK [READ-WRITE] SELECT completed\r\n")
    out = await dialog.send(b"f FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)\r\n")
    assert out == (b"* 1 FETCH (FLAGS (\\Flagged \\Recent) "
                   b'INTERNALDATE " 1-Feb-2024 12:00:00 +0000" '
                   b"RFC822.SIZE %d)\r\nf OK FETCH completed\r\n" % len(MESSAGE))
    assert (await dialog.send(b"x APPEND Nope {1+}\r\nx\r\n")).startswith(b"x NO [TRYCREATE]")
    out = await dialog.send(b"st STATUS INBOX (MESSAGES UNSEEN UIDNEXT RECENT)\r\n")
    # RECENT 0: the SELECT above claimed both messages as recent for its own session
    assert out == (b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 UIDNEXT 3 RECENT 0)\r\n'
                   b"st OK STATUS completed\r\n")


async def test_append_into_selected_mailbox_reports_exists(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"s SELECT INBOX\r\n")
    out = await append(dialog)
    assert out.startswith(b"* 1 EXISTS\r\n* 1 RECENT\r\nap OK [APPENDUID ")


async def test_fetch_bodies_and_seen(dialog: Dialog) -> None:
    await dialog.login()
    await append(dialog)
    await dialog.send(b"s SELECT INBOX\r\n")
    out = await dialog.send(b"a FETCH 1 BODY.PEEK[]\r\n")
    assert out == b"* 1 FETCH (BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE + \
        b")\r\na OK FETCH completed\r\n"
    out = await dialog.send(b"b FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)] BODY[TEXT]<3.3>)\r\n")
    assert out == (b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {24}\r\n"
                   b"Subject: Hello there\r\n\r\n BODY[TEXT]<3> {3}\r\nBob "
                   b"FLAGS (\\Seen \\Recent))\r\nb OK FETCH completed\r\n")
    out = await dialog.send(b"c UID FETCH 1 (RFC822.SIZE RFC822.HEADER)\r\n")
    header = MESSAGE[:MESSAGE.index(b"\r\n\r\n") + 4]
    assert out == (b"* 1 FETCH (UID 1 RFC822.SIZE %d RFC822.HEADER {%d}\r\n"
                   % (len(MESSAGE), len(header)) + header + b")\r\nc OK UID FETCH completed\r\n")
    out = await dialog.send(b"d FETCH 1 ALL\r\n")
    assert b"ENVELOPE (\"Mon, 01 Jan 2024 10:00:00 +0000\" \"Hello there\"" in out
    out = await dialog.send(b"e FETCH 1 FULL\r\n")
    assert b' BODY ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 28 2)' in out
    assert (await dialog.send(b"f FETCH 5 FLAGS\r\n")).startswith(b"f BAD")
    assert await dialog.send(b"g UID FETCH 5 FLAGS\r\n") == b"g OK UID FETCH completed\r\n"


async def test_examine_does_not_set_seen(dialog: Dialog) -> None:
    await dialog.login()
    await append(dialog)
    assert b"[READ-ONLY]" in await dialog.send(b"s EXAMINE INBOX\r\n")
    out = await dialog.send(b"a FETCH 1 (RFC822)\r\n")
    assert b"FLAGS" not in out
    assert (await dialog.send(b"b STORE 1 +FLAGS \\Seen\r\n")).startswith(b"b NO [READ-ONLY]")
    # EXAMINE claims nothing: the message stays \Recent (for the next SELECT, too)
    assert await dialog.send(b"c FETCH 1 FLAGS\r\n") == \
        b"* 1 FETCH (FLAGS (\\Recent))\r\nc OK FETCH completed\r\n"
    assert b"* 1 RECENT" in await dialog.send(b"s SELECT INBOX\r\n")


async def test_store(dialog: Dialog) -> None:
    await dialog.login()
    for _ in range(3):
        await append(dialog)
    await dialog.send(b"s SELECT INBOX\r\n")
    assert await dialog.send(b"a STORE 1:2 +FLAGS (\\Seen \\Flagged)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))\r\n"
        b"* 2 FETCH (FLAGS (\\Flagged \\Seen \\Recent))\r\n"
        b"a OK STORE completed\r\n")
    assert await dialog.send(b"b STORE 2 -FLAGS.SILENT (\\Flagged)\r\n") == \
        b"b OK STORE completed\r\n"
    assert await dialog.send(b"c UID STORE 3 FLAGS ($Label1 \\Answered)\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)\r\n"  # announced first
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] "
        b"Permanent flags\r\n"
        b"* 3 FETCH (UID 3 FLAGS (\\Answered \\Recent $Label1))\r\nc OK UID STORE completed\r\n")
    assert await dialog.send(b"d FETCH 1:* FLAGS\r\n") == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))\r\n"
        b"* 2 FETCH (FLAGS (\\Seen \\Recent))\r\n"
        b"* 3 FETCH (FLAGS (\\Answered \\Recent $Label1))\r\nd OK FETCH completed\r\n")


async def test_search(dialog: Dialog) -> None:
    await dialog.login()
    await append(dialog, flags=b"(\\Seen) ")
    await append(dialog, MESSAGE.replace(b"Hello there", b"Other topic"), b"(\\Flagged) ")
    await append(dialog, flags=b"(\\Deleted \\Seen) ")
    await dialog.send(b"s SELECT INBOX\r\n")

    async def search(criteria: bytes) -> bytes:
        out = await dialog.send(b"q " + criteria + b"\r\n")
        assert out.endswith(b"q OK SEARCH completed\r\n") or out.endswith(
            b"q OK UID SEARCH completed\r\n"), out
        return out.split(b"\r\n")[0]

    assert await search(b"SEARCH ALL") == b"* SEARCH 1 2 3"
    assert await search(b"SEARCH UNSEEN") == b"* SEARCH 2"
    assert await search(b"SEARCH SEEN NOT DELETED") == b"* SEARCH 1"
    assert await search(b"SEARCH OR FLAGGED DELETED") == b"* SEARCH 2 3"
    assert await search(b"SEARCH 2:*") == b"* SEARCH 2 3"
    assert await search(b"UID SEARCH UID 1,3") == b"* SEARCH 1 3"
    assert await search(b"SEARCH SUBJECT other") == b"* SEARCH 2"
    assert await search(b'SEARCH FROM "alice@example" NOT SUBJECT other') == b"* SEARCH 1 3"
    assert await search(b"SEARCH TO bob BODY \"the body\"") == b"* SEARCH 1 2 3"
    assert await search(b"SEARCH HEADER Message-ID <1@") == b"* SEARCH 1 2 3"
    assert await search(b"SEARCH SENTON 1-Jan-2024 LARGER 10") == b"* SEARCH 1 2 3"
    assert await search(b"SEARCH SENTBEFORE 1-Jan-2024") == b"* SEARCH"
    assert await search(b"SEARCH (DELETED) (SEEN)") == b"* SEARCH 3"
    assert await search(b"SEARCH NEW") == b"* SEARCH 2"  # recent and unseen
    assert await search(b"SEARCH RECENT") == b"* SEARCH 1 2 3"
    assert await search(b"SEARCH OLD") == b"* SEARCH"
    assert (await dialog.send(b"x SEARCH CHARSET KOI8-R ALL\r\n")).startswith(b"x NO [BADCHARSET")


async def test_expunge_close_unselect(dialog: Dialog) -> None:
    await dialog.login()
    for flags in (b"", b"(\\Deleted) ", b"", b"(\\Deleted) "):
        await append(dialog, flags=flags)
    await dialog.send(b"s SELECT INBOX\r\n")
    # RECENT again after the EXPUNGEs: the session's \Recent count changed with them
    assert await dialog.send(b"a UID EXPUNGE 4\r\n") == \
        b"* 4 EXPUNGE\r\n* 3 RECENT\r\na OK EXPUNGE completed\r\n"
    await append(dialog)
    assert await dialog.send(b"b EXPUNGE\r\n") == \
        b"* 2 EXPUNGE\r\n* 3 RECENT\r\nb OK EXPUNGE completed\r\n"
    assert await dialog.send(b"c SEARCH ALL\r\n") == b"* SEARCH 1 2 3\r\nc OK SEARCH completed\r\n"
    out = await dialog.send(b"d STORE 1 +FLAGS.SILENT \\Deleted\r\n")
    assert out == b"d OK STORE completed\r\n"
    assert await dialog.send(b"e UNSELECT\r\n") == b"e OK UNSELECT completed\r\n"
    assert b"* 3 EXISTS" in await dialog.send(b"f SELECT INBOX\r\n")
    assert await dialog.send(b"g CLOSE\r\n") == b"g OK CLOSE completed\r\n"
    assert b"* 2 EXISTS" in await dialog.send(b"h EXAMINE INBOX\r\n")
    assert (await dialog.send(b"i EXPUNGE\r\n")).startswith(b"i NO [READ-ONLY]")


async def test_copy_and_move(dialog: Dialog) -> None:
    await dialog.login()
    await append(dialog)
    await append(dialog)
    await dialog.send(b"s SELECT INBOX\r\n")
    out = await dialog.send(b"a COPY 1:2 Trash\r\n")
    assert re.fullmatch(rb"a OK \[COPYUID \d+ 1:2 1:2\] COPY completed\r\n", out)
    assert (await dialog.send(b"b COPY 1 Nope\r\n")).startswith(b"b NO [TRYCREATE]")
    out = await dialog.send(b"c UID MOVE 2 Drafts\r\n")
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 2 1\] Moved\r\n\* 2 EXPUNGE\r\n\* 1 RECENT\r\n"
                        rb"c OK UID MOVE completed\r\n", out), out
    out = await dialog.send(b"d STATUS Drafts (MESSAGES)\r\n")
    assert out.startswith(b'* STATUS "Drafts" (MESSAGES 1)')


async def test_idle_in_memory(dialog: Dialog, store: MemStore) -> None:
    await dialog.login()
    await dialog.send(b"s SELECT INBOX\r\n")
    assert await dialog.send(b"i IDLE\r\n") == b"+ idling\r\n"
    watch = dialog.session.idle_watch
    assert watch is not None
    inbox = await store.get_mailbox(1, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, MESSAGE, frozenset(), None)
    assert store.notifier.version(watch[0]) != watch[1]
    await dialog.session.refresh()
    assert dialog.session.data_to_send() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    await store.store_flags(inbox.id, [1], frozenset({"\\Deleted"}), "add")
    await dialog.session.refresh()
    assert dialog.session.data_to_send() == \
        b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))\r\n"
    await store.expunge(inbox.id)
    await dialog.session.refresh()
    assert dialog.session.data_to_send() == b"* 1 EXPUNGE\r\n* 0 RECENT\r\n"
    assert await dialog.send(b"DONE\r\n") == b"i OK IDLE terminated\r\n"
    assert dialog.session.idle_watch is None


async def test_two_sessions_rfc2180(store: MemStore, notifier: ChangeNotifier) -> None:
    a, b = Dialog(ImapSession(store, notifier)), Dialog(ImapSession(store, notifier))
    for d in (a, b):
        await d.login()
    for _ in range(3):
        await append(a)
    await a.send(b"s SELECT INBOX\r\n")
    await b.send(b"s SELECT INBOX\r\n")
    await a.send(b"x STORE 2 +FLAGS.SILENT \\Deleted\r\n")
    assert await a.send(b"y EXPUNGE\r\n") == \
        b"* 2 EXPUNGE\r\n* 2 RECENT\r\ny OK EXPUNGE completed\r\n"
    # FETCH/STORE/SEARCH must not announce the expunge; b still sees the message as number 3.
    out = await b.send(b"f FETCH 3 UID\r\n")
    assert out == b"* 3 FETCH (UID 3)\r\nf OK FETCH completed\r\n"
    assert await b.send(b"g SEARCH ALL\r\n") == b"* SEARCH 1 2 3\r\ng OK SEARCH completed\r\n"
    assert await b.send(b"n NOOP\r\n") == b"* 2 EXPUNGE\r\nn OK NOOP completed\r\n"
    await a.send(b"z STORE 1 +FLAGS \\Flagged\r\n")
    await append(a)
    # a appended while selected, so a heard of the new message first: \Recent is a's alone
    assert await b.send(b"n NOOP\r\n") == (b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n"
                                           b"* 3 EXISTS\r\n* 0 RECENT\r\n"
                                           b"n OK NOOP completed\r\n")
    assert b"\\Recent" in await a.send(b"m FETCH 3 FLAGS\r\n")
    assert await b.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"


async def test_garbage_gets_bad_and_session_continues(dialog: Dialog) -> None:
    assert await dialog.send(b"\x00\x01 garbage\r\n") == b"* BAD Missing or invalid tag\r\n"
    assert (await dialog.send(b"a FROB\r\n")).startswith(b"a BAD Unknown command")
    assert (await dialog.login()).startswith(b"L OK")
    assert await dialog.send(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


async def test_line_flood_closes_with_bye(store: MemStore, notifier: ChangeNotifier) -> None:
    from mailnode.imap.parser import Limits
    d = Dialog(ImapSession(store, notifier, limits=Limits(max_line=1000)))
    out = await d.send(b"a " + b"x" * 5000)
    assert out == b"a BAD Line too long\r\n* BYE Protocol error, closing connection\r\n"
    assert d.session.closed


async def test_logout_namespace_id_enable(dialog: Dialog) -> None:
    assert await dialog.send(b"a ID (\"name\" \"test\")\r\n") == \
        b'* ID ("name" "mailnode")\r\na OK ID completed\r\n'
    await dialog.login()
    assert await dialog.send(b"b NAMESPACE\r\n") == \
        b'* NAMESPACE (("" "/")) NIL NIL\r\nb OK NAMESPACE completed\r\n'
    assert await dialog.send(b"c ENABLE UTF8=ACCEPT\r\n") == \
        b"* ENABLED UTF8=ACCEPT\r\nc OK ENABLE completed\r\n"
    assert await dialog.send(b"d LOGOUT\r\n") == \
        b"* BYE mailnode logging out\r\nd OK LOGOUT completed\r\n"
    assert dialog.session.closed


async def test_search_sees_through_transfer_encodings(dialog: Dialog) -> None:
    import base64

    await dialog.login()
    b64 = base64.b64encode("Grüße aus Köln\n".encode()).decode()
    await append(dialog, (
        "From: a@b\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
        f"\r\n{b64}\r\n").encode())
    await append(dialog, (
        b"From: a@b\r\nSubject: qp\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nna=EFve r=E9sum=E9\r\n"))
    await dialog.send(b"s SELECT INBOX\r\n")

    async def search(criteria: str) -> bytes:
        out = await dialog.send(b"q SEARCH CHARSET UTF-8 " + criteria.encode() + b"\r\n")
        return out.split(b"\r\n")[0]

    assert await search('BODY "köln"') == b"* SEARCH 1"
    assert await search('BODY "résumé"') == b"* SEARCH 2"
    assert await search('TEXT "café"') == b"* SEARCH 1"  # an encoded-word header
    assert await search('BODY "café"') == b"* SEARCH"  # BODY leaves the header out
