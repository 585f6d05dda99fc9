"""The transition table: every command in every state is either run or refused with BAD,
and a refusal never ends the session."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailnode.imap import commands as c
from mailnode.imap.handlers import compress, metadata, quota
from mailnode.imap.session import ALLOWED, ImapSession, State
from mailnode.store.notify import ChangeNotifier
from tests.imap.memstore import MemStore

SAMPLES: dict[type[c.Command], bytes] = {
    c.Capability: b"CAPABILITY", c.Noop: b"NOOP", c.StartTls: b"STARTTLS",
    c.Logout: b"LOGOUT", c.Id: b"ID NIL",
    c.Enable: b"ENABLE IDLE", c.Login: b"LOGIN alice secret",
    c.Authenticate: b"AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==", c.Namespace: b"NAMESPACE",
    c.ListCmd: b'LIST "" *', c.Select: b"SELECT INBOX", c.Status: b"STATUS INBOX (MESSAGES)",
    c.Create: b"CREATE Box", c.Delete: b"DELETE Nope", c.Rename: b"RENAME Nope Nope2",
    c.Subscribe: b"SUBSCRIBE INBOX", c.Append: b"APPEND INBOX {2+}\r\nhi",
    c.Check: b"CHECK", c.Close: b"CLOSE", c.Unselect: b"UNSELECT", c.Expunge: b"EXPUNGE",
    c.Fetch: b"FETCH 1:* FLAGS", c.StoreCmd: b"STORE 1:* +FLAGS \\Seen",
    c.Search: b"SEARCH ALL", c.Copy: b"COPY 1:* Trash", c.Idle: b"IDLE",
    c.SortCmd: b"SORT (DATE) UTF-8 ALL", c.ThreadCmd: b"THREAD REFERENCES UTF-8 ALL",
    c.CancelUpdate: b'CANCELUPDATE "t"',
    metadata.GetMetadata: b'GETMETADATA "" /private/x',
    metadata.SetMetadata: b"SETMETADATA INBOX (/private/x NIL)",
    quota.GetQuota: b'GETQUOTA ""', quota.GetQuotaRoot: b"GETQUOTAROOT INBOX",
    quota.SetQuota: b'SETQUOTA "" (STORAGE 10)', compress.Compress: b"COMPRESS DEFLATE",
    c.AppendMany: b"APPEND INBOX {2+}\r\nhi CATENATE (TEXT {2+}\r\nho)",
}


def test_every_command_has_a_sample_and_a_state() -> None:
    assert set(SAMPLES) == set(c.NAMES)
    for cmd in c.NAMES:
        assert any(cmd in allowed for allowed in ALLOWED.values()), cmd


async def session_in(state: State) -> ImapSession:
    notifier = ChangeNotifier()
    store = MemStore(notifier)
    store.add_user("alice", "secret")
    session = ImapSession(store, notifier)
    if state is not State.NOT_AUTHENTICATED:
        await session.receive(b"l LOGIN alice secret\r\n")
    if state is State.SELECTED:
        await session.receive(b"s SELECT INBOX\r\n")
    session.data_to_send()
    assert session.state is state
    return session


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.sampled_from([State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED]),
       commands=st.lists(st.sampled_from(sorted(SAMPLES, key=lambda t: t.__name__)),
                         min_size=1, max_size=4))
async def test_commands_in_any_state(state: State, commands: list[type[c.Command]]) -> None:
    session = await session_in(state)
    for cmd in commands:
        before = session.state
        await session.receive(b"t " + SAMPLES[cmd] + b"\r\n")
        if cmd is c.Idle and cmd in ALLOWED[before]:
            await session.receive(b"DONE\r\n")
        out = session.data_to_send()
        last = out.rstrip(b"\r\n").split(b"\r\n")[-1]
        if cmd not in ALLOWED[before]:
            assert last.startswith(b"t BAD "), (before, cmd, out)
            assert session.state is before
        else:
            assert last.startswith((b"t OK", b"t NO")), (before, cmd, out)
        if session.closed:
            assert cmd is c.Logout
            return


@pytest.mark.parametrize("line", [b"FETCH 1 FLAGS", b"SELECT INBOX", b"CLOSE", b"IDLE"])
async def test_not_authenticated_refuses(line: bytes) -> None:
    session = await session_in(State.NOT_AUTHENTICATED)
    await session.receive(b"x " + line + b"\r\n")
    assert session.data_to_send().startswith(b"x BAD ")
    assert session.state is State.NOT_AUTHENTICATED


async def test_login_twice_is_refused() -> None:
    session = await session_in(State.AUTHENTICATED)
    await session.receive(b"x LOGIN alice secret\r\n")
    assert session.data_to_send().startswith(b"x BAD ")
    assert session.state is State.AUTHENTICATED


_VERBS = st.sampled_from([b"FETCH", b"UID FETCH", b"SEARCH", b"UID SEARCH", b"STORE", b"COPY",
                          b"UID MOVE", b"LIST", b"SELECT", b"STATUS", b"APPEND", b"EXPUNGE",
                          b"UID EXPUNGE", b"CREATE", b"RENAME", b"IDLE", b"DONE", b"CLOSE",
                          b"SEARCH RETURN (UPDATE)", b"UID SORT RETURN (PARTIAL 1:2)",
                          b"CANCELUPDATE"])
_ARGS = st.sampled_from([b"1", b"1:*", b"*", b"2,4", b"(FLAGS)", b"BODY[1.2.MIME]",
                         b"BODY[2.HEADER.FIELDS (A)]<0.5>", b"FULL", b"BODYSTRUCTURE", b"+FLAGS",
                         b"\\Seen", b"INBOX", b"Trash", b'""', b"%", b"(MESSAGES)",
                         b"{3+}\r\nabc", b"OR", b"NOT", b"UID", b"HEADER", b"SENTON",
                         b"1-Jan-2024", b"(", b")", b"x", b'"t1"', b"(ARRIVAL) UTF-8"])
_NESTED = (b"From: a\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nhi\r\n--B--\r\n")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_VERBS, st.lists(_ARGS, max_size=5)), max_size=6))
async def test_random_command_sequences_never_hit_internal_errors(
        cmds: list[tuple[bytes, list[bytes]]]) -> None:
    session = await session_in(State.SELECTED)
    inbox = await session.store.get_mailbox(1, "INBOX")
    assert inbox is not None
    await session.store.append(inbox.id, b"Subject: s\r\n\r\nbody\r\n", frozenset(), None)
    await session.store.append(inbox.id, _NESTED, frozenset(), None)
    for i, (verb, args) in enumerate(cmds):
        await session.receive(b"t%d %s %s\r\n" % (i, verb, b" ".join(args)))
        out = session.data_to_send()
        assert b"SERVERBUG" not in out, out
