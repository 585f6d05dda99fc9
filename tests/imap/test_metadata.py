"""RFC 5464 METADATA over bytes, on both stores: server and mailbox annotations, /private and
/shared, NIL deletes, DEPTH and MAXSIZE, the per-entry and per-user bounds, bad syntax."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailnode.imap.handlers import metadata
from mailnode.imap.handlers.metadata import MAX_ENTRIES, MAX_VALUE, entry_name, select_entries
from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import Dialog


async def test_delta_chat_push_token_round_trip(dialog: Dialog) -> None:
    """What Delta Chat does: store a device token on INBOX, read server entries."""
    await dialog.login()
    token = b"gAAAAABl-encrypted+token/with=chars"
    out = await dialog.send(b"a SETMETADATA INBOX (/private/devicetoken {%d+}\r\n%s)\r\n"
                            % (len(token), token))
    assert out == b"a OK SETMETADATA completed\r\n"
    out = await dialog.send(b"b GETMETADATA INBOX /private/devicetoken\r\n")
    assert out == (b'* METADATA "INBOX" (/private/devicetoken "%s")\r\n'
                   b"b OK GETMETADATA completed\r\n" % token)
    # the form Delta Chat 2.x sends (a quoted value)
    out = await dialog.send(b'q SETMETADATA "INBOX" (/private/devicetoken "%s")\r\n' % token)
    assert out == b"q OK SETMETADATA completed\r\n"
    out = await dialog.send(b'c GETMETADATA "" (/shared/comment /shared/admin)\r\n')
    assert out == (b'* METADATA "" (/shared/comment NIL /shared/admin NIL)\r\n'
                   b"c OK GETMETADATA completed\r\n")


async def test_server_and_mailbox_entries_are_separate(dialog: Dialog) -> None:
    await dialog.login()
    assert (await dialog.send(b'a SETMETADATA "" (/shared/comment "server note" '
                              b'/private/comment "mine")\r\n')).startswith(b"a OK")
    assert (await dialog.send(b'b SETMETADATA Sent (/shared/comment "sent note")\r\n')
            ).startswith(b"b OK")
    out = await dialog.send(b'c GETMETADATA "" (/shared/comment /private/comment)\r\n')
    assert out.startswith(b'* METADATA "" (/shared/comment "server note" '
                          b'/private/comment "mine")\r\n')
    out = await dialog.send(b"d GETMETADATA Sent (/shared/comment /private/comment)\r\n")
    assert out.startswith(b'* METADATA "Sent" (/shared/comment "sent note" '
                          b"/private/comment NIL)\r\n")
    # entry names are case-insensitive
    out = await dialog.send(b'e GETMETADATA "" /SHARED/Comment\r\n')
    assert out.startswith(b'* METADATA "" (/shared/comment "server note")\r\n')


async def test_nil_deletes_and_values_may_be_literals(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b'a SETMETADATA "" (/private/a "1" /private/b "2")\r\n')
    binary = b"line1\r\nline2\x00end"
    out = await dialog.send(b'b SETMETADATA "" (/private/a NIL /private/bin ~{%d+}\r\n%s)\r\n'
                            % (len(binary), binary))
    assert out == b"b OK SETMETADATA completed\r\n"
    out = await dialog.send(b'c GETMETADATA "" (/private/a /private/b /private/bin)\r\n')
    assert out == (b'* METADATA "" (/private/a NIL /private/b "2" /private/bin ~{%d}\r\n%s)\r\n'
                   b"c OK GETMETADATA completed\r\n" % (len(binary), binary))


async def test_depth_and_maxsize(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b'a SETMETADATA INBOX (/private/x "top" /private/x/y "child" '
                      b'/private/x/y/z "grandchild" /private/xx "other")\r\n')
    out = await dialog.send(b"b GETMETADATA INBOX /private/x\r\n")
    assert out.startswith(b'* METADATA "INBOX" (/private/x "top")\r\n')
    out = await dialog.send(b"c GETMETADATA (DEPTH 1) INBOX /private/x\r\n")
    assert out.startswith(b'* METADATA "INBOX" (/private/x "top" /private/x/y "child")\r\n')
    out = await dialog.send(b"d GETMETADATA (DEPTH infinity) INBOX /private\r\n")
    assert out.startswith(b'* METADATA "INBOX" (/private/x "top" /private/x/y "child" '
                          b'/private/x/y/z "grandchild" /private/xx "other")\r\n')
    out = await dialog.send(b"e GETMETADATA (MAXSIZE 4 DEPTH infinity) INBOX /private/x\r\n")
    assert out == (b'* METADATA "INBOX" (/private/x "top")\r\n'
                   b"e OK [METADATA LONGENTRIES 10] GETMETADATA completed\r\n")


async def test_value_too_large_is_refused_and_nothing_is_set(dialog: Dialog) -> None:
    await dialog.login()
    big = b"x" * (MAX_VALUE + 1)
    out = await dialog.send(b'a SETMETADATA "" (/private/small "ok" /private/big {%d+}\r\n%s)\r\n'
                            % (len(big), big))
    assert out == b"a NO [METADATA MAXSIZE %d] Value too large\r\n" % MAX_VALUE
    out = await dialog.send(b'b GETMETADATA "" /private/small\r\n')
    assert out.startswith(b'* METADATA "" (/private/small NIL)')
    # a value far beyond the spool threshold is streamed, measured and dropped, not kept
    huge = b"y" * (1024 * 1024)
    out = await dialog.send(b'c SETMETADATA "" (/private/big {%d+}\r\n%s)\r\n'
                            % (len(huge), huge))
    assert out.startswith(b"c NO [METADATA MAXSIZE")
    assert dialog.session.parser.buffered == 0


async def test_too_many_entries(dialog: Dialog) -> None:
    await dialog.login()
    names = [b"/private/e%d" % i for i in range(MAX_ENTRIES)]
    for i in range(0, MAX_ENTRIES, 32):
        pairs = b" ".join(n + b' "v"' for n in names[i:i + 32])
        assert (await dialog.send(b"a SETMETADATA INBOX (" + pairs + b")\r\n")).startswith(
            b"a OK")
    out = await dialog.send(b'b SETMETADATA "" (/private/one-more "v")\r\n')
    assert out == b"b NO [METADATA TOOMANY] At most %d annotations per user\r\n" % MAX_ENTRIES
    # replacing or deleting is still possible at the limit; then there is room again
    assert (await dialog.send(b'c SETMETADATA INBOX (/private/e0 "new")\r\n')).startswith(
        b"c OK")
    assert (await dialog.send(b'd SETMETADATA INBOX (/private/e0 NIL)\r\n')).startswith(b"d OK")
    assert (await dialog.send(b'e SETMETADATA "" (/private/one-more "v")\r\n')).startswith(
        b"e OK")


async def test_annotations_go_with_their_mailbox(dialog: Dialog) -> None:
    await dialog.login()
    await dialog.send(b"a CREATE Box\r\n")
    await dialog.send(b'b SETMETADATA Box (/private/comment "c")\r\n')
    await dialog.send(b"c DELETE Box\r\n")
    await dialog.send(b"d CREATE Box\r\n")
    out = await dialog.send(b"e GETMETADATA Box /private/comment\r\n")
    assert out.startswith(b'* METADATA "Box" (/private/comment NIL)')
    out = await dialog.send(b"f GETMETADATA Nope /private/comment\r\n")
    assert out == b"f NO [NONEXISTENT] No such mailbox\r\n"
    out = await dialog.send(b'g SETMETADATA Nope (/private/comment "x")\r\n')
    assert out == b"g NO [NONEXISTENT] No such mailbox\r\n"


async def test_users_do_not_see_each_others_entries(store: MailStore,
                                                    notifier: ChangeNotifier) -> None:
    alice = Dialog(ImapSession(store, notifier))
    bob = Dialog(ImapSession(store, notifier))
    await alice.login()
    await bob.send(b"L LOGIN bob hunter2\r\n")
    await alice.send(b'a SETMETADATA "" (/shared/comment "alice")\r\n')
    out = await bob.send(b'b GETMETADATA "" /shared/comment\r\n')
    assert out.startswith(b'* METADATA "" (/shared/comment NIL)')


async def test_bad_syntax_gets_bad(dialog: Dialog) -> None:
    await dialog.login()
    for line in [b'GETMETADATA "" /other/x', b'GETMETADATA "" /private/a*', b"GETMETADATA",
                 b'GETMETADATA "" /private//x', b'GETMETADATA "" /private/x/',
                 b'GETMETADATA (DEPTH 2) "" /private/x', b'GETMETADATA (FOO 1) "" /private/x',
                 b'GETMETADATA (MAXSIZE) "" /private/x', b'GETMETADATA "" ()',
                 b'SETMETADATA "" (/private "x")', b'SETMETADATA "" (/private/x)',
                 b'SETMETADATA "" ()', b'SETMETADATA "" /private/x "v"',
                 b'SETMETADATA "" (/private/x "v") extra', b'SETMETADATA "" (/private/x v)']:
        out = await dialog.send(b"t " + line + b"\r\n")
        assert out.startswith(b"t BAD "), (line, out)
    assert (await dialog.send(b"n NOOP\r\n")) == b"n OK NOOP completed\r\n"


async def test_needs_login() -> None:
    from tests.imap.memstore import MemStore
    notifier = ChangeNotifier()
    store = MemStore(notifier)
    dialog = Dialog(ImapSession(store, notifier))
    out = await dialog.send(b'a GETMETADATA "" /private/x\r\n')
    assert out.startswith(b"a BAD ")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=40))
def test_entry_names_are_canonical_or_refused(raw: bytes) -> None:
    name = entry_name(raw, settable=True)
    if name is not None:
        assert name == name.lower() and name.startswith(("/private/", "/shared/"))
        assert "//" not in name and not name.endswith("/")
        assert not set(name) & set("*% \r\n\x00")
        assert entry_name(name.encode(), settable=True) == name


@given(st.dictionaries(st.sampled_from(["/private/a", "/private/a/b", "/private/a/b/c",
                                        "/private/ab", "/shared/a"]), st.binary(max_size=3)),
       st.sampled_from([0, 1, None]))
def test_depth_selects_exactly_the_descendants(stored: dict[str, bytes],
                                               depth: int | None) -> None:
    got = dict(select_entries(stored, ("/private/a",), depth))
    assert got.pop("/private/a") == stored.get("/private/a")
    allowed = {0: set(), 1: {"/private/a/b"}, None: {"/private/a/b", "/private/a/b/c"}}[depth]
    assert got == {k: v for k, v in stored.items() if k in allowed}


def test_module_bounds_are_sane() -> None:
    assert metadata.MAX_VALUE * metadata.MAX_ENTRIES <= 4 * 1024 * 1024
