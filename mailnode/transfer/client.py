"""Asyncio adapter for the sending side: connect, pin, authenticate, stream messages.

Every failure here (network, TLS, pin mismatch, a misbehaving server, a timeout) surfaces as
TransferError, an OSError, which the delivery queue treats as "try again later". Only a
server's explicit verdict (REJECT or RESULT) becomes an Outcome.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from crypto.keys import Identity
from mailnode.logsafe import clean
from mailnode.transfer.frames import (
    DATA_CHUNK_SIZE,
    KEY_SIZE,
    MESSAGE_ID_SIZE,
    ProtocolError,
    Redeem,
    Welcome,
)
from mailnode.transfer.session import (
    ClientEvent,
    ClientSession,
    Finished,
    InboundMessage,
    MessageReceived,
    OfferAccepted,
    OfferRefused,
    Outcome,
    PinMismatchError,
    ReadyEvent,
    ServerEvent,
    ServerSession,
    Terminated,
    TransferError,
    Verdict,
    Welcomed,
)
from mailnode.transfer.tls import check_pin, client_context

log = logging.getLogger(__name__)

READ_SIZE = DATA_CHUNK_SIZE


def _check_message(message_id: bytes, recipient_key: bytes) -> None:
    """Bad ids are local bugs: fail loudly with ValueError, not as a retryable TransferError."""
    if len(message_id) != MESSAGE_ID_SIZE:
        raise ValueError("message id must be 16 bytes")
    if len(recipient_key) != KEY_SIZE:
        raise ValueError("recipient key must be 32 bytes")


class TransferConnection:
    """An authenticated connection to one peer node; messages are sent one after another.

    Use it as an async context manager, or call ``close``. After any TransferError the
    connection is unusable and already closed.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: ClientSession,
        *,
        node_key: bytes,
        label: str,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._session = session
        self._node_key = node_key
        self._label = label
        self._timeout = timeout
        self._events: collections.deque[ClientEvent] = collections.deque()
        self._lock = asyncio.Lock()
        self._broken = False

    @property
    def peer_node_key(self) -> bytes:
        return self._node_key

    async def __aenter__(self) -> TransferConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, message_id: bytes, recipient_key: bytes, sealed: bytes,
                   record: bytes | None = None) -> Outcome:
        """Offer, stream and commit one message; returns the receiver's verdict.

        With ``record`` (the recipient's address record) it is a HOLD: the receiver is a
        relay asked to keep the envelope for the recipient's node.
        """
        _check_message(message_id, recipient_key)
        async with self._lock:
            if self._broken:
                raise TransferError(f"connection to {self._label} is closed")
            try:
                outcome = await self._send(message_id, recipient_key, sealed, record)
            except BaseException:
                self._abort()
                raise
        log.info(
            "message %s (%d bytes) to %s: %s %s",
            message_id.hex(),
            len(sealed),
            clean(self._label),
            outcome.verdict.value,
            clean(outcome.reason),  # the receiving node's words
        )
        return outcome

    async def redeem(self, request: Redeem) -> Welcome | Outcome:
        """Present an invite; the server's WELCOME, or its refusal."""
        event = await self._ask(lambda: self._session.redeem(request))
        if isinstance(event, Welcomed):
            return event.welcome
        if isinstance(event, Finished):
            return event.outcome
        self._abort()
        raise TransferError(f"{self._label}: unexpected {type(event).__name__}")

    async def dial_back(self, endpoints: tuple[tuple[str, int], ...]) -> Outcome:
        """Ask the server to connect to our ``endpoints``; ACCEPTED when it reached us."""
        event = await self._ask(lambda: self._session.dial_back(endpoints))
        if isinstance(event, Finished):
            return event.outcome
        self._abort()
        raise TransferError(f"{self._label}: unexpected {type(event).__name__}")

    async def _ask(self, request: Callable[[], None]) -> ClientEvent:
        """Send one request frame (``request`` queues it) and return the server's answer."""
        async with self._lock:
            if self._broken:
                raise TransferError(f"connection to {self._label} is closed")
            try:
                request()
                await self._flush()
                return await self._next_event()
            except BaseException:
                self._abort()
                raise

    async def pull(self, accept: Callable[[InboundMessage], Awaitable[Outcome]], *,
                   max_message_size: int) -> int:
        """Receive what the server holds for our node, filing each message with ``accept``
        before acknowledging it; returns how many were accepted. The server closes the
        connection when it has nothing more, so the connection is used up afterwards."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._broken:
                raise TransferError(f"connection to {self._label} is closed")
            try:
                leftover = self._session.pull()
                await self._flush()
                server = ServerSession.turned(self._session.identity, self._node_key,
                                              max_message_size=max_message_size,
                                              timeout=self._timeout, now=loop.time())
                return await self._receive_turned(server, leftover, accept)
            finally:
                self._abort()

    async def _receive_turned(self, server: ServerSession, data: bytes,
                              accept: Callable[[InboundMessage], Awaitable[Outcome]]) -> int:
        loop = asyncio.get_running_loop()
        accepted = 0
        events: list[ServerEvent] = server.receive_data(data, loop.time()) if data else []
        while True:
            for event in events:
                if isinstance(event, MessageReceived):
                    outcome = await accept(event.message)
                    server.send_result(outcome, loop.time())
                    accepted += outcome.verdict is Verdict.ACCEPTED
                    events = server.receive_data(b"", loop.time())  # resume after the commit
                    break
                if isinstance(event, OfferRefused):
                    log.info("refused held message %s from %s: %s", event.message_id.hex(),
                             clean(self._label), clean(event.reason))
                elif isinstance(event, Terminated):
                    out = server.data_to_send()
                    if out:
                        self._writer.write(out)
                    if event.error is not None:
                        raise TransferError(f"{self._label}: while pulling: {event.error}")
                    return accepted
            else:
                events = []
            out = server.data_to_send()
            if out:
                try:
                    self._writer.write(out)
                    await asyncio.wait_for(self._writer.drain(), self._timeout)
                except OSError as exc:
                    raise TransferError(f"{self._label}: sending failed: {exc!r}") from exc
            if events:
                continue
            try:
                chunk = await asyncio.wait_for(self._reader.read(READ_SIZE), self._timeout)
            except OSError as exc:  # TimeoutError included
                raise TransferError(f"{self._label}: receiving failed: {exc!r}") from exc
            events = server.receive_data(chunk, loop.time()) if chunk else server.receive_eof()

    async def close(self) -> None:
        if self._broken:
            return
        self._broken = True
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), self._timeout)
        except OSError:  # TimeoutError included
            self._writer.transport.abort()

    # internals

    async def _send(self, message_id: bytes, recipient_key: bytes, sealed: bytes,
                    record: bytes | None) -> Outcome:
        if record is None:
            self._session.offer(message_id, recipient_key, len(sealed))
        else:
            self._session.hold(message_id, recipient_key, len(sealed), record)
        await self._flush()
        event = await self._next_event()
        if isinstance(event, Finished):
            return event.outcome  # refused before the body was sent
        if not isinstance(event, OfferAccepted):
            raise TransferError(f"{self._label}: unexpected {type(event).__name__}")
        view = memoryview(sealed)
        for start in range(0, len(view), DATA_CHUNK_SIZE):
            self._session.send_data(bytes(view[start : start + DATA_CHUNK_SIZE]))
            await self._flush()  # drain per chunk: never more than one chunk queued
        self._session.end()
        await self._flush()
        event = await self._next_event()
        if not isinstance(event, Finished):
            raise TransferError(f"{self._label}: unexpected {type(event).__name__}")
        return event.outcome

    async def _handshake(self) -> None:
        event = await self._next_event()
        if not isinstance(event, ReadyEvent):
            raise TransferError(f"{self._label}: unexpected {type(event).__name__}")

    async def _flush(self) -> None:
        data = self._session.data_to_send()
        if not data:
            return
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self._timeout)
        except OSError as exc:  # TimeoutError included
            raise TransferError(f"{self._label}: sending failed: {exc!r}") from exc

    async def _next_event(self) -> ClientEvent:
        while not self._events:
            try:
                data = await asyncio.wait_for(self._reader.read(READ_SIZE), self._timeout)
            except OSError as exc:  # TimeoutError included
                raise TransferError(f"{self._label}: receiving failed: {exc!r}") from exc
            if not data:
                raise TransferError(f"{self._label}: connection closed by the server")
            try:
                self._events.extend(self._session.receive_data(data))
            except ProtocolError as exc:
                await self._flush_quietly()  # our ERROR frame, if any, explains the close
                raise TransferError(f"{self._label}: protocol error: {exc}") from exc
            await self._flush()
        return self._events.popleft()

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(TransferError):
            await self._flush()

    def _abort(self) -> None:
        self._broken = True
        self._writer.transport.abort()


async def connect(
    identity: Identity,
    host: str,
    port: int,
    node_key: bytes,
    *,
    timeout: float = 60.0,
    connect_timeout: float | None = None,
) -> TransferConnection:
    """Open a connection to the node serving ``node_key`` and authenticate as ``identity``.

    The server certificate's key is checked against ``node_key`` before a single byte of the
    transfer protocol is sent; a mismatch raises PinMismatchError (a TransferError).
    ``connect_timeout`` (default ``timeout``) bounds the TCP and TLS handshakes: a machine
    that is off drops packets, and the next endpoint or relay should not wait a minute.
    """
    if len(node_key) != KEY_SIZE:
        raise ValueError("node key must be 32 bytes")
    label = f"{host}:{port} (node {node_key[:8].hex()})"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=client_context(),
                ssl_handshake_timeout=connect_timeout or timeout
            ),
            connect_timeout or timeout,
        )
    except OSError as exc:  # TimeoutError and ssl.SSLError included
        raise TransferError(f"cannot connect to {label}: {exc!r}") from exc
    try:
        check_pin(writer.get_extra_info("ssl_object"), node_key)
    except PinMismatchError:
        writer.transport.abort()
        log.warning("TLS pin mismatch at %s", clean(label))
        raise
    connection = TransferConnection(
        reader,
        writer,
        ClientSession(identity, node_key),
        node_key=node_key,
        label=label,
        timeout=timeout,
    )
    try:
        await connection._handshake()
    except BaseException:
        connection._abort()
        raise
    log.debug("authenticated transfer connection to %s", clean(label))
    return connection


async def send_message(
    identity: Identity,
    host: str,
    port: int,
    node_key: bytes,
    message_id: bytes,
    recipient_key: bytes,
    sealed: bytes,
    *,
    timeout: float = 60.0,
    connect_timeout: float | None = None,
    record: bytes | None = None,
) -> Outcome:
    """Hand one sealed envelope to the node at ``host:port`` whose key the DHT pins.

    Returns the receiver's Outcome (ACCEPTED only after it stored the message durably;
    PERMANENT e.g. for an offer over its size limit). Raises TransferError for anything that
    should simply be retried later, pin mismatches included (the DHT record may be stale).
    """
    _check_message(message_id, recipient_key)
    connection = await connect(identity, host, port, node_key, timeout=timeout,
                               connect_timeout=connect_timeout)
    async with connection:
        return await connection.send(message_id, recipient_key, sealed, record)
