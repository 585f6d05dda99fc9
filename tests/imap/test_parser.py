"""The command parser over byte strings: every form, literals, splitting, limits, garbage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import commands as c
from mailnode.imap.errors import ParseError
from mailnode.imap.parser import CommandParser, Limits, NeedContinuation, parse_one
from mailnode.imap.sequences import SequenceSet


def events(data: bytes, limits: Limits | None = None) -> list[object]:
    """Everything the parser yields for ``data``, errors included as values."""
    p = CommandParser(limits)
    p.feed(data)
    out: list[object] = []
    while True:
        try:
            ev = p.next_event()
        except ParseError as exc:
            out.append(exc)
            if exc.fatal:
                return out
            continue
        if ev is None:
            return out
        out.append(ev)


@pytest.mark.parametrize(("line", "expected"), [
    (b"a1 CAPABILITY", c.Capability("a1")),
    (b"a1 capability", c.Capability("a1")),
    (b"a NOOP", c.Noop("a")),
    (b"a LOGOUT", c.Logout("a")),
    (b"a NAMESPACE", c.Namespace("a")),
    (b"a CHECK", c.Check("a")),
    (b"a CLOSE", c.Close("a")),
    (b"a UNSELECT", c.Unselect("a")),
    (b"a IDLE", c.Idle("a")),
    (b"a EXPUNGE", c.Expunge("a")),
    (b"a UID EXPUNGE 1:3", c.Expunge("a", SequenceSet(((1, 3),)))),
    (b"a LOGIN alice secret", c.Login("a", "alice", "secret")),
    (b'a LOGIN "alice" "sec \\"ret\\\\"', c.Login("a", "alice", 'sec "ret\\')),
    (b"a AUTHENTICATE PLAIN", c.Authenticate("a", "PLAIN", None)),
    (b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==",
     c.Authenticate("a", "PLAIN", b"\0alice\0secret")),
    (b"a AUTHENTICATE PLAIN =", c.Authenticate("a", "PLAIN", b"")),
    (b'a LIST "" *', c.ListCmd("a", "", "*")),
    (b'a LIST "" "%"', c.ListCmd("a", "", "%")),
    (b"a LIST Foo/ %", c.ListCmd("a", "Foo/", "%")),
    (b'a LSUB "" *', c.ListCmd("a", "", "*", lsub=True)),
    (b"a SELECT inbox", c.Select("a", "INBOX")),
    (b'a SELECT "Sent"', c.Select("a", "Sent")),
    (b"a EXAMINE INBOX", c.Select("a", "INBOX", readonly=True)),
    (b"a SELECT &AOk-t&AOk-", c.Select("a", "\u00e9t\u00e9")),
    (b"a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)",
     c.Status("a", "INBOX", ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT"))),
    (b"a CREATE Work/Projects", c.Create("a", "Work/Projects")),
    (b"a DELETE Work", c.Delete("a", "Work")),
    (b"a RENAME Work Play", c.Rename("a", "Work", "Play")),
    (b"a SUBSCRIBE Work", c.Subscribe("a", "Work")),
    (b"a UNSUBSCRIBE Work", c.Subscribe("a", "Work", subscribe=False)),
    (b"a ENABLE CONDSTORE", c.Enable("a", ("CONDSTORE",))),
    (b"a ID NIL", c.Id("a", None)),
    (b'a ID ("name" "mutt")', c.Id("a", (("name", "mutt"),))),
    (b"a FETCH 1 FLAGS", c.Fetch("a", SequenceSet(((1, 1),)), (c.FetchAttr("FLAGS"),))),
    (b"a UID FETCH 1:* (UID FLAGS)",
     c.Fetch("a", SequenceSet(((1, None),)), (c.FetchAttr("UID"), c.FetchAttr("FLAGS")), True)),
    (b"a FETCH 2 BODY.PEEK[]<0.100>",
     c.Fetch("a", SequenceSet(((2, 2),)),
             (c.FetchAttr("BODY", c.Section(), peek=True, partial=(0, 100)),))),
    (b"a FETCH 1 (BODY[1.2.MIME] BODY[TEXT] BODY[2.HEADER])",
     c.Fetch("a", SequenceSet(((1, 1),)), (
         c.FetchAttr("BODY", c.Section((1, 2), "MIME")),
         c.FetchAttr("BODY", c.Section((), "TEXT")),
         c.FetchAttr("BODY", c.Section((2,), "HEADER"))))),
    (b"a FETCH 1 BODY[HEADER.FIELDS (From Subject)]",
     c.Fetch("a", SequenceSet(((1, 1),)),
             (c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS", ("FROM", "SUBJECT"))),))),
    (b"a FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (X-A)]",
     c.Fetch("a", SequenceSet(((1, 1),)), (
         c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS.NOT", ("X-A",)), peek=True),))),
    (b"a FETCH 1 FAST", c.Fetch("a", SequenceSet(((1, 1),)), (
        c.FetchAttr("FLAGS"), c.FetchAttr("INTERNALDATE"), c.FetchAttr("RFC822.SIZE")))),
    (b"a FETCH 1 (RFC822 RFC822.HEADER RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)",
     c.Fetch("a", SequenceSet(((1, 1),)), tuple(c.FetchAttr(n) for n in (
         "RFC822", "RFC822.HEADER", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY")))),
    (b"a STORE 1:3 +FLAGS (\\Seen \\flagged)",
     c.StoreCmd("a", SequenceSet(((1, 3),)), "add", False,
                frozenset({"\\Seen", "\\Flagged"}))),
    (b"a UID STORE 5 -FLAGS.SILENT \\Deleted $Junk",
     c.StoreCmd("a", SequenceSet(((5, 5),)), "remove", True,
                frozenset({"\\Deleted", "$Junk"}), True)),
    (b"a STORE 1 FLAGS ()", c.StoreCmd("a", SequenceSet(((1, 1),)), "set", False, frozenset())),
    (b"a COPY 1:2 Trash", c.Copy("a", SequenceSet(((1, 2),)), "Trash")),
    (b"a UID COPY 4,6 Trash", c.Copy("a", SequenceSet(((4, 4), (6, 6))), "Trash", True)),
    (b"a UID MOVE 4 Trash", c.Copy("a", SequenceSet(((4, 4),)), "Trash", True, True)),
    (b"a SEARCH UNSEEN", c.Search("a", c.SearchFlag("\\Seen", False))),
    (b"a UID SEARCH CHARSET UTF-8 ALL",
     c.Search("a", c.SearchAll(), "UTF-8", True)),
    (b"a SEARCH NOT DELETED FLAGGED",
     c.Search("a", c.SearchAnd((c.SearchNot(c.SearchFlag("\\Deleted")),
                                c.SearchFlag("\\Flagged"))))),
    (b"a SEARCH OR SEEN (FLAGGED 1:3)",
     c.Search("a", c.SearchOr(c.SearchFlag("\\Seen"), c.SearchAnd((
         c.SearchFlag("\\Flagged"), c.SearchSeq(SequenceSet(((1, 3),)))))))),
    (b"a SEARCH UID 2:* SUBJECT \"hi there\" FROM alice",
     c.Search("a", c.SearchAnd((c.SearchUid(SequenceSet(((2, None),))),
                                c.SearchHeader("SUBJECT", "hi there"),
                                c.SearchHeader("FROM", "alice", envelope=True))))),
    (b"a SEARCH HEADER X-Tag v LARGER 10 SINCE 1-Feb-2024",
     c.Search("a", c.SearchAnd((c.SearchHeader("X-TAG", "v"), c.SearchSize(True, 10),
                                c.SearchDate("since", datetime(2024, 2, 1)))))),
])
def test_command_forms(line: bytes, expected: c.Command) -> None:
    assert parse_one(line + b"\r\n") == expected


def test_append_with_flags_date_and_literal() -> None:
    p = CommandParser()
    p.feed(b'a APPEND Sent (\\Seen) " 5-Mar-2024 10:11:12 +0100" {5}\r\n')
    assert p.next_event() == NeedContinuation(5)
    assert p.next_event() is None
    p.feed(b"hello\r\n")
    cmd = p.next_event()
    assert isinstance(cmd, c.Append)
    assert cmd.message.read() == b"hello"
    assert cmd.flags == {"\\Seen"}
    assert cmd.date == datetime(2024, 3, 5, 10, 11, 12, tzinfo=timezone(timedelta(hours=1)))


def test_literal_plus_needs_no_continuation() -> None:
    assert events(b"a APPEND INBOX {3+}\r\nabc\r\n") == [
        c.Append("a", "INBOX", frozenset(), None, c.LiteralBody(b"abc"))]


def test_literal_bytes_are_opaque() -> None:
    body = b"a {9}\r\n\"x\r\n\\\x00)"
    cmd = parse_one(b"t APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert isinstance(cmd, c.Append) and cmd.message.read() == body


def test_login_with_literals() -> None:
    p = CommandParser()
    p.feed(b"a LOGIN {5}\r\n")
    assert p.next_event() == NeedContinuation(5)
    p.feed(b"alice {6}\r\n")
    assert p.next_event() == NeedContinuation(6)
    assert p.next_event() is None
    p.feed(b"secret\r\n")
    assert p.next_event() == c.Login("a", "alice", "secret")
    # A client that sends everything at once (wrongly, but harmlessly) gets the same command.
    assert events(b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\n") == [
        c.Login("a", "alice", "secret")]


def test_braces_inside_quotes_are_not_literals() -> None:
    assert parse_one(b'a LOGIN alice "{5}"\r\n') == c.Login("a", "alice", "{5}")


def test_bare_lf_is_accepted() -> None:
    assert parse_one(b"a NOOP\n") == c.Noop("a")


@pytest.mark.parametrize("data", [
    b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\nb NOOP\r\n",
    b'a APPEND INBOX (\\Seen) {11+}\r\nhello\r\nyou\r\nb SEARCH OR 1 2\r\n',
    b"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\nb IDLE\r\n",
])
def test_split_at_every_byte_boundary(data: bytes) -> None:
    whole = [e for e in events(data) if not isinstance(e, NeedContinuation)]
    for cut in range(len(data) + 1):
        p = CommandParser()
        got: list[object] = []
        for chunk in (data[:cut], data[cut:]):
            p.feed(chunk)
            while (ev := p.next_event()) is not None:
                if not isinstance(ev, NeedContinuation):
                    got.append(ev)
        assert got == whole, cut
    bytewise = CommandParser()
    got = []
    for i in range(len(data)):
        bytewise.feed(data[i:i + 1])
        while (ev := bytewise.next_event()) is not None:
            if not isinstance(ev, NeedContinuation):
                got.append(ev)
    assert got == whole


@pytest.mark.parametrize(("line", "tag"), [
    (b"a FROB", "a"),
    (b"a1 FETCH", "a1"),
    (b"a1 FETCH 0 FLAGS", "a1"),
    (b"a1 FETCH 1 (FLAGS", "a1"),
    (b"a1 FETCH 1 BODY[FOO]", "a1"),
    (b"a1 FETCH 1 BODY[MIME]", "a1"),
    (b"x SELECT", "x"),
    (b"x LOGIN a", "x"),
    (b'x LOGIN "a b', "x"),
    (b"x NOOP extra", "x"),
    (b"x STORE 1 FLAGS \\Bogus", "x"),
    (b"x STATUS INBOX (FOO)", "x"),
    (b"x SEARCH FOO", "x"),
    (b"x UID FROB", "x"),
    (b"x APPEND INBOX \"hello\"", "x"),
    (b"x SELECT &Jjo", "x"),
    (b"NOOP", None),
    (b"*garbage*", None),
    (b"\x00\xff\xfe", None),
])
def test_errors_carry_the_tag(line: bytes, tag: str | None) -> None:
    out = events(line + b"\r\n" + b"z NOOP\r\n")
    assert isinstance(out[0], ParseError)
    assert out[0].tag == tag and not out[0].fatal
    assert out[1] == c.Noop("z")  # the parser recovers for the next command


def test_line_flood_is_fatal() -> None:
    limits = Limits(max_line=100)
    out = events(b"a " + b"x" * 200, limits)
    assert len(out) == 1 and isinstance(out[0], ParseError) and out[0].fatal


def test_synchronising_literal_too_large_is_refused_but_not_fatal() -> None:
    out = events(b"a APPEND INBOX {1000}\r\nb NOOP\r\n", Limits(max_literal=10))
    assert isinstance(out[0], ParseError) and out[0].tag == "a" and out[0].code == "TOOBIG"
    assert not out[0].fatal and out[1] == c.Noop("b")


def test_non_synchronising_literal_too_large_is_fatal() -> None:
    out = events(b"a APPEND INBOX {1000+}\r\n", Limits(max_literal=10))
    assert isinstance(out[0], ParseError) and out[0].fatal


def test_nesting_and_item_limits() -> None:
    deep = b"a SEARCH " + b"(" * 30 + b"ALL" + b")" * 30 + b"\r\n"
    assert isinstance(events(deep, Limits(max_depth=8))[0], ParseError)
    many = b"a SEARCH " + b" ".join([b"SEEN"] * 50) + b"\r\n"
    assert isinstance(events(many, Limits(max_items=20))[0], ParseError)
    nots = b"a SEARCH " + b"NOT " * 50 + b"ALL\r\n"
    assert isinstance(events(nots, Limits(max_depth=8))[0], ParseError)


def test_too_many_literals() -> None:
    data = b"a LOGIN" + b" {1+}\r\nx" * 5 + b"\r\n"
    assert isinstance(events(data, Limits(max_literals=3))[0], ParseError)


def test_next_line_for_continuations() -> None:
    p = CommandParser()
    p.feed(b"AGFsaWNl\r\nDONE\r\n")
    assert p.next_line() == b"AGFsaWNl"
    assert p.next_line() == b"DONE"
    assert p.next_line() is None


def test_passwords_stay_out_of_repr() -> None:
    cmd = parse_one(b"a LOGIN alice topsecret\r\n")
    assert "topsecret" not in repr(cmd)


def drain(chunks: list[bytes]) -> None:
    """Feed chunks and pull events; only ParseError may escape the parser."""
    p = CommandParser(Limits(max_line=200, max_literal=50))
    for chunk in chunks:
        p.feed(chunk)
        for _ in range(100):
            try:
                if p.next_event() is None:
                    break
            except ParseError:
                pass


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_fuzz_only_parse_errors(chunks: list[bytes]) -> None:
    drain(chunks)


_TOKENS = st.sampled_from([
    b"a", b"UID", b"FETCH", b"SEARCH", b"STORE", b"APPEND", b"LOGIN", b"(", b")", b"[", b"]",
    b"<", b">", b"1:*", b"*", b"\"", b"\\", b"{3}", b"{2+}", b"\r\n", b" ", b"BODY[", b"NOT",
    b"OR", b"HEADER.FIELDS", b"INBOX", b"\\Seen", b"+FLAGS", b"&", b"-", b"0", b"%"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=40))
def test_fuzz_grammar_shaped_input(tokens: list[bytes]) -> None:
    drain([b"t " + b"".join(tokens) + b"\r\n"])


def test_garbage_with_a_literal_marker_is_refused_without_continuation() -> None:
    p = CommandParser()
    p.feed(b"\x00\xff garbage {5}\r\n")
    with pytest.raises(ParseError) as err:
        p.next_event()
    assert err.value.tag is None and not err.value.fatal
    p.feed(b"a1 NOOP\r\n")
    assert isinstance(p.next_event(), c.Noop)


def test_repeated_fetch_items_parse_the_same_with_each_commands_tag_and_bounds() -> None:
    """A FETCH item list is parsed once per distinct text (clients repeat theirs for every
    page); every command still gets its own tag, sequence set and errors, the limits in force
    still apply, and an item list with literals is parsed in full."""
    items = b"(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)]) (CHANGEDSINCE 7)"
    first, second = events(b"a FETCH 1:5 " + items + b"\r\nb UID FETCH 9 " + items + b"\r\n")
    assert isinstance(first, c.Fetch) and isinstance(second, c.Fetch)
    assert (first.tag, first.seqset, first.uid) == ("a", SequenceSet.parse(b"1:5"), False)
    assert (second.tag, second.seqset, second.uid) == ("b", SequenceSet.parse(b"9"), True)
    assert first.attrs == second.attrs and first.changedsince == second.changedsince == 7
    assert [a.name for a in first.attrs] == ["UID", "FLAGS", "BODY"]
    assert first.attrs[2].section == c.Section((), "HEADER.FIELDS",
                                               ("FROM", "TO", "SUBJECT", "DATE"))
    bad = events(b"x FETCH 1 (UID BOGUS)\r\ny FETCH 2 (UID BOGUS)\r\n")
    assert [e.tag for e in bad if isinstance(e, ParseError)] == ["x", "y"]
    many = b"(" + b" ".join([b"UID"] * 30) + b")"
    assert isinstance(events(b"m FETCH 1 " + many + b"\r\n")[0], c.Fetch)
    assert isinstance(events(b"n FETCH 1 " + many + b"\r\n", Limits(max_items=20))[0],
                      ParseError)
    literal = events(b"l FETCH 1 (BODY.PEEK[HEADER.FIELDS ({7+}\r\nSUBJECT)])\r\n")[0]
    assert isinstance(literal, c.Fetch)
    assert literal.attrs[0].section == c.Section((), "HEADER.FIELDS", ("SUBJECT",))
