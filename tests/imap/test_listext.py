"""LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819) dialogues, on both stores."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import parser
from mailnode.imap.commands import ListCmd, ListOptions
from mailnode.imap.errors import ParseError
from mailnode.store.api import Mailbox, MailStore, User
from tests.imap.conftest import MESSAGE, Dialog


async def setup(dialog: Dialog) -> None:
    await dialog.login()
    for name in (b"a", b"a/b1", b"a/b2/c", b"a/x", b"t8/t8", b"t8/t9", b"gone"):
        assert b"C OK" in await dialog.send(b"C CREATE " + name + b"\r\n")
    for name in (b"a/b1", b"a/b2/c", b"t8/t8", b"t8/t9", b"gone"):
        assert b"S OK" in await dialog.send(b"S SUBSCRIBE " + name + b"\r\n")
    assert b"D OK" in await dialog.send(b"D DELETE gone\r\n")


def lines(reply: bytes) -> list[bytes]:
    return [line for line in reply.split(b"\r\n") if line.startswith(b"* ")]


async def test_capability_advertised(dialog: Dialog) -> None:
    await dialog.login()
    caps = await dialog.send(b"C CAPABILITY\r\n")
    assert b" LIST-EXTENDED" in caps and b" LIST-STATUS" in caps


async def test_multiple_patterns_list_each_name_once(dialog: Dialog) -> None:
    await setup(dialog)
    reply = await dialog.send(b'L LIST "" (a/* a/b1 "a/x")\r\n')
    assert lines(reply) == [
        b'* LIST (\\HasNoChildren) "/" "a/b1"',
        b'* LIST (\\Noselect \\HasChildren) "/" "a/b2"',
        b'* LIST (\\HasNoChildren) "/" "a/b2/c"',
        b'* LIST (\\HasNoChildren) "/" "a/x"',
    ]
    assert reply.endswith(b"L OK LIST completed\r\n")


async def test_subscribed_selection_shows_nonexistent(dialog: Dialog) -> None:
    await setup(dialog)
    reply = await dialog.send(b'L LIST (SUBSCRIBED) "" "*"\r\n')
    got = lines(reply)
    assert b'* LIST (\\NonExistent \\Subscribed) "/" "gone"' in got
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "a/b1"' in got
    assert not any(b'"a"' in line or b'"t8"' in line for line in got)  # not subscribed


async def test_recursivematch_childinfo(dialog: Dialog) -> None:
    await setup(dialog)
    reply = await dialog.send(b'L LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"\r\n')
    got = lines(reply)
    assert b'* LIST (\\HasChildren) "/" "a" (CHILDINFO ("SUBSCRIBED"))' in got
    assert b'* LIST (\\Noselect \\HasChildren) "/" "t8" (CHILDINFO ("SUBSCRIBED"))' in got
    # a child that matches the pattern itself gives its parent no CHILDINFO
    reply = await dialog.send(b'L LIST (SUBSCRIBED RECURSIVEMATCH) "" (t8 t8/t8 t8/t9)\r\n')
    assert lines(reply) == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "t8/t8"',
                            b'* LIST (\\HasNoChildren \\Subscribed) "/" "t8/t9"']


async def test_return_subscribed_and_children(dialog: Dialog) -> None:
    await setup(dialog)
    reply = await dialog.send(b'L LIST "" "a/%" RETURN (SUBSCRIBED CHILDREN)\r\n')
    assert lines(reply) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "a/b1"',
        b'* LIST (\\Noselect \\HasChildren) "/" "a/b2"',
        b'* LIST (\\HasNoChildren) "/" "a/x"',
    ]


async def test_list_status(dialog: Dialog) -> None:
    await setup(dialog)
    assert b"A OK" in await dialog.send(b"A APPEND a/x {%d}\r\n" % len(MESSAGE)
                                        + MESSAGE + b"\r\n")
    reply = await dialog.send(b'L LIST "" "a/%" RETURN (STATUS (MESSAGES UNSEEN))\r\n')
    assert lines(reply) == [
        b'* LIST (\\HasNoChildren) "/" "a/b1"',
        b'* STATUS "a/b1" (MESSAGES 0 UNSEEN 0)',
        b'* LIST (\\Noselect \\HasChildren) "/" "a/b2"',  # not selectable: no STATUS
        b'* LIST (\\HasNoChildren) "/" "a/x"',
        b'* STATUS "a/x" (MESSAGES 1 UNSEEN 1)',
    ]


async def test_remote_is_accepted(dialog: Dialog) -> None:
    await setup(dialog)
    reply = await dialog.send(b'L LIST (REMOTE) "" "a"\r\n')
    assert lines(reply) == [b'* LIST (\\HasChildren) "/" "a"']


@pytest.mark.parametrize("command", [
    b'L LIST (IMAPTEST) "" ""', b'L LIST (RECURSIVEMATCH) "" "*"',
    b'L LIST (RECURSIVEMATCH REMOTE) "" "*"', b'L LIST "" "*" RETURN (IMAPTEST)',
    b'L LIST "" "*" RETURN (STATUS (BOGUS))', b'L LIST "" "*" RETURN (STATUS ())',
    b'L LIST "" ()', b'L LIST "" "*" RETURN', b'L LIST "" "*" RETURN (CHILDREN',
    b'L LSUB (SUBSCRIBED) "" "*"', b'L LSUB "" ("a" "b")',
    b'L LIST "" (' + b" ".join([b"a"] * 65) + b")",
])
async def test_bad_syntax(dialog: Dialog, command: bytes) -> None:
    await setup(dialog)
    reply = await dialog.send(command + b"\r\n")
    assert reply.startswith(b"L BAD"), reply
    assert b"L OK" in await dialog.send(b"L NOOP\r\n")  # the session goes on


def test_plain_list_stays_plain() -> None:
    cmd = parser.parse_one(b'T LIST "" "*"\r\n')
    assert isinstance(cmd, ListCmd) and cmd.extended is None
    cmd = parser.parse_one(b'T LIST () "" ("a" b) RETURN (STATUS (MESSAGES) CHILDREN)\r\n')
    assert isinstance(cmd, ListCmd)
    assert cmd.extended == ListOptions(("a", "b"), frozenset(), frozenset({"CHILDREN"}),
                                       ("MESSAGES",))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_hostile_list_arguments_never_crash(tail: bytes) -> None:
    with contextlib.suppress(ParseError):
        parser.parse_one(b"T LIST " + tail.replace(b"\n", b"") + b"\r\n")


def reference_listing(names: set[str], subscribed: set[str], patterns: list[str],
                      select: set[str]) -> dict[str, bool]:
    """RFC 5258 3 by definition, brute force: name -> whether it carries CHILDINFO."""
    from mailnode.imap.session import ListPattern
    matchers = [ListPattern(p) for p in patterns]

    def matches(n: str) -> bool:
        return any(m(n) for m in matchers)

    existing = set(names)
    for n in names:
        parts = n.split("/")
        existing.update("/".join(parts[:i]) for i in range(1, len(parts)))
    chosen = subscribed if "SUBSCRIBED" in select else existing
    universe = existing | subscribed
    for n in subscribed:
        parts = n.split("/")
        universe.update("/".join(parts[:i]) for i in range(1, len(parts)))
    out = {n: False for n in chosen if matches(n)}
    if "RECURSIVEMATCH" in select:
        for n in universe:
            if matches(n) and any(d.startswith(n + "/") and not matches(d) for d in chosen):
                out[n] = True
    return out


_NAME = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map("/".join)


@settings(max_examples=150, deadline=None)
@given(names=st.sets(_NAME, max_size=6), subscribed=st.sets(_NAME, max_size=4),
       patterns=st.lists(st.text("ab/%*", min_size=1, max_size=4), min_size=1, max_size=3),
       recursive=st.booleans())
async def test_subscribed_recursivematch_equals_reference(
        names: set[str], subscribed: set[str], patterns: list[str], recursive: bool) -> None:
    from mailnode.imap.session import ImapSession
    from mailnode.store.notify import ChangeNotifier
    from tests.imap.memstore import MemStore

    notifier = ChangeNotifier()
    store = MemStore(notifier)
    user = store.add_user("alice", "secret", "alice@example.mailnode")
    for name in sorted(names):
        if name not in {m.name for m in await store.list_mailboxes(user.id)}:
            await store.create_mailbox(user.id, name)
    for name in await store.subscriptions(user.id):
        await store.subscribe(user.id, name, False)
    for name in subscribed:
        await store.subscribe(user.id, name, True)
    all_names = {m.name for m in await store.list_mailboxes(user.id)}
    d = Dialog(ImapSession(store, notifier))
    await d.login()
    select = {"SUBSCRIBED", "RECURSIVEMATCH"} if recursive else {"SUBSCRIBED"}
    quoted = " ".join(f'"{p}"' for p in patterns).encode()
    reply = await d.send(b"L LIST (" + " ".join(sorted(select)).encode() + b') "" ('
                         + quoted + b")\r\n")
    assert reply.endswith(b"L OK LIST completed\r\n"), reply
    got = {}
    for line in lines(reply):
        m = re.fullmatch(rb'\* LIST \([^)]*\) "/" "([^"]*)"( \(CHILDINFO \("SUBSCRIBED"\)\))?',
                         line)
        assert m is not None, line
        got[m.group(1).decode()] = m.group(2) is not None
    assert got == reference_listing(all_names, subscribed, patterns, select)


async def test_list_status_reads_the_listing_once(dialog: Dialog, store: MailStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Work is counted, not timed: STATUS for every listed mailbox comes from the one
    listing LIST reads, not from a lookup per mailbox."""
    await setup(dialog)
    lookups: list[str] = []
    real = store.get_mailbox

    async def counting(user_id: int, name: str) -> Mailbox | None:
        lookups.append(name)
        return await real(user_id, name)

    monkeypatch.setattr(store, "get_mailbox", counting)
    reply = await dialog.send(b'L LIST "" "*" RETURN (STATUS (MESSAGES UIDNEXT))\r\n')
    statuses = [line for line in lines(reply) if line.startswith(b"* STATUS")]
    assert len(statuses) == len(await store.list_mailboxes((await _alice(store)).id))
    assert lookups == []
    for line in statuses:  # the same answer STATUS gives
        name = line.split(b" (")[0].removeprefix(b"* STATUS ")
        alone = await dialog.send(b"S STATUS " + name + b" (MESSAGES UIDNEXT)\r\n")
        assert alone.startswith(line + b"\r\n")


async def _alice(store: MailStore) -> User:
    user = await store.authenticate("alice", "secret")
    assert user is not None
    return user


async def test_list_status_takes_every_status_item(dialog: Dialog) -> None:
    """Items other extensions bring to STATUS (STATUS=SIZE) answer in LIST-STATUS too."""
    await dialog.login()
    await dialog.send(b"A APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    reply = await dialog.send(b'L LIST "" "INBOX" RETURN (STATUS (MESSAGES SIZE DELETED))\r\n')
    assert lines(reply) == [b'* LIST (\\HasNoChildren) "/" "INBOX"',
                            b'* STATUS "INBOX" (MESSAGES 1 SIZE %d DELETED 0)' % len(MESSAGE)]
