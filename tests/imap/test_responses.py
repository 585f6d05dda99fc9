"""Responses are objects serialised in one place: each type's exact bytes, and every type
the handlers can emit is one the serialiser knows."""

from __future__ import annotations

import pytest

from mailnode.imap import responses as r

SAMPLES: dict[type[r.Response], tuple[r.Response, bytes]] = {
    r.Condition: (r.Condition("OK", "UIDs valid", "UIDVALIDITY 7"),
                  b"* OK [UIDVALIDITY 7] UIDs valid\r\n"),
    r.Tagged: (r.Tagged("a1", "NO", "No such mailbox", "NONEXISTENT"),
               b"a1 NO [NONEXISTENT] No such mailbox\r\n"),
    r.Continuation: (r.Continuation(), b"+ \r\n"),
    r.Exists: (r.Exists(3), b"* 3 EXISTS\r\n"),
    r.Recent: (r.Recent(0), b"* 0 RECENT\r\n"),
    r.Expunge: (r.Expunge(2), b"* 2 EXPUNGE\r\n"),
    r.Vanished: (r.Vanished([1, 2, 3, 7], earlier=True), b"* VANISHED (EARLIER) 1:3,7\r\n"),
    r.Flags: (r.Flags(["\\Seen", "$Junk"]), b"* FLAGS (\\Seen $Junk)\r\n"),
    r.Fetch: (r.Fetch(4, 9, {"$x", "\\Seen"}, 12),
              b"* 4 FETCH (UID 9 FLAGS (\\Seen $x) MODSEQ (12))\r\n"),
    r.CapabilityData: (r.CapabilityData("IMAP4rev1 IDLE"), b"* CAPABILITY IMAP4rev1 IDLE\r\n"),
    r.Enabled: (r.Enabled(["CONDSTORE"]), b"* ENABLED CONDSTORE\r\n"),
    r.IdData: (r.IdData([("name", "mailnode")]), b'* ID ("name" "mailnode")\r\n'),
    r.NamespaceData: (r.NamespaceData("", "/"), b'* NAMESPACE (("" "/")) NIL NIL\r\n'),
    r.ListData: (r.ListData(["\\HasNoChildren"], "/", b'"a b"', lsub=True),
                 b'* LSUB (\\HasNoChildren) "/" "a b"\r\n'),
    r.StatusData: (r.StatusData(b"INBOX", [("MESSAGES", 2), ("MAILBOXID", "(F1)")]),
                   b"* STATUS INBOX (MESSAGES 2 MAILBOXID (F1))\r\n"),
    r.SearchData: (r.SearchData([2, 5], modseq=9), b"* SEARCH 2 5 (MODSEQ 9)\r\n"),
    r.ThreadData: (r.ThreadData(b""), b"* THREAD\r\n"),
    r.ESearch: (r.ESearch("t", True, [b"COUNT 2"]), b'* ESEARCH (TAG "t") UID COUNT 2\r\n'),
    r.QuotaData: (r.QuotaData("", 3, 100), b'* QUOTA "" (STORAGE 3 100)\r\n'),
    r.QuotaRootData: (r.QuotaRootData(b"INBOX", [""]), b'* QUOTAROOT INBOX ""\r\n'),
    r.MetadataData: (r.MetadataData(b'""', [b"/private/x NIL"]),
                     b'* METADATA "" (/private/x NIL)\r\n'),
}


def test_every_response_type_has_its_bytes() -> None:
    # (dataclass(slots=True) replaces each class: the one the module names is the real one)
    kinds = {k for k in r.Response.__subclasses__() if getattr(r, k.__name__) is k}
    assert set(SAMPLES) == kinds
    for kind, (resp, wire) in SAMPLES.items():
        assert r.serialise(resp) == wire, kind


def test_untagged_data_is_the_line_without_star_and_crlf() -> None:
    for resp, wire in SAMPLES.values():
        if wire.startswith(b"* "):
            assert r.data(resp) == wire[2:-2]


@pytest.mark.parametrize("resp", [r.Tagged("a", "OK", "done"), r.Continuation("go")])
def test_tagged_and_continuation_are_not_untagged_data(resp: r.Response) -> None:
    with pytest.raises(TypeError):
        r.data(resp)


def test_the_listing_format_matches_the_fetch_object() -> None:
    """The bulk FETCH path (one format, values picked per message) and the per-change
    Fetch object give the same bytes."""
    flags = r.flags({"\\Seen"})
    for names in (["UID", "FLAGS", "MODSEQ"], ["FLAGS", "UID"], ["MODSEQ"]):
        line, pick = r.fetch_listing(names)
        got = line % pick((4, 9, flags, 12))
        items = {"UID": b"UID 9", "FLAGS": b"FLAGS (\\Seen)", "MODSEQ": b"MODSEQ (12)"}
        assert got == b"* 4 FETCH (" + b" ".join(items[n] for n in names) + b")\r\n"
    assert r.serialise(r.Fetch(4, 9, {"\\Seen"}, 12)) == \
        r.fetch_listing(["UID", "FLAGS", "MODSEQ"])[0] % (4, 9, flags, 12)


def test_mailbox_names_follow_utf8_accept() -> None:
    assert r.mailbox_name("Entwürfe") == b'"Entw&APw-rfe"'
    assert r.mailbox_name("Entwürfe", utf8=True) == '"Entwürfe"'.encode()
