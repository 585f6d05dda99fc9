"""RFC 3501 details Dovecot's imaptest found missing, as dialogues over bytes (each runs on the
in-memory and the SQLite store): RFC 2231 parameters in BODYSTRUCTURE, ENVELOPE groups and
source routes, SEARCH on parsed addresses, LSUB's \\Noselect parents, and NO for mailbox names
that are not valid modified UTF-7."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailnode.imap import utf7
from tests.imap.conftest import Dialog
from tests.imap.test_dialogues import append


async def selected(dialog: Dialog, *messages: bytes) -> None:
    await dialog.login()
    for message in messages:
        assert b"ap OK" in await append(dialog, message)
    assert b"s OK" in await dialog.send(b"s SELECT INBOX\r\n")


def msg(header: bytes, body: bytes = b"body\r\n") -> bytes:
    return b"Date: Thu, 15 Feb 2007 01:02:03 +0200\r\n" + header + b"\r\n" + body


async def test_rfc2231_parameters_in_bodystructure(dialog: Dialog) -> None:
    await selected(dialog, msg(
        b"From: a@b\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii;\r\n"
        b" title*0=\"long \"; title*1=\"title\";\r\n"
        b" name*=iso-8859-1'de'%E4rger.txt\r\n"
        b"Content-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''r%C3%A9; filename*1=sum; filename*2*=%C3%A9.pdf;\r\n"
        b" filename=plain.pdf\r\n"))
    out = await dialog.send(b"f FETCH 1 BODYSTRUCTURE\r\n")
    # Plain continuations joined; charset-encoded ones joined but kept as NAME* with their
    # charset, so the reply stays 7-bit and the client can decode it (the plain "sum"
    # section is percent-encoded into the value; the plain filename= loses to the sections).
    assert out == (
        b'* 1 FETCH (BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "us-ascii" "TITLE" "long title"'
        b' "NAME*" "iso-8859-1\'de\'%E4rger.txt") NIL NIL "7BIT" 6 1 NIL'
        b' ("ATTACHMENT" ("FILENAME*" "utf-8\'\'r%C3%A9sum%C3%A9.pdf")) NIL NIL))\r\n'
        b"f OK FETCH completed\r\n")


async def test_encoded_charset_parameter_still_decodes_the_body(dialog: Dialog) -> None:
    body = "café\r\n".encode("iso-8859-1")
    await selected(dialog, msg(b"From: a@b\r\nContent-Type: text/plain;"
                               b" charset*=''iso-8859-1\r\n", body))
    assert await dialog.send("f SEARCH CHARSET UTF-8 BODY {5+}\r\ncafé\r\n".encode()) == \
        b"* SEARCH 1\r\nf OK SEARCH completed\r\n"


async def test_envelope_groups_and_source_routes(dialog: Dialog) -> None:
    await selected(dialog, msg(
        b"From: <@r1.example,@r2.example:user@domain>\r\n"
        b"To: group: g1@d1.org, \"G Two\" <g2@d2.org>;, group2: g3@d3.org;\r\n"
        b"Cc: undisclosed-recipients:;, empty: (comment) ;\r\n"))
    out = await dialog.send(b"f FETCH 1 ENVELOPE\r\n")
    route = b'((NIL "@r1.example,@r2.example" "user" "domain"))'
    assert out == (
        b'* 1 FETCH (ENVELOPE ("Thu, 15 Feb 2007 01:02:03 +0200" NIL ' + route + b" "
        + route + b" " + route + b' ((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")'
        b'("G Two" NIL "g2" "d2.org")(NIL NIL NIL NIL)(NIL NIL "group2" NIL)'
        b'(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL))'
        b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)'
        b'(NIL NIL "empty" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))\r\n'
        b"f OK FETCH completed\r\n")


ADDRESS_MAIL = [
    msg(b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\n"),
    msg(b"From: =?utf-8?q?J=C3=B6rg_Real?= <user-from@domain.org>\r\nTo: RealTo <t@x.org>\r\n"),
    msg(b"From: <user-from (comment)@ (comment) domain.org>\r\n"),
    msg(b"From: user-from@domain.org (RealFrom)\r\nCc: a@b, c@d\r\n"),
    msg(b"From: x@y\r\nTo: groupname: groupuser1@domain.org;,\r\n  other: u3@domain.org;\r\n"),
    msg(b"From: x@y\r\nTo: groupname:;\r\nBcc: =?iso-8859-1?b?SvZyZw==?= <j@x>\r\n"),
]


@pytest.mark.parametrize(("criteria", "expected"), [
    ("FROM user-from@domain.org", b"1 2 3 4"),  # as displayed, comments and spaces gone
    ("FROM ser-from@dom", b"1 2 3 4"),
    ("FROM {5+}\r\njörg", b"2"),  # the encoded-word display name, decoded
    ("FROM \"rg real\"", b"2"),
    ("FROM realfrom", b"4"),  # the obsolete comment-as-name form
    ("FROM comment", b""),  # comments are not part of the address
    ("TO realto", b"2"),
    ("CC c@d", b"4"),
    ("TO groupname", b"5 6"),  # a group's name is in the envelope
    ("TO groupuser1", b"5"),
    ("TO other", b"5"),
    ("BCC {5+}\r\nJÖRG", b"6"),
    ("HEADER FROM comment", b"3"),  # HEADER still searches the field's text
    ("HEADER TO \"\"", b"1 2 5 6"),
])
async def test_search_on_parsed_addresses(dialog: Dialog, criteria: str,
                                          expected: bytes) -> None:
    await selected(dialog, *ADDRESS_MAIL)
    out = await dialog.send(f"f SEARCH CHARSET UTF-8 {criteria}\r\n".encode())
    assert out == b"* SEARCH" + (b" " + expected if expected else b"") + \
        b"\r\nf OK SEARCH completed\r\n"


async def test_lsub_shows_unsubscribed_parents_as_noselect(dialog: Dialog) -> None:
    await dialog.login()
    for name in (b"t", b"t/a", b"t/b", b"t/b/x", b"t/c/y"):
        assert b"c OK" in await dialog.send(b"c CREATE " + name + b"\r\n")
    for name in (b"t/a", b"t/b/x", b"t/c/y"):
        assert b"s OK" in await dialog.send(b"s SUBSCRIBE " + name + b"\r\n")
    out = await dialog.send(b'l LSUB "" t/%\r\n')
    assert out == (b'* LSUB (\\HasNoChildren) "/" "t/a"\r\n'
                   b'* LSUB (\\Noselect \\HasChildren) "/" "t/b"\r\n'
                   b'* LSUB (\\Noselect \\HasChildren) "/" "t/c"\r\n'
                   b"l OK LSUB completed\r\n")
    # With "*" the children themselves match: no parent is invented.
    out = await dialog.send(b'm LSUB "" t/*\r\n')
    assert out == (b'* LSUB (\\HasNoChildren) "/" "t/a"\r\n'
                   b'* LSUB (\\HasNoChildren) "/" "t/b/x"\r\n'
                   b'* LSUB (\\HasNoChildren) "/" "t/c/y"\r\n'
                   b"m OK LSUB completed\r\n")
    out = await dialog.send(b'n LSUB "" %\r\n')
    assert b'* LSUB (\\Noselect \\HasChildren) "/" "t"\r\n' in out
    assert b'"t/' not in out
    # "t" is not subscribed, but has subscribed children the pattern does not reach.
    assert await dialog.send(b'o LSUB "" t\r\n') == \
        b'* LSUB (\\Noselect \\HasChildren) "/" "t"\r\no OK LSUB completed\r\n'
    assert b"u OK" in await dialog.send(b"u UNSUBSCRIBE t/a\r\n")
    assert b"v OK" in await dialog.send(b"v SUBSCRIBE t\r\n")  # now it is: no \Noselect
    assert await dialog.send(b'w LSUB "" t/%\r\n') == (
        b'* LSUB (\\Noselect \\HasChildren) "/" "t/b"\r\n'
        b'* LSUB (\\Noselect \\HasChildren) "/" "t/c"\r\n'
        b"w OK LSUB completed\r\n")
    assert b'* LSUB (\\HasChildren) "/" "t"\r\n' in await dialog.send(b'y LSUB "" t\r\n')


@pytest.mark.parametrize("name", [
    b"&AGE-",  # printable ASCII must not be shifted
    b"&AOQ",  # unterminated
    b"&AOQ/-",  # "/" instead of ","
    b"&AOR-",  # stray low bits
    b"&AOQ=-",
    b"&2D0-",  # a lone surrogate
    b"\"!#$&'+,-.\"",
])
async def test_invalid_modified_utf7_names_get_no(dialog: Dialog, name: bytes) -> None:
    await dialog.login()
    for command in (b"CREATE %s", b"SELECT %s", b"EXAMINE %s", b"DELETE %s",
                    b"RENAME INBOX %s", b"RENAME %s x", b"SUBSCRIBE %s", b"STATUS %s (MESSAGES)"):
        out = await dialog.send(b"t " + command % name + b"\r\n")
        assert out.startswith(b"t NO "), (command, out)
    out = await dialog.send(b"a APPEND " + name + b" {1+}\r\nx\r\n")
    assert out.startswith(b"a NO "), out
    # A LIST pattern is not a name: it matches nothing here, and the command succeeds.
    assert await dialog.send(b'l LIST "" ' + name + b"\r\n") == b"l OK LIST completed\r\n"
    # The session goes on normally.
    assert await dialog.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"


async def test_syntax_errors_stay_bad(dialog: Dialog) -> None:
    await dialog.login()
    assert (await dialog.send(b"t CREATE\r\n")).startswith(b"t BAD ")
    assert (await dialog.send(b"t RENAME &AGE-\r\n")).startswith(b"t BAD ")


@given(st.text(max_size=20))
def test_utf7_round_trip_is_the_only_spelling(name: str) -> None:
    name = "".join(ch for ch in name if not 0xD800 <= ord(ch) <= 0xDFFF)
    wire = utf7.encode(name)
    assert utf7.decode(wire) == name
    shifted_ascii = wire.replace(b"a", b"&AGE-")
    if shifted_ascii != wire:
        with pytest.raises(utf7.Utf7Error):
            utf7.decode(shifted_ascii)
