"""Sans-IO state machines for both ends of a transfer connection.

They take decoded bytes (and, on the server, the current time) and produce events plus bytes
to send. The asyncio adapters in ``server.py`` and ``client.py`` only move bytes, run the
callback and arm timers, so every protocol rule here is tested without sockets or sleeping.

Connection flow (after the TLS 1.3 handshake, in which the client pinned the server key)::

    S: CHALLENGE(version, server_key, nonce)
    C: AUTH(client_key, sign(client, "transfer-hello-v1", server_key + nonce + client_key))
    S: READY
    then, repeated for each message:
    C: OFFER(message_id, recipient_key, size)      (or HOLD: the same, for a relay)
    S: REJECT(status, reason)                       -- or --
    S: ACCEPT_OFFER   C: DATA* END   S: RESULT(status, reason)
    or, between messages:
    C: REDEEM(invite secret, terms)   S: WELCOME(terms)  -- or --  S: RESULT(status, reason)
    C: DIALBACK(endpoints)   S: RESULT (ACK: the server's dial reached us there)
    C: PULL   then the roles turn: the server offers what it holds for the client's node,
              the client answers, and the server closes the connection when it is done.

Either side may send ERROR(code, reason) and close.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from crypto.keys import Identity
from crypto.signing import SignatureError, sign, verify
from mailnode.guard import ByteBudget
from mailnode.transfer.frames import (
    CHALLENGE_SIZE,
    KEY_SIZE,
    MESSAGE_ID_SIZE,
    PROTOCOL_VERSION,
    AcceptOffer,
    Auth,
    Challenge,
    Data,
    DecodeFailed,
    Dialback,
    End,
    Error,
    ErrorCode,
    Frame,
    FrameDecoder,
    Hold,
    Offer,
    PeerReportedError,
    ProtocolError,
    Pull,
    Ready,
    Redeem,
    Reject,
    Result,
    Status,
    Welcome,
    encode,
)

AUTH_CONTEXT = b"transfer-hello-v1"
"""Signature context of the client's AUTH, so the signature is useless for anything else."""


class Verdict(enum.Enum):
    """What became of a message: stored, refused for good, or to be retried later."""

    ACCEPTED = "accepted"
    PERMANENT = "permanent"
    TEMPORARY = "temporary"


_VERDICT_TO_STATUS = {
    Verdict.ACCEPTED: Status.ACK,
    Verdict.PERMANENT: Status.PERMANENT,
    Verdict.TEMPORARY: Status.TEMPFAIL,
}
_STATUS_TO_VERDICT = {status: verdict for verdict, status in _VERDICT_TO_STATUS.items()}


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class InboundMessage:
    """A fully received message, handed to the node's acceptance callback."""

    peer_node_key: bytes
    message_id: bytes
    recipient_key: bytes
    sealed: bytes
    record: bytes | None = None
    """Set when the message came in a HOLD: the recipient's address record, for a relay."""
    source: str = ""
    """The address (IPv6: /64) it came from, set by the adapter (a relay caps its share)."""


class TransferError(OSError):
    """Sending failed for a network, TLS or protocol reason; the caller should retry later.

    It subclasses OSError so a delivery queue catching OSError treats every transfer failure
    as temporary, which is right: even a pin mismatch may just mean a stale DHT record.
    """


class PinMismatchError(TransferError):
    """The server's TLS certificate key is not the node key the DHT record pins."""


def auth_payload(server_key: bytes, nonce: bytes, client_key: bytes) -> bytes:
    """Bytes the client signs: binding the pinned server key defeats relaying, the nonce replay."""
    return server_key + nonce + client_key


# --- server ------------------------------------------------------------------------------


class ServerState(enum.Enum):
    AWAIT_AUTH = "await-auth"
    IDLE = "idle"
    RECEIVING = "receiving"
    AWAIT_COMMIT = "await-commit"
    TURNED = "turned"
    CLOSED = "closed"


@dataclass(frozen=True)
class Authenticated:
    peer_node_key: bytes


@dataclass(frozen=True)
class OfferRefused:
    """An offer was rejected before its body was read (reported for logging)."""

    message_id: bytes
    size: int
    reason: str


@dataclass(frozen=True)
class MessageReceived:
    """A whole body arrived; the adapter must commit it and call ``send_result``."""

    message: InboundMessage


@dataclass(frozen=True)
class Terminated:
    """The connection is over; ``error`` is None on an orderly close between messages."""

    error: ProtocolError | None


@dataclass(frozen=True)
class RedeemRequested:
    """A peer presents an invite; the adapter answers with ``send_welcome`` or
    ``send_result`` (a refusal)."""

    peer_node_key: bytes
    request: Redeem


@dataclass(frozen=True)
class PullRequested:
    """The peer asked for what we hold for it: this session is done with the connection,
    which now carries a :meth:`ClientSession.turned` session the other way."""

    peer_node_key: bytes
    leftover: bytes


@dataclass(frozen=True)
class DialbackRequested:
    """A peer asks us to dial its endpoints; the adapter answers with ``send_result``."""

    peer_node_key: bytes
    endpoints: tuple[tuple[str, int], ...]


ServerEvent = (Authenticated | OfferRefused | MessageReceived | RedeemRequested
               | DialbackRequested | PullRequested | Terminated)


def _types(*classes: type[Frame]) -> frozenset[int]:
    return frozenset(int(cls.TYPE) for cls in classes)


_EXPECTED = {
    ServerState.AWAIT_AUTH: _types(Auth, Error),
    ServerState.IDLE: _types(Offer, Hold, Redeem, Dialback, Pull, Error),
    ServerState.RECEIVING: _types(Data, End, Error),
}
"""Frames the server accepts in each state; anything else fails on its type byte."""


class ServerSession:
    """Receiving side of one connection.

    Deadlines: the client has ``timeout`` seconds for each frame (the first AUTH included, and
    the next OFFER while idle); no deadline runs while the local callback is committing.
    While a message is being committed the session stops consuming input, so a client that
    pipelines ahead cannot make us buffer more than what is already in the decoder.
    """

    def __init__(
        self,
        identity: Identity,
        nonce: bytes,
        *,
        max_message_size: int,
        timeout: float,
        now: float,
        budget: ByteBudget | None = None,
        may_offer: Callable[[], bool] | None = None,
        budget_owner: object = None,
    ) -> None:
        if len(nonce) != CHALLENGE_SIZE:
            raise ValueError("challenge nonce must be 32 bytes")
        self._identity = identity
        self._server_key = identity.verify_key
        self._nonce = nonce
        self._max_message_size = max_message_size
        self._timeout = timeout
        self._budget = budget
        self._budget_owner = budget_owner  # the sending address: its share is capped
        self._may_offer = may_offer  # the sender's rate limit, asked once per OFFER
        self._reserved = 0  # bytes of the budget held for the message being received
        self._decoder = FrameDecoder()
        self._outbox = bytearray()
        self._state = ServerState.AWAIT_AUTH
        self._peer_key: bytes | None = None
        self._offer: Offer | Hold | None = None
        self._body = bytearray()
        self._deadline: float | None = now + timeout
        self._send(Challenge(PROTOCOL_VERSION, self._server_key, nonce))

    @classmethod
    def turned(cls, identity: Identity, peer_key: bytes, *, max_message_size: int,
               timeout: float, now: float) -> ServerSession:
        """The receiving side on a connection we opened and then PULLed on: the peer was
        authenticated by the TLS pin, so no challenge; it offers, we answer."""
        session = cls(identity, bytes(CHALLENGE_SIZE), max_message_size=max_message_size,
                      timeout=timeout, now=now)
        session._outbox.clear()  # no CHALLENGE: the peer is the server of this connection
        session._peer_key = peer_key
        session._state = ServerState.IDLE
        return session

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def peer_node_key(self) -> bytes | None:
        return self._peer_key

    @property
    def deadline(self) -> float | None:
        """When ``handle_timeout`` must be called if no more input has arrived."""
        return self._deadline

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def receive_data(self, data: bytes, now: float) -> list[ServerEvent]:
        """Consume bytes from the peer (``b""`` just resumes processing after a commit)."""
        if self._state is ServerState.CLOSED:
            return []
        self._decoder.feed(data)
        events: list[ServerEvent] = []
        while self._state is ServerState.IDLE or self._state is ServerState.RECEIVING \
                or self._state is ServerState.AWAIT_AUTH:
            self._decoder.expect(_EXPECTED[self._state])
            item = self._decoder.next_event()
            if item is None:
                break
            try:
                if isinstance(item, DecodeFailed):
                    raise item.error
                self._deadline = now + self._timeout
                event = self._handle(item)
            except ProtocolError as exc:
                events.append(self._fail(exc))
                break
            if event is not None:
                events.append(event)
        return events

    def receive_eof(self) -> list[ServerEvent]:
        """The peer closed its side: fine between messages, a protocol error otherwise."""
        if self._state in (ServerState.CLOSED, ServerState.TURNED):
            return []
        if self._state is ServerState.IDLE and not self._decoder.buffered:
            self._state = ServerState.CLOSED
            self._deadline = None
            return [Terminated(None)]
        error = ProtocolError(
            ErrorCode.UNEXPECTED, f"connection closed in state {self._state.value}"
        )
        self._state = ServerState.CLOSED
        self._deadline = None
        self._release()
        return [Terminated(error)]

    def abandon(self) -> None:
        """The connection is gone: give back whatever it held (its share of the budget)."""
        self._state = ServerState.CLOSED
        self._deadline = None
        self._body = bytearray()
        self._release()

    def handle_timeout(self, now: float) -> list[ServerEvent]:
        if self._deadline is None or now < self._deadline or self._state is ServerState.CLOSED:
            return []
        phase = self._state.value
        return [self._fail(ProtocolError(ErrorCode.TIMEOUT, f"no frame in time ({phase})"))]

    def send_result(self, outcome: Outcome, now: float) -> None:
        """Report the callback's verdict on the last MessageReceived (or RedeemRequested)."""
        if self._state is not ServerState.AWAIT_COMMIT:
            raise RuntimeError(f"no message awaiting a result (state {self._state.value})")
        self._send(Result(_VERDICT_TO_STATUS[outcome.verdict], outcome.reason))
        self._idle(now)

    def send_welcome(self, welcome: Welcome, now: float) -> None:
        """Accept the invite from the last RedeemRequested."""
        if self._state is not ServerState.AWAIT_COMMIT or self._offer is not None:
            raise RuntimeError(f"no invite awaiting an answer (state {self._state.value})")
        self._send(welcome)
        self._idle(now)

    def _idle(self, now: float) -> None:
        self._release()
        self._state = ServerState.IDLE
        self._offer = None
        self._deadline = now + self._timeout

    def close(self, code: ErrorCode, reason: str) -> None:
        """Locally decided close (e.g. shutting down): tell the peer why."""
        if self._state is not ServerState.CLOSED:
            self._send(Error(code, reason))
            self._state = ServerState.CLOSED
            self._deadline = None
        self._release()

    def _release(self) -> None:
        """Give back the budget held for the current message (idempotent)."""
        if self._budget is not None and self._reserved:
            self._budget.release(self._reserved, self._budget_owner)
        self._reserved = 0

    # internals

    def _send(self, frame: Frame) -> None:
        self._outbox += encode(frame)

    def _fail(self, error: ProtocolError) -> Terminated:
        if not isinstance(error, PeerReportedError):
            self._send(Error(error.code, error.detail))
        self._state = ServerState.CLOSED
        self._deadline = None
        self._body = bytearray()
        self._release()
        return Terminated(error)

    def _handle(self, frame: Frame) -> ServerEvent | None:
        if isinstance(frame, Error):
            raise PeerReportedError(frame.code, f"peer reported: {frame.reason}")
        state = self._state
        if state is ServerState.AWAIT_AUTH and isinstance(frame, Auth):
            return self._on_auth(frame)
        if state is ServerState.IDLE and isinstance(frame, Offer | Hold):
            return self._on_offer(frame)
        if state is ServerState.IDLE and isinstance(frame, Redeem):
            assert self._peer_key is not None
            self._state = ServerState.AWAIT_COMMIT
            self._deadline = None
            return RedeemRequested(self._peer_key, frame)
        if state is ServerState.IDLE and isinstance(frame, Dialback):
            assert self._peer_key is not None
            self._state = ServerState.AWAIT_COMMIT
            self._deadline = None
            return DialbackRequested(self._peer_key, frame.endpoints)
        if state is ServerState.IDLE and isinstance(frame, Pull):
            assert self._peer_key is not None
            self._state = ServerState.TURNED
            self._deadline = None
            leftover = bytes(self._decoder.take())
            return PullRequested(self._peer_key, leftover)
        if state is ServerState.RECEIVING and isinstance(frame, Data):
            self._on_data(frame)
            return None
        if state is ServerState.RECEIVING and isinstance(frame, End):
            return self._on_end()
        raise ProtocolError(
            ErrorCode.UNEXPECTED, f"{frame.TYPE.name} not allowed in state {state.value}"
        )

    def _on_auth(self, frame: Auth) -> ServerEvent:
        data = auth_payload(self._server_key, self._nonce, frame.client_key)
        try:
            verify(frame.client_key, AUTH_CONTEXT, data, frame.signature)
        except SignatureError:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "client signature does not verify") from None
        self._peer_key = frame.client_key
        self._state = ServerState.IDLE
        self._send(Ready())
        return Authenticated(frame.client_key)

    def _on_offer(self, frame: Offer | Hold) -> ServerEvent | None:
        if frame.size > self._max_message_size:
            reason = f"message of {frame.size} bytes exceeds the limit of {self._max_message_size}"
            self._send(Reject(Status.PERMANENT, reason))
            return OfferRefused(frame.message_id, frame.size, reason)
        if self._may_offer is not None and not self._may_offer():
            reason = "too many messages from your address; try again later"
            self._send(Reject(Status.TEMPFAIL, reason))
            return OfferRefused(frame.message_id, frame.size, reason)
        if self._budget is not None:
            if not self._budget.reserve(frame.size, self._budget_owner):
                reason = "too many messages arriving at once; try again later"
                self._send(Reject(Status.TEMPFAIL, reason))
                return OfferRefused(frame.message_id, frame.size, reason)
            self._reserved = frame.size
        self._offer = frame
        self._body = bytearray()
        self._state = ServerState.RECEIVING
        self._send(AcceptOffer())
        return None

    def _on_data(self, frame: Data) -> None:
        assert self._offer is not None
        if len(self._body) + len(frame.chunk) > self._offer.size:
            raise ProtocolError(ErrorCode.UNEXPECTED, "more DATA than the offered size")
        self._body += frame.chunk

    def _on_end(self) -> ServerEvent:
        offer = self._offer
        assert offer is not None and self._peer_key is not None
        if len(self._body) != offer.size:
            raise ProtocolError(
                ErrorCode.UNEXPECTED, f"END after {len(self._body)} of {offer.size} bytes"
            )
        sealed = bytes(self._body)
        self._body = bytearray()
        self._state = ServerState.AWAIT_COMMIT
        self._deadline = None
        record = offer.record if isinstance(offer, Hold) else None
        message = InboundMessage(self._peer_key, offer.message_id, offer.recipient_key, sealed,
                                 record)
        return MessageReceived(message)


# --- client ------------------------------------------------------------------------------


class ClientState(enum.Enum):
    AWAIT_CHALLENGE = "await-challenge"
    AWAIT_READY = "await-ready"
    IDLE = "idle"
    AWAIT_OFFER_REPLY = "await-offer-reply"
    SENDING = "sending"
    AWAIT_RESULT = "await-result"
    AWAIT_ANSWER = "await-answer"
    TURNED = "turned"
    CLOSED = "closed"


@dataclass(frozen=True)
class ReadyEvent:
    """Authentication done; ``offer`` may be called."""


@dataclass(frozen=True)
class OfferAccepted:
    """Stream the body with ``send_data`` and finish with ``end``."""


@dataclass(frozen=True)
class Finished:
    """The server's final word on the current message (a REJECT of the offer or a RESULT)."""

    outcome: Outcome


@dataclass(frozen=True)
class Welcomed:
    """The server accepted our REDEEM: we are friends, on these terms."""

    welcome: Welcome


ClientEvent = ReadyEvent | OfferAccepted | Finished | Welcomed


class ClientSession:
    """Sending side of one connection; raises ProtocolError when the server misbehaves.

    The client never trusts the server's claimed key: it signs the key it pinned from the DHT
    (and already checked against the TLS certificate), so a relaying middleman's challenge
    yields a signature the real server rejects.
    """

    def __init__(self, identity: Identity, pinned_key: bytes) -> None:
        if len(pinned_key) != KEY_SIZE:
            raise ValueError("a node key is 32 bytes")
        self._identity = identity
        self._pinned_key = pinned_key
        self._decoder = FrameDecoder()
        self._outbox = bytearray()
        self._state = ClientState.AWAIT_CHALLENGE
        self._offer: Offer | Hold | None = None
        self._sent = 0

    @classmethod
    def turned(cls, identity: Identity, peer_key: bytes, leftover: bytes = b"") -> ClientSession:
        """The offering side on a connection the peer opened and then PULLed on: it already
        authenticated to us, so we start idle, ready to offer."""
        session = cls(identity, peer_key)
        session._state = ClientState.IDLE
        session._decoder.feed(leftover)
        return session

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def identity(self) -> Identity:
        return self._identity

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        if self._state is ClientState.CLOSED:
            return []
        self._decoder.feed(data)
        events: list[ClientEvent] = []
        while self._state is not ClientState.TURNED \
                and (item := self._decoder.next_event()) is not None:
            try:
                if isinstance(item, DecodeFailed):
                    raise item.error
                event = self._handle(item)
            except ProtocolError as exc:
                if not isinstance(exc, PeerReportedError):
                    self._send(Error(exc.code, exc.detail))
                self._state = ClientState.CLOSED
                raise
            if event is not None:
                events.append(event)
        return events

    def offer(self, message_id: bytes, recipient_key: bytes, size: int) -> None:
        if self._state is not ClientState.IDLE:
            raise RuntimeError(f"cannot offer in state {self._state.value}")
        if len(message_id) != MESSAGE_ID_SIZE or len(recipient_key) != KEY_SIZE:
            raise ValueError("message id is 16 bytes and recipient key 32 bytes")
        if not 0 <= size < 2**64:
            raise ValueError("size out of range")
        self._offer = Offer(message_id, recipient_key, size)
        self._sent = 0
        self._send(self._offer)
        self._state = ClientState.AWAIT_OFFER_REPLY

    def hold(self, message_id: bytes, recipient_key: bytes, size: int, record: bytes) -> None:
        """Offer a message to a relay, with the recipient's record that names its node."""
        self.offer(message_id, recipient_key, size)
        self._outbox.clear()
        self._offer = Hold(message_id, recipient_key, size, record)
        self._send(self._offer)

    def redeem(self, request: Redeem) -> None:
        if self._state is not ClientState.IDLE:
            raise RuntimeError(f"cannot redeem in state {self._state.value}")
        self._send(request)
        self._state = ClientState.AWAIT_ANSWER

    def dial_back(self, endpoints: tuple[tuple[str, int], ...]) -> None:
        if self._state is not ClientState.IDLE:
            raise RuntimeError(f"cannot ask for a dial-back in state {self._state.value}")
        self._send(Dialback(endpoints))
        self._state = ClientState.AWAIT_ANSWER

    def pull(self) -> bytes:
        """Ask for what the server holds for us; this session is done with the connection.
        Returns bytes already received and not decoded (for the turned server session)."""
        if self._state is not ClientState.IDLE:
            raise RuntimeError(f"cannot pull in state {self._state.value}")
        self._send(Pull())
        self._state = ClientState.TURNED
        return self._decoder.take()

    def send_data(self, chunk: bytes) -> None:
        if self._state is not ClientState.SENDING or self._offer is None:
            raise RuntimeError(f"cannot send data in state {self._state.value}")
        if not chunk:
            return
        if self._sent + len(chunk) > self._offer.size:
            raise ValueError("more data than offered")
        self._sent += len(chunk)
        self._send(Data(chunk))

    def end(self) -> None:
        if self._state is not ClientState.SENDING or self._offer is None:
            raise RuntimeError(f"cannot end in state {self._state.value}")
        if self._sent != self._offer.size:
            raise ValueError(f"sent {self._sent} of {self._offer.size} offered bytes")
        self._send(End())
        self._state = ClientState.AWAIT_RESULT

    def _send(self, frame: Frame) -> None:
        self._outbox += encode(frame)

    def _handle(self, frame: Frame) -> ClientEvent | None:
        if isinstance(frame, Error):
            raise PeerReportedError(frame.code, f"peer reported: {frame.reason}")
        state = self._state
        if state is ClientState.AWAIT_CHALLENGE and isinstance(frame, Challenge):
            self._on_challenge(frame)
            return None
        if state is ClientState.AWAIT_READY and isinstance(frame, Ready):
            self._state = ClientState.IDLE
            return ReadyEvent()
        if state is ClientState.AWAIT_OFFER_REPLY and isinstance(frame, AcceptOffer):
            self._state = ClientState.SENDING
            return OfferAccepted()
        if state is ClientState.AWAIT_OFFER_REPLY and isinstance(frame, Reject):
            self._state = ClientState.IDLE
            return Finished(Outcome(_STATUS_TO_VERDICT[frame.status], frame.reason))
        if state in (ClientState.AWAIT_RESULT, ClientState.AWAIT_ANSWER) \
                and isinstance(frame, Result):
            self._state = ClientState.IDLE
            return Finished(Outcome(_STATUS_TO_VERDICT[frame.status], frame.reason))
        if state is ClientState.AWAIT_ANSWER and isinstance(frame, Welcome):
            self._state = ClientState.IDLE
            return Welcomed(frame)
        raise ProtocolError(
            ErrorCode.UNEXPECTED, f"{frame.TYPE.name} not allowed in state {state.value}"
        )

    def _on_challenge(self, frame: Challenge) -> None:
        # No event: the AUTH reply is queued and the caller keeps reading until READY.
        if frame.version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION, f"server speaks version {frame.version}"
            )
        if not hmac.compare_digest(frame.server_key, self._pinned_key):
            raise ProtocolError(
                ErrorCode.AUTH_FAILED, "server announced a key other than the pinned one"
            )
        client_key = self._identity.verify_key
        signature = sign(
            self._identity, AUTH_CONTEXT, auth_payload(self._pinned_key, frame.nonce, client_key)
        )
        self._send(Auth(client_key, signature))
        self._state = ClientState.AWAIT_READY
