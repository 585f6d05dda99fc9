"""REDEEM, WELCOME, HOLD and PULL: the friends' extension of the transfer protocol, in memory
(state machines over bytes) and over real TLS (the roles turning on one connection)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.keys import Identity
from mailnode.transfer import InboundMessage, Outcome, TransferServer, Verdict, connect
from mailnode.transfer.frames import (
    DecodeFailed,
    Dialback,
    ErrorCode,
    Frame,
    FrameDecoder,
    Hold,
    Pull,
    Redeem,
    Welcome,
    encode,
)
from mailnode.transfer.server import HeldMessage
from mailnode.transfer.session import (
    ClientSession,
    ClientState,
    Finished,
    MessageReceived,
    PullRequested,
    RedeemRequested,
    ServerSession,
    ServerState,
    Terminated,
    Welcomed,
)
from tests.transfer.conftest import RecordingStore, ServerFactory
from tests.transfer.test_session import CLIENT, SERVER, authenticated_pair

REDEEM = Redeem(b"s" * 16, 200 << 20, 14, "bob-laptop", (("10.0.0.2", 2700), ("fd00::2", 2701)))


def test_new_frames_round_trip() -> None:
    frames: list[Frame] = [REDEEM, Redeem(b"t" * 16, 0, 0, "x", ()), Welcome(5, 3, "alice"),
              Hold(b"m" * 16, b"k" * 32, 10, b"record"), Pull(),
              Dialback((("10.0.0.1", 2700), ("fd00::1", 2700)))]
    data = b"".join(encode(f) for f in frames)
    assert FrameDecoder().events(data) == frames


@pytest.mark.parametrize("payload", [
    REDEEM.payload() + b"x",                        # trailing bytes
    REDEEM.payload()[:-3],                          # endpoint cut short
    REDEEM.payload().replace(b"bob-laptop", b"Bob laptop"),  # a name needing quotes
    REDEEM.payload().replace(b"10.0.0.2", b"10.0\n0.2"),     # control character in a host
])
def test_malformed_redeem_fails_the_stream(payload: bytes) -> None:
    data = bytes([0x20]) + len(payload).to_bytes(4, "big") + payload
    [event] = FrameDecoder().events(data)
    assert isinstance(event, DecodeFailed)
    assert event.error.code is ErrorCode.MALFORMED


@given(st.binary(max_size=300))
def test_any_redeem_payload_parses_or_fails_cleanly(payload: bytes) -> None:
    data = bytes([0x20]) + len(payload).to_bytes(4, "big") + payload
    for event in FrameDecoder().events(data):
        assert isinstance(event, Redeem | DecodeFailed)


def test_an_empty_dialback_is_malformed() -> None:
    [event] = FrameDecoder().events(bytes([0x24, 0, 0, 0, 1, 0]))
    assert isinstance(event, DecodeFailed)


def test_redeem_is_answered_with_welcome_or_refusal() -> None:
    client, server = authenticated_pair()
    client.redeem(REDEEM)
    [event] = server.receive_data(client.data_to_send(), now=2.0)
    assert event == RedeemRequested(CLIENT.verify_key, REDEEM)
    assert server.state is ServerState.AWAIT_COMMIT and server.deadline is None
    server.send_welcome(Welcome(100, 7, "alice"), now=3.0)
    assert client.receive_data(server.data_to_send()) == [Welcomed(Welcome(100, 7, "alice"))]
    assert client.state is ClientState.IDLE
    assert server.state.value == "idle"  # (mypy narrowed it to AWAIT_COMMIT above)
    client.redeem(REDEEM)
    server.receive_data(client.data_to_send(), now=4.0)
    server.send_result(Outcome(Verdict.PERMANENT, "invite already used"), now=5.0)
    assert client.receive_data(server.data_to_send()) == [
        Finished(Outcome(Verdict.PERMANENT, "invite already used"))]


def test_hold_carries_the_record_to_the_accept_callback() -> None:
    client, server = authenticated_pair()
    client.hold(b"m" * 16, b"r" * 32, 5, b"the-record")
    assert server.receive_data(client.data_to_send(), now=2.0) == []
    client.receive_data(server.data_to_send())
    client.send_data(b"hello")
    client.end()
    [event] = server.receive_data(client.data_to_send(), now=3.0)
    assert isinstance(event, MessageReceived)
    assert event.message.record == b"the-record"
    assert event.message.sealed == b"hello"


def test_hold_over_the_size_limit_is_refused_before_the_body() -> None:
    client, server = authenticated_pair(max_size=4)
    client.hold(b"m" * 16, b"r" * 32, 5, b"rec")
    server.receive_data(client.data_to_send(), now=2.0)
    [event] = client.receive_data(server.data_to_send())
    assert isinstance(event, Finished) and event.outcome.verdict is Verdict.PERMANENT


def test_pull_turns_the_roles_on_the_same_stream() -> None:
    client, server = authenticated_pair()
    client.pull()
    [event] = server.receive_data(client.data_to_send(), now=2.0)
    assert event == PullRequested(CLIENT.verify_key, b"")
    assert server.state is ServerState.TURNED and server.deadline is None
    # The relay (server of the connection) now offers; the puller answers.
    relay = ClientSession.turned(SERVER, CLIENT.verify_key)
    puller = ServerSession.turned(CLIENT, SERVER.verify_key, max_message_size=100,
                                  timeout=30.0, now=2.0)
    assert puller.data_to_send() == b""  # no challenge: authenticated by the TLS pin
    relay.offer(b"h" * 16, b"u" * 32, 3)
    assert puller.receive_data(relay.data_to_send(), now=3.0) == []
    relay.receive_data(puller.data_to_send())
    relay.send_data(b"abc")
    relay.end()
    [received] = puller.receive_data(relay.data_to_send(), now=4.0)
    assert isinstance(received, MessageReceived)
    assert received.message.peer_node_key == SERVER.verify_key
    puller.send_result(Outcome(Verdict.ACCEPTED, "stored"), now=5.0)
    assert relay.receive_data(puller.data_to_send()) == [
        Finished(Outcome(Verdict.ACCEPTED, "stored"))]
    assert puller.receive_eof() == [Terminated(None)]  # the relay closing is the end


def test_nothing_but_offers_is_taken_before_authentication() -> None:
    server = ServerSession(SERVER, b"\x07" * 32, max_message_size=10, timeout=5.0, now=0.0)
    [event] = server.receive_data(encode(Pull()), now=1.0)
    assert server.state is ServerState.CLOSED
    assert isinstance(event, Terminated) and event.error is not None
    assert event.error.code is ErrorCode.UNEXPECTED


# --- over real TLS -----------------------------------------------------------------------


class Friendly:
    """A Friendship that welcomes one secret and holds a fixed list of messages."""

    def __init__(self, held: list[HeldMessage]) -> None:
        self.held = held
        self.handed: list[tuple[int, Verdict]] = []
        self.redeemed: list[bytes] = []

    async def redeem(self, peer_key: bytes, host: str, request: Redeem) -> Welcome | Outcome:
        if request.secret != REDEEM.secret:
            return Outcome(Verdict.PERMANENT, "unknown invite")
        self.redeemed.append(peer_key)
        return Welcome(1 << 20, 3, "alice")

    async def next_held(self, peer_key: bytes, after: int) -> HeldMessage | None:
        return next((h for h in self.held if h.id > after), None)

    async def handed_over(self, held: HeldMessage, outcome: Outcome) -> None:
        self.handed.append((held.id, outcome.verdict))
        if outcome.verdict is Verdict.ACCEPTED:
            self.held.remove(held)


async def test_redeem_and_pull_over_tls(make_server: ServerFactory, server_identity: Identity,
                                        client_identity: Identity) -> None:
    big = os.urandom(200_000)  # several DATA frames
    friendly = Friendly([HeldMessage(1, b"a" * 16, b"u" * 32, b"first"),
                         HeldMessage(2, b"b" * 16, b"u" * 32, big)])
    server: TransferServer = await make_server(RecordingStore(), friendship=friendly)
    connection = await connect(client_identity, "127.0.0.1", server.port,
                               server_identity.verify_key, timeout=10.0)
    async with connection:
        assert await connection.redeem(REDEEM) == \
            Welcome(1 << 20, 3, "alice")
        refused = await connection.redeem(Redeem(b"x" * 16, 0, 0, "bob", ()))
        assert isinstance(refused, Outcome) and refused.verdict is Verdict.PERMANENT
    assert friendly.redeemed == [client_identity.verify_key]

    got: list[InboundMessage] = []

    async def accept(message: InboundMessage) -> Outcome:
        got.append(message)
        return Outcome(Verdict.ACCEPTED, "stored")

    connection = await connect(client_identity, "127.0.0.1", server.port,
                               server_identity.verify_key, timeout=10.0)
    assert await connection.pull(accept, max_message_size=1 << 20) == 2
    assert [m.sealed for m in got] == [b"first", big]
    assert all(m.peer_node_key == server_identity.verify_key for m in got)
    assert friendly.handed == [(1, Verdict.ACCEPTED), (2, Verdict.ACCEPTED)]
    # Nothing left: a second pull ends at once.
    connection = await connect(client_identity, "127.0.0.1", server.port,
                               server_identity.verify_key, timeout=10.0)
    assert await connection.pull(accept, max_message_size=1 << 20) == 0


async def test_hand_over_verdicts_reach_the_relay(make_server: ServerFactory,
                                                   server_identity: Identity,
                                                   client_identity: Identity) -> None:
    friendly = Friendly([HeldMessage(7, b"a" * 16, b"u" * 32, b"x" * 50)])
    server = await make_server(RecordingStore(), friendship=friendly)

    async def busy(message: InboundMessage) -> Outcome:
        return Outcome(Verdict.TEMPORARY, "disk full")

    for limit, verdict in ((1000, Verdict.TEMPORARY), (10, Verdict.PERMANENT)):
        connection = await connect(client_identity, "127.0.0.1", server.port,
                                   server_identity.verify_key, timeout=10.0)
        assert await connection.pull(busy, max_message_size=limit) == 0
        assert friendly.handed[-1] == (7, verdict)  # kept, then refused for good (too big)
    assert len(friendly.held) == 1  # dropping is the relay's decision (FriendsService)


async def test_a_server_without_friends_refuses_invites(make_server: ServerFactory,
                                                        server_identity: Identity,
                                                        client_identity: Identity) -> None:
    server = await make_server(RecordingStore())
    connection = await connect(client_identity, "127.0.0.1", server.port,
                               server_identity.verify_key, timeout=10.0)
    async with connection:
        answer = await connection.redeem(REDEEM)
    assert isinstance(answer, Outcome) and answer.verdict is Verdict.PERMANENT
