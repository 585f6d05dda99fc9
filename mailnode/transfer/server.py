"""Asyncio adapter for the receiving side: accepts TCP, upgrades to TLS, runs ServerSession.

The listener accepts plain TCP and upgrades each connection with ``loop.start_tls`` so that
the connection limit is enforced *before* any TLS work is done for a peer, and reading is
paused until the upgrade so the ClientHello cannot be swallowed by the plain transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from crypto.keys import Identity
from mailnode.guard import LOGIN_GRACE, ByteBudget, ConnectionTable, source_key
from mailnode.logsafe import LogThrottle, clean, held_back
from mailnode.ratelimit import RateLimiter
from mailnode.transfer.frames import (
    CHALLENGE_SIZE,
    DATA_CHUNK_SIZE,
    ErrorCode,
    ProtocolError,
    Redeem,
    Welcome,
)
from mailnode.transfer.session import (
    Authenticated,
    ClientEvent,
    ClientSession,
    DialbackRequested,
    Finished,
    InboundMessage,
    MessageReceived,
    OfferAccepted,
    OfferRefused,
    Outcome,
    PullRequested,
    RedeemRequested,
    ServerEvent,
    ServerSession,
    Terminated,
    Verdict,
)
from mailnode.transfer.tls import server_context

log = logging.getLogger(__name__)

AcceptCallback = Callable[[InboundMessage], Awaitable[Outcome]]
"""Commits a received message durably and says so; "already stored" must be ACCEPTED."""


@dataclass(frozen=True)
class HeldMessage:
    """A sealed envelope this node keeps, as a relay, for a friend's node."""

    id: int
    message_id: bytes
    recipient_key: bytes
    sealed: bytes


class Friendship(Protocol):
    """What the transfer server asks the friends' layer: invites and held mail."""

    async def redeem(self, peer_key: bytes, host: str, request: Redeem) -> Welcome | Outcome:
        """Answer an invite presented by ``peer_key`` (connected from ``host``)."""

    async def next_held(self, peer_key: bytes, after: int) -> HeldMessage | None:
        """The next envelope held for ``peer_key``'s node with an id above ``after``."""

    async def handed_over(self, held: HeldMessage, outcome: Outcome) -> None:
        """The node answered ``outcome`` for ``held`` (ACCEPTED: it stored it durably)."""

    async def dial_back(self, peer_key: bytes, endpoints: tuple[tuple[str, int], ...],
                        ) -> Outcome:
        """Connect to ``peer_key``'s ``endpoints`` for it; ACCEPTED when one answered."""


def _fingerprint(key: bytes | None) -> str:
    return key[:8].hex() if key else "-"


class TransferServer:
    """Listens for other nodes handing over sealed envelopes for this node's users.

    ``timeout`` bounds each phase separately: the TLS handshake, the client's AUTH, every
    frame while a body streams in, and the wait for the next OFFER on an idle connection.
    ``login_timeout`` (default ``timeout``) bounds handshake and AUTH together, absolutely:
    a peer that trickles bytes is still dropped. Connections are capped in total and per
    source address; when full, the oldest not yet authenticated one makes room.
    ``now`` (wall-clock seconds) is only read at ``start`` to date the node certificate.
    Any authenticated node may offer mail; deciding whether to take it is ``accept``'s job.
    """

    def __init__(
        self,
        identity: Identity,
        accept: AcceptCallback,
        *,
        max_message_size: int,
        max_connections: int = 64,
        max_connections_per_source: int = 20,
        max_sessions_per_peer: int | None = None,
        timeout: float = 60.0,
        login_timeout: float | None = None,
        now: Callable[[], float] = time.time,
        eviction_grace: float = LOGIN_GRACE,
        max_bytes_in_flight: int | None = None,
        messages_per_minute: int | None = None,
        on_peer: Callable[[bytes], None] | None = None,
        friendship: Friendship | None = None,
    ) -> None:
        if max_message_size < 0 or timeout <= 0 or (login_timeout or timeout) <= 0:
            raise ValueError("limits must be positive")
        self._identity = identity
        self._log_throttle = LogThrottle()
        # Bodies being received by all connections together: four of the largest by
        # default, so a crowd of peers offering big messages at once costs bounded memory
        # (the rest are told to retry, which their queues do).
        self._budget = ByteBudget(max_bytes_in_flight or 4 * max(max_message_size, 1 << 20))
        # Offers per sending address (IPv6: /64); node keys cost nothing, addresses do.
        self._rate = None if messages_per_minute is None else RateLimiter(messages_per_minute)
        self._accept = accept
        self._on_peer = on_peer
        self._friendship = friendship
        self._max_message_size = max_message_size
        self._timeout = timeout
        self._login_timeout = login_timeout or timeout
        self._now = now
        self._context: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._connections: ConnectionTable[_Connection] = ConnectionTable(
            max_connections, max_connections_per_source, max_sessions_per_peer,
            grace=eviction_grace)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def node_key(self) -> bytes:
        return self._identity.verify_key

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connection_count(self) -> int:
        """Open connections, TLS handshakes in progress included."""
        return len(self._connections)

    async def start(self, host: str, port: int) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._context = server_context(self._identity, self._now())
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        log.info("transfer server listening on %s:%d", host, self.port)

    async def stop(self) -> None:
        """Stop listening, drop every connection and cancel commits still running.

        A cancelled commit is safe: the sender never got an ACK and will retry, and message
        ids make the retry idempotent.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in self._connections.handles():
            connection.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        log.info("transfer server stopped")

    # used by _Connection

    def _admit(self, connection: _Connection) -> bool:
        if self._server is None:
            return False
        source = source_key(connection.host)
        admission = self._connections.admit(
            connection, source, asyncio.get_running_loop().time())
        if not admission.admitted:
            held = self._log_throttle.allow(source)
            if held is not None:
                log.warning("refusing transfer connection from %s: %s%s", connection.peer,
                            admission.reason, held_back(held))
            return False
        if admission.evict is not None:
            log.debug("evicting unauthenticated transfer connection from %s: listener full",
                     admission.evict.peer)
            admission.evict.abort()
        return True

    def _release(self, connection: _Connection) -> None:
        self._connections.release(connection)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Connection(asyncio.Protocol):
    """One peer connection: moves bytes between the transport and a ServerSession."""

    def __init__(self, owner: TransferServer) -> None:
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._tls: asyncio.Transport | None = None
        self._session: ServerSession | None = None
        self._early = bytearray()
        self._turned: ClientSession | None = None  # after a PULL: we offer, the peer answers
        self._turned_events: asyncio.Queue[ClientEvent | None] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._login_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.peer = "?"
        self.host = "unknown"

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called once, for the plain TCP transport (start_tls does not call it again).
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.host = str(peername[0])
            self.peer = f"{peername[0]}:{peername[1]}"
        if not self._owner._admit(self):
            self._closed = True
            transport.abort()
            return
        self._login_timer = self._loop.call_later(self._owner._login_timeout,
                                                  self._login_expired)
        transport.pause_reading()
        self._owner._spawn(self._upgrade(transport))

    def data_received(self, data: bytes) -> None:
        if self._turned is not None:
            self._turned_received(data)
            return
        if self._session is None:
            # TLS completed but _upgrade has not resumed yet: hold the bytes for it.
            self._early += data
            return
        self._process(self._session.receive_data(data, self._loop.time()))

    def eof_received(self) -> bool | None:
        if self._turned is not None:
            self._turned_events.put_nowait(None)
        elif self._session is not None:
            self._process(self._session.receive_eof())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    # lifecycle

    def abort(self) -> None:
        """Drop the connection at once (server shutdown)."""
        transport = self._tls or self._transport
        if transport is not None:
            transport.abort()
        self._finish()

    def _finish(self) -> None:
        for timer in (self._timer, self._login_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._login_timer = None
        if not self._closed:
            self._closed = True
            log.debug("transfer connection from %s closed", self.peer)
        if self._session is not None:
            self._session.abandon()
        self._turned_events.put_nowait(None)  # wakes a hand-over waiting for an answer
        self._owner._release(self)

    def _close(self) -> None:
        """Orderly close: pending frames (an ERROR, say) are flushed first."""
        if self._tls is not None:
            self._tls.close()
        elif self._transport is not None:
            self._transport.close()
        self._finish()

    def _login_expired(self) -> None:
        """Handshake and AUTH did not both finish within ``login_timeout``."""
        self._login_timer = None
        log.info("closing transfer connection from %s: not authenticated in time", self.peer)
        self._hang_up(ErrorCode.TIMEOUT, "not authenticated in time")

    def _hang_up(self, code: ErrorCode, reason: str) -> None:
        """Close with a parting ERROR frame when the TLS session is up, else just drop."""
        if self._session is None or self._tls is None:
            self.abort()
            return
        self._session.close(code, reason)
        if not self._closed:
            self._tls.write(self._session.data_to_send())
        self._close()

    async def _upgrade(self, raw: asyncio.Transport) -> None:
        owner = self._owner
        assert owner._context is not None
        try:
            tls = await self._loop.start_tls(
                raw,
                self,
                owner._context,
                server_side=True,
                ssl_handshake_timeout=owner._timeout,
                ssl_shutdown_timeout=owner._timeout,
            )
        except (OSError, EOFError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, clean(exc))
            raw.abort()
            self._finish()
            return
        if tls is None or self._closed:
            if tls is not None:
                tls.abort()
            raw.abort()
            self._finish()
            return
        self._tls = tls
        session = ServerSession(
            owner._identity,
            os.urandom(CHALLENGE_SIZE),
            max_message_size=owner._max_message_size,
            timeout=owner._timeout,
            now=self._loop.time(),
            budget=owner._budget,
            may_offer=None if owner._rate is None else self._may_offer,
            budget_owner=source_key(self.host),
        )
        self._session = session
        early, self._early = bytes(self._early), bytearray()
        self._process(session.receive_data(early, self._loop.time()))

    def _may_offer(self) -> bool:
        rate = self._owner._rate
        return rate is None or rate.try_acquire(source_key(self.host)) == 0.0

    def _process(self, events: list[ServerEvent]) -> None:
        session = self._session
        assert session is not None and self._tls is not None
        data = session.data_to_send()
        if data and not self._closed:
            self._tls.write(data)
        for event in events:
            if isinstance(event, Authenticated):
                log.info(
                    "transfer peer %s authenticated as node %s",
                    self.peer,
                    _fingerprint(event.peer_node_key),
                )
                if self._login_timer is not None:
                    self._login_timer.cancel()
                    self._login_timer = None
                if not self._owner._connections.login(self, event.peer_node_key):
                    log.info("closing transfer connection from %s: too many from node %s",
                             self.peer, _fingerprint(event.peer_node_key))
                    self._hang_up(ErrorCode.UNEXPECTED, "too many connections from your node")
                    return
                if self._owner._on_peer is not None:
                    self._owner._on_peer(event.peer_node_key)  # it is up: mail for it may go
            elif isinstance(event, OfferRefused):
                log.info(
                    "refused message %s (%d bytes) from node %s: %s",
                    event.message_id.hex(),
                    event.size,
                    _fingerprint(session.peer_node_key),
                    clean(event.reason),
                )
            elif isinstance(event, MessageReceived):
                self._tls.pause_reading()
                self._owner._spawn(self._commit(
                    dataclasses.replace(event.message, source=source_key(self.host))))
            elif isinstance(event, RedeemRequested):
                self._tls.pause_reading()
                self._owner._spawn(self._redeem(event))
            elif isinstance(event, DialbackRequested):
                self._tls.pause_reading()
                self._owner._spawn(self._dial_back(event))
            elif isinstance(event, PullRequested):
                self._turned = ClientSession.turned(self._owner._identity, event.peer_node_key)
                self._owner._spawn(self._hand_over(event.peer_node_key, event.leftover))
            elif isinstance(event, Terminated):
                if event.error is not None:
                    log.info(
                        "closing transfer connection from %s (node %s): %s",
                        self.peer,
                        _fingerprint(session.peer_node_key),
                        clean(event.error),
                    )
                self._close()
        self._arm_timer()

    async def _commit(self, message: InboundMessage) -> None:
        message_hex = message.message_id.hex()
        try:
            outcome = await self._owner._accept(message)
        except Exception:
            log.exception("accept callback failed for message %s", message_hex)
            outcome = Outcome(Verdict.TEMPORARY, "internal error while storing the message")
        log.info(
            "message %s (%d bytes) from node %s: %s %s",
            message_hex,
            len(message.sealed),
            _fingerprint(message.peer_node_key),
            outcome.verdict.value,
            clean(outcome.reason),
        )
        session = self._session
        if self._closed or session is None or self._tls is None:
            return  # the peer left; it will retry and find the message already stored
        session.send_result(outcome, self._loop.time())
        self._tls.resume_reading()
        self._process(session.receive_data(b"", self._loop.time()))

    async def _redeem(self, event: RedeemRequested) -> None:
        friendship = self._owner._friendship
        await self._answer(
            event.peer_node_key, "answering an invite",
            None if friendship is None else
            friendship.redeem(event.peer_node_key, self.host, event.request),
            "this node takes no invites")

    async def _dial_back(self, event: DialbackRequested) -> None:
        friendship = self._owner._friendship
        await self._answer(
            event.peer_node_key, "a dial-back",
            None if friendship is None else
            friendship.dial_back(event.peer_node_key, event.endpoints),
            "this node dials back only for friends")

    async def _answer(self, peer_key: bytes, what: str,
                      asking: Awaitable[Welcome | Outcome] | None, refusal: str) -> None:
        """Send the friends' layer's answer to a request (a refusal when there is none),
        then read on."""
        answer: Welcome | Outcome
        try:
            answer = Outcome(Verdict.PERMANENT, refusal) if asking is None else await asking
        except Exception:
            log.exception("%s for node %s failed", what, _fingerprint(peer_key))
            answer = Outcome(Verdict.TEMPORARY, "internal error; try again later")
        session = self._session
        if self._closed or session is None or self._tls is None:
            return
        if isinstance(answer, Welcome):
            session.send_welcome(answer, self._loop.time())
        else:
            session.send_result(answer, self._loop.time())
        self._tls.resume_reading()
        self._process(session.receive_data(b"", self._loop.time()))

    def _turned_received(self, data: bytes) -> None:
        assert self._turned is not None
        try:
            events = self._turned.receive_data(data)
        except ProtocolError as exc:
            log.info("closing transfer connection from %s during a hand-over: %s", self.peer,
                     clean(exc))
            self._flush_turned()
            self._close()
            return
        for event in events:
            self._turned_events.put_nowait(event)

    def _flush_turned(self) -> None:
        if self._turned is not None and self._tls is not None and not self._closed:
            data = self._turned.data_to_send()
            if data:
                self._tls.write(data)

    async def _turned_event(self) -> ClientEvent:
        try:
            event = await asyncio.wait_for(self._turned_events.get(), self._owner._timeout)
        except TimeoutError:
            event = None
        if event is None:
            raise ConnectionError("the node left during the hand-over")
        return event

    async def _hand_over(self, peer_key: bytes, leftover: bytes) -> None:
        """Offer the peer's node everything we hold for it, one message at a time, deleting
        each once it said it stored it; then close (which tells the peer we are done)."""
        friendship = self._owner._friendship
        assert self._turned is not None
        turned = self._turned
        if self._timer is not None:  # the server session's deadlines no longer apply
            self._timer.cancel()
            self._timer = None
        if leftover:
            self._turned_received(leftover)
        after, count = 0, 0
        try:
            while friendship is not None and not self._closed:
                held = await friendship.next_held(peer_key, after)
                if held is None:
                    break
                after = held.id
                turned.offer(held.message_id, held.recipient_key, len(held.sealed))
                self._flush_turned()
                event = await self._turned_event()
                if isinstance(event, OfferAccepted):
                    view = memoryview(held.sealed)
                    for start in range(0, len(view), DATA_CHUNK_SIZE):
                        turned.send_data(bytes(view[start : start + DATA_CHUNK_SIZE]))
                    turned.end()
                    self._flush_turned()
                    event = await self._turned_event()
                if not isinstance(event, Finished):
                    raise ConnectionError(f"unexpected {type(event).__name__}")
                await friendship.handed_over(held, event.outcome)
                count += event.outcome.verdict is Verdict.ACCEPTED
        except (ConnectionError, RuntimeError, ValueError) as exc:
            log.info("hand-over to node %s stopped: %s", _fingerprint(peer_key), clean(exc))
        if count:
            log.info("handed %d held message(s) to node %s", count, _fingerprint(peer_key))
        self._close()

    # timers

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._session.deadline if self._session is not None else None
        if deadline is not None and not self._closed:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._session is not None and not self._closed:
            self._process(self._session.handle_timeout(self._loop.time()))
