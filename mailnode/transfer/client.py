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
from types import TracebackType

from crypto.keys import Identity
from mailnode.logsafe import clean
from mailnode.transfer.frames import DATA_CHUNK_SIZE, KEY_SIZE, MESSAGE_ID_SIZE, ProtocolError
from mailnode.transfer.session import (
    ClientEvent,
    ClientSession,
    Finished,
    OfferAccepted,
    Outcome,
    PinMismatchError,
    ReadyEvent,
    TransferError,
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

    async def send(self, message_id: bytes, recipient_key: bytes, sealed: bytes) -> Outcome:
        """Offer, stream and commit one message; returns the receiver's verdict."""
        _check_message(message_id, recipient_key)
        async with self._lock:
            if self._broken:
                raise TransferError(f"connection to {self._label} is closed")
            try:
                outcome = await self._send(message_id, recipient_key, sealed)
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

    async def _send(self, message_id: bytes, recipient_key: bytes, sealed: bytes) -> Outcome:
        self._session.offer(message_id, recipient_key, len(sealed))
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
) -> TransferConnection:
    """Open a connection to the node serving ``node_key`` and authenticate as ``identity``.

    The server certificate's key is checked against ``node_key`` before a single byte of the
    transfer protocol is sent; a mismatch raises PinMismatchError (a TransferError).
    """
    if len(node_key) != KEY_SIZE:
        raise ValueError("node key must be 32 bytes")
    label = f"{host}:{port} (node {node_key[:8].hex()})"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=client_context(), ssl_handshake_timeout=timeout
            ),
            timeout,
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
) -> Outcome:
    """Hand one sealed envelope to the node at ``host:port`` whose key the DHT pins.

    Returns the receiver's Outcome (ACCEPTED only after it stored the message durably;
    PERMANENT e.g. for an offer over its size limit). Raises TransferError for anything that
    should simply be retried later, pin mismatches included (the DHT record may be stale).
    """
    _check_message(message_id, recipient_key)
    connection = await connect(identity, host, port, node_key, timeout=timeout)
    async with connection:
        return await connection.send(message_id, recipient_key, sealed)
