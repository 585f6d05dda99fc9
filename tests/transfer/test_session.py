"""Client and server state machines driven in memory: no sockets, no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from crypto.signing import sign
from mailnode.guard import ByteBudget
from mailnode.transfer.frames import (
    AcceptOffer,
    Auth,
    Challenge,
    Data,
    End,
    Error,
    ErrorCode,
    Frame,
    FrameDecoder,
    Offer,
    PeerReportedError,
    ProtocolError,
    Ready,
    Reject,
    Result,
    Status,
    encode,
)
from mailnode.transfer.session import (
    AUTH_CONTEXT,
    Authenticated,
    ClientSession,
    ClientState,
    Finished,
    MessageReceived,
    OfferAccepted,
    OfferRefused,
    Outcome,
    ReadyEvent,
    ServerEvent,
    ServerSession,
    ServerState,
    Terminated,
    Verdict,
    auth_payload,
)

SERVER = Identity(b"\x01" * 32)
CLIENT = Identity(b"\x02" * 32)
NONCE = b"\x07" * 32
MESSAGE_ID = bytes(range(16))
RECIPIENT = b"\x09" * 32
TIMEOUT = 30.0


def new_server(max_size: int = 1000, now: float = 0.0) -> ServerSession:
    return ServerSession(SERVER, NONCE, max_message_size=max_size, timeout=TIMEOUT, now=now)


def frames_of(data: bytes) -> list[object]:
    return list(FrameDecoder().events(data))


def authenticated_pair(max_size: int = 1000) -> tuple[ClientSession, ServerSession]:
    server = new_server(max_size)
    client = ClientSession(CLIENT, SERVER.verify_key)
    assert client.receive_data(server.data_to_send()) == []
    events = server.receive_data(client.data_to_send(), now=1.0)
    assert events == [Authenticated(CLIENT.verify_key)]
    assert client.receive_data(server.data_to_send()) == [ReadyEvent()]
    assert client.state is ClientState.IDLE
    return client, server


def good_auth(server_key: bytes = SERVER.verify_key, nonce: bytes = NONCE) -> Auth:
    client_key = CLIENT.verify_key
    signature = sign(CLIENT, AUTH_CONTEXT, auth_payload(server_key, nonce, client_key))
    return Auth(client_key, signature)


def test_server_speaks_first_with_its_key_and_nonce() -> None:
    assert frames_of(new_server().data_to_send()) == [Challenge(1, SERVER.verify_key, NONCE)]


def test_whole_dialogue_two_messages_on_one_connection() -> None:
    client, server = authenticated_pair()
    for body in (b"first sealed envelope", b"x" * 999):
        client.offer(MESSAGE_ID, RECIPIENT, len(body))
        assert server.receive_data(client.data_to_send(), now=2.0) == []
        assert client.receive_data(server.data_to_send()) == [OfferAccepted()]
        client.send_data(body[:5])
        client.send_data(body[5:])
        client.end()
        [event] = server.receive_data(client.data_to_send(), now=3.0)
        assert isinstance(event, MessageReceived)
        assert event.message.sealed == body
        assert event.message.peer_node_key == CLIENT.verify_key
        assert event.message.message_id == MESSAGE_ID
        assert event.message.recipient_key == RECIPIENT
        assert server.state is ServerState.AWAIT_COMMIT
        server.send_result(Outcome(Verdict.ACCEPTED, "stored"), now=4.0)
        [finished] = client.receive_data(server.data_to_send())
        assert finished == Finished(Outcome(Verdict.ACCEPTED, "stored"))
    assert server.receive_eof() == [Terminated(None)]


@pytest.mark.parametrize("verdict", list(Verdict))
def test_verdicts_travel(verdict: Verdict) -> None:
    client, server = authenticated_pair()
    client.offer(MESSAGE_ID, RECIPIENT, 0)
    server.receive_data(client.data_to_send(), now=1.0)
    client.receive_data(server.data_to_send())
    client.end()
    [event] = server.receive_data(client.data_to_send(), now=1.0)
    assert isinstance(event, MessageReceived) and event.message.sealed == b""
    server.send_result(Outcome(verdict, "why"), now=1.0)
    assert client.receive_data(server.data_to_send()) == [Finished(Outcome(verdict, "why"))]


def test_oversize_offer_rejected_permanently_before_any_body() -> None:
    client, server = authenticated_pair(max_size=100)
    client.offer(MESSAGE_ID, RECIPIENT, 101)
    [event] = server.receive_data(client.data_to_send(), now=1.0)
    assert isinstance(event, OfferRefused)
    assert server.state is ServerState.IDLE
    [finished] = client.receive_data(server.data_to_send())
    assert isinstance(finished, Finished)
    assert finished.outcome.verdict is Verdict.PERMANENT
    assert "exceeds" in finished.outcome.reason
    assert client.state is ClientState.IDLE  # the connection stays usable


def test_more_data_than_offered_is_a_protocol_error() -> None:
    _, server = authenticated_pair()
    server.receive_data(encode(Offer(MESSAGE_ID, RECIPIENT, 3)), now=1.0)
    server.data_to_send()
    [event] = server.receive_data(encode(Data(b"four")), now=1.0)
    assert isinstance(event, Terminated) and event.error is not None
    assert event.error.code is ErrorCode.UNEXPECTED
    [error] = frames_of(server.data_to_send())
    assert isinstance(error, Error)
    assert server.state is ServerState.CLOSED


def test_early_end_is_a_protocol_error() -> None:
    _, server = authenticated_pair()
    server.receive_data(encode(Offer(MESSAGE_ID, RECIPIENT, 3)) + encode(Data(b"ab")), now=1.0)
    [event] = server.receive_data(encode(End()), now=1.0)
    assert isinstance(event, Terminated) and event.error is not None


def test_forged_signature_rejected() -> None:
    server = new_server()
    forged = Auth(CLIENT.verify_key, sign(SERVER, AUTH_CONTEXT, b"anything"))
    [event] = server.receive_data(encode(forged), now=1.0)
    assert isinstance(event, Terminated) and event.error is not None
    assert event.error.code is ErrorCode.AUTH_FAILED
    assert frames_of(server.data_to_send())[-1] == Error(
        ErrorCode.AUTH_FAILED, "client signature does not verify"
    )


@pytest.mark.parametrize(
    "auth",
    [
        good_auth(server_key=b"\x05" * 32),  # relayed: signed for another server
        good_auth(nonce=b"\x08" * 32),  # replayed: signed for another challenge
    ],
)
def test_relayed_or_replayed_auth_rejected(auth: Auth) -> None:
    [event] = new_server().receive_data(encode(auth), now=1.0)
    assert isinstance(event, Terminated) and event.error is not None
    assert event.error.code is ErrorCode.AUTH_FAILED


def test_offer_before_auth_rejected() -> None:
    [event] = new_server().receive_data(encode(Offer(MESSAGE_ID, RECIPIENT, 1)), now=1.0)
    assert isinstance(event, Terminated) and event.error is not None
    assert event.error.code is ErrorCode.UNEXPECTED


def test_garbage_bytes_close_with_error_frame() -> None:
    server = new_server()
    server.data_to_send()
    [event] = server.receive_data(b"GET / HTTP/1.1\r\n\r\n", now=1.0)
    assert isinstance(event, Terminated) and event.error is not None
    [error] = frames_of(server.data_to_send())
    assert isinstance(error, Error) and error.code is ErrorCode.MALFORMED
    assert server.receive_data(encode(good_auth()), now=2.0) == []


def test_peer_error_frame_terminates_without_reply() -> None:
    server = new_server()
    server.data_to_send()
    [event] = server.receive_data(encode(Error(ErrorCode.INTERNAL, "bye")), now=1.0)
    assert isinstance(event, Terminated) and isinstance(event.error, PeerReportedError)
    assert server.data_to_send() == b""


def test_auth_timeout() -> None:
    server = new_server(now=100.0)
    server.data_to_send()
    assert server.deadline == 100.0 + TIMEOUT
    assert server.handle_timeout(100.0 + TIMEOUT - 0.001) == []
    [event] = server.handle_timeout(100.0 + TIMEOUT)
    assert isinstance(event, Terminated) and event.error is not None
    assert event.error.code is ErrorCode.TIMEOUT
    assert frames_of(server.data_to_send())[0] == Error(
        ErrorCode.TIMEOUT, "no frame in time (await-auth)"
    )
    assert server.deadline is None


def test_partial_frame_does_not_extend_the_deadline() -> None:
    server = new_server(now=0.0)
    partial = encode(good_auth())[:10]
    assert server.receive_data(partial, now=TIMEOUT - 1) == []
    assert server.deadline == TIMEOUT
    assert len(server.handle_timeout(TIMEOUT)) == 1


def test_no_deadline_while_committing_then_idle_deadline() -> None:
    client, server = authenticated_pair()
    client.offer(MESSAGE_ID, RECIPIENT, 1)
    server.receive_data(client.data_to_send(), now=5.0)
    client.receive_data(server.data_to_send())
    client.send_data(b"z")
    client.end()
    server.receive_data(client.data_to_send(), now=6.0)
    assert server.deadline is None
    assert server.handle_timeout(10_000.0) == []
    server.send_result(Outcome(Verdict.ACCEPTED, ""), now=10_000.0)
    assert server.deadline == 10_000.0 + TIMEOUT


def test_input_held_while_committing() -> None:
    _, server = authenticated_pair()
    pipelined = (
        encode(Offer(MESSAGE_ID, RECIPIENT, 1))
        + encode(Data(b"a"))
        + encode(End())
        + encode(Offer(MESSAGE_ID, RECIPIENT, 1))
    )
    events = server.receive_data(pipelined, now=1.0)
    assert [type(e) for e in events] == [MessageReceived]
    server.send_result(Outcome(Verdict.ACCEPTED, ""), now=1.0)
    assert server.receive_data(b"", now=1.0) == []
    assert server.state is ServerState.RECEIVING


def test_eof_mid_message_is_an_error() -> None:
    _, server = authenticated_pair()
    server.receive_data(encode(Offer(MESSAGE_ID, RECIPIENT, 5)), now=1.0)
    [event] = server.receive_eof()
    assert isinstance(event, Terminated) and event.error is not None


def test_send_result_out_of_turn_is_a_local_bug() -> None:
    _, server = authenticated_pair()
    with pytest.raises(RuntimeError):
        server.send_result(Outcome(Verdict.ACCEPTED, ""), now=1.0)


# client side


def test_client_refuses_challenge_for_another_key() -> None:
    client = ClientSession(CLIENT, SERVER.verify_key)
    with pytest.raises(ProtocolError) as info:
        client.receive_data(encode(Challenge(1, b"\x05" * 32, NONCE)))
    assert info.value.code is ErrorCode.AUTH_FAILED
    assert client.state is ClientState.CLOSED
    assert not any(isinstance(f, Auth) for f in frames_of(client.data_to_send()))


def test_client_refuses_unknown_version() -> None:
    client = ClientSession(CLIENT, SERVER.verify_key)
    with pytest.raises(ProtocolError) as info:
        client.receive_data(encode(Challenge(2, SERVER.verify_key, NONCE)))
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def test_client_refuses_unexpected_frames() -> None:
    client, _ = authenticated_pair()
    with pytest.raises(ProtocolError):
        client.receive_data(encode(Result(Status.ACK, "")))


def test_client_reports_server_error_frames() -> None:
    client = ClientSession(CLIENT, SERVER.verify_key)
    with pytest.raises(PeerReportedError):
        client.receive_data(encode(Error(ErrorCode.TIMEOUT, "too slow")))
    assert client.data_to_send() == b""


def test_client_local_misuse_raises() -> None:
    client, _ = authenticated_pair()
    with pytest.raises(RuntimeError):
        client.send_data(b"x")
    client.offer(MESSAGE_ID, RECIPIENT, 2)
    with pytest.raises(RuntimeError):
        client.offer(MESSAGE_ID, RECIPIENT, 2)
    client.receive_data(encode(AcceptOffer()))
    with pytest.raises(ValueError):
        client.send_data(b"xyz")
    with pytest.raises(ValueError):
        client.end()


def test_client_handles_reject_as_outcome() -> None:
    client, _ = authenticated_pair()
    client.offer(MESSAGE_ID, RECIPIENT, 2)
    [event] = client.receive_data(encode(Reject(Status.TEMPFAIL, "busy")))
    assert event == Finished(Outcome(Verdict.TEMPORARY, "busy"))


# every (state, input) pair: the server never raises and stays closed once terminated

ANY_FRAME = st.one_of(
    st.builds(Challenge, st.integers(0, 255), st.binary(min_size=32, max_size=32), st.just(NONCE)),
    st.just(good_auth()),
    st.builds(Auth, st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)),
    st.just(Ready()),
    st.builds(
        Offer,
        st.binary(min_size=16, max_size=16),
        st.binary(min_size=32, max_size=32),
        st.integers(0, 40),
    ),
    st.just(AcceptOffer()),
    st.builds(Reject, st.sampled_from([Status.PERMANENT, Status.TEMPFAIL]), st.text(max_size=5)),
    st.builds(Data, st.binary(min_size=1, max_size=20)),
    st.just(End()),
    st.builds(Result, st.sampled_from(list(Status)), st.text(max_size=5)),
    st.builds(Error, st.sampled_from(list(ErrorCode)), st.text(max_size=5)),
)


@settings(max_examples=300)
@given(
    st.lists(st.one_of(ANY_FRAME, st.binary(min_size=1, max_size=8)), max_size=12),
    st.lists(st.sampled_from(list(Verdict)), min_size=12, max_size=12),
)
def test_server_survives_any_input(inputs: list[Frame | bytes], verdicts: list[Verdict]) -> None:
    server = new_server(max_size=30)
    now = 0.0
    events: list[ServerEvent] = []
    for item in inputs:
        now += 1.0
        data = item if isinstance(item, bytes) else encode(item)
        new = server.receive_data(data, now)
        events += new
        if server.state is ServerState.AWAIT_COMMIT:
            server.send_result(Outcome(verdicts.pop(), "r"), now)
            events += server.receive_data(b"", now)
        server.data_to_send()
    terminated = [i for i, e in enumerate(events) if isinstance(e, Terminated)]
    assert terminated in ([], [len(events) - 1])
    if terminated:
        assert server.state is ServerState.CLOSED
    if any(isinstance(e, MessageReceived) for e in events):
        assert isinstance(events[0], Authenticated)


@settings(max_examples=300)
@given(st.lists(st.one_of(ANY_FRAME, st.binary(min_size=1, max_size=8)), max_size=8))
def test_client_raises_only_protocol_error(inputs: list[Frame | bytes]) -> None:
    client = ClientSession(CLIENT, SERVER.verify_key)
    for item in inputs:
        try:
            client.receive_data(item if isinstance(item, bytes) else encode(item))
        except ProtocolError:
            assert client.state is ClientState.CLOSED
            return


@pytest.mark.parametrize("frame", [
    Data(b"x" * 1000), Offer(MESSAGE_ID, RECIPIENT, 10), End(), Result(Status.ACK, "ok")])
def test_unauthenticated_peer_cannot_make_the_server_buffer(frame: Frame) -> None:
    """Before AUTH only an AUTH frame is read: anything else fails on its header, so a
    stranger never gets a 64 KiB DATA frame (or any other) buffered by trickling it."""
    server = new_server()
    server.data_to_send()
    header = encode(frame)[:3]
    events = server.receive_data(header, now=1.0)
    assert len(events) == 1 and isinstance(events[0], Terminated)
    assert events[0].error is not None and events[0].error.code is ErrorCode.UNEXPECTED
    assert server.state is ServerState.CLOSED and server._decoder.buffered == 0


def _pair_sharing(budget: ByteBudget) -> tuple[ClientSession, ServerSession]:
    server = ServerSession(SERVER, NONCE, max_message_size=1000, timeout=TIMEOUT, now=0.0,
                           budget=budget)
    client = ClientSession(CLIENT, SERVER.verify_key)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send(), now=1.0)
    client.receive_data(server.data_to_send())
    return client, server


def test_bodies_in_flight_share_one_budget() -> None:
    """Peers offering large messages at once are held to a total: one that does not fit is
    told to retry (TEMPFAIL), and the bytes come back when a message is committed or its
    connection fails or goes away."""
    budget = ByteBudget(1500)
    (c1, s1), (c2, s2), (c3, s3) = (_pair_sharing(budget) for _ in range(3))
    c1.offer(MESSAGE_ID, RECIPIENT, 1000)
    assert s1.receive_data(c1.data_to_send(), now=2.0) == []  # accepted: 1000 of 1500 held
    c2.offer(MESSAGE_ID, RECIPIENT, 800)
    [refused] = s2.receive_data(c2.data_to_send(), now=2.0)
    assert isinstance(refused, OfferRefused) and budget.used == 1000
    [finished] = c2.receive_data(s2.data_to_send())
    assert isinstance(finished, Finished) and finished.outcome.verdict is Verdict.TEMPORARY
    c3.offer(MESSAGE_ID, RECIPIENT, 500)
    assert s3.receive_data(c3.data_to_send(), now=2.0) == [] and budget.used == 1500
    s3.abandon()  # its connection dropped mid-body
    assert budget.used == 1000
    c1.receive_data(s1.data_to_send())
    c1.send_data(b"x" * 1000)
    c1.end()
    [received] = s1.receive_data(c1.data_to_send(), now=3.0)
    assert isinstance(received, MessageReceived) and budget.used == 1000  # committing
    s1.send_result(Outcome(Verdict.ACCEPTED, "stored"), now=4.0)
    assert budget.used == 0
    c2.offer(MESSAGE_ID, RECIPIENT, 800)  # the retry fits now
    assert s2.receive_data(c2.data_to_send(), now=5.0) == [] and budget.used == 800


def test_offers_beyond_the_senders_rate_are_told_to_retry() -> None:
    allowed = [True, False, True]
    server = ServerSession(SERVER, NONCE, max_message_size=1000, timeout=TIMEOUT, now=0.0,
                           may_offer=lambda: allowed.pop(0))
    client = ClientSession(CLIENT, SERVER.verify_key)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send(), now=1.0)
    client.receive_data(server.data_to_send())
    outcomes = []
    for _ in range(3):
        client.offer(MESSAGE_ID, RECIPIENT, 0)
        events = server.receive_data(client.data_to_send(), now=2.0)
        replies = client.receive_data(server.data_to_send())
        if events:
            assert isinstance(events[0], OfferRefused)
            [finished] = replies
            assert isinstance(finished, Finished)
            outcomes.append(finished.outcome.verdict)
            continue
        assert replies == [OfferAccepted()]
        client.end()
        [received] = server.receive_data(client.data_to_send(), now=3.0)
        assert isinstance(received, MessageReceived)
        server.send_result(Outcome(Verdict.ACCEPTED, "stored"), now=4.0)
        client.receive_data(server.data_to_send())
        outcomes.append(Verdict.ACCEPTED)
    assert outcomes == [Verdict.ACCEPTED, Verdict.TEMPORARY, Verdict.ACCEPTED]
