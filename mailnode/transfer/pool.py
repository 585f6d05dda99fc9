"""Authenticated connections to peer nodes kept open for the next message to the same node.

A TLS handshake plus the challenge costs about as much as transferring a small message, so
a stream of mail to one node reuses its connection. Idle connections are closed well before
the receiving side's own idle timeout, and their number is capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

from crypto.keys import Identity
from mailnode.transfer.client import TransferConnection, connect
from mailnode.transfer.session import Outcome, TransferError

Key = tuple[str, int, bytes]


class ConnectionPool:
    def __init__(self, identity: Identity, *, timeout: float, connect_timeout: float,
                 idle: float = 20.0, max_idle: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._identity = identity
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._idle_for = min(idle, timeout / 2)  # the receiver drops idle ones after timeout
        self._max_idle = max_idle
        self._clock = clock
        self._idle: OrderedDict[int, tuple[Key, float, TransferConnection]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, host: str, port: int, node_key: bytes, message_id: bytes,
                   recipient_key: bytes, sealed: bytes, record: bytes | None = None) -> Outcome:
        """Like :func:`send_message`, over a kept connection when there is one. A kept
        connection the peer closed meanwhile fails at once; the message then goes over a
        new one (resending is safe: receivers file a message id once)."""
        key = (host, port, node_key)
        connection = self._take(key)
        if connection is not None:
            try:
                outcome = await connection.send(message_id, recipient_key, sealed, record)
            except TransferError:
                connection = None
            else:
                self._keep(key, connection)
                return outcome
        connection = await connect(self._identity, host, port, node_key,
                                   timeout=self._timeout, connect_timeout=self._connect_timeout)
        outcome = await connection.send(message_id, recipient_key, sealed, record)
        self._keep(key, connection)
        return outcome

    async def aclose(self) -> None:
        idle, self._idle = list(self._idle.values()), OrderedDict()
        for _, _, connection in idle:
            self._close(connection)
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _take(self, key: Key) -> TransferConnection | None:
        now = self._clock()
        found = None
        for ident, (k, since, connection) in list(self._idle.items()):
            if now - since >= self._idle_for:
                del self._idle[ident]
                self._close(connection)
            elif found is None and k == key:
                del self._idle[ident]
                found = connection
        return found

    def _keep(self, key: Key, connection: TransferConnection) -> None:
        self._idle[id(connection)] = (key, self._clock(), connection)
        while len(self._idle) > self._max_idle:
            _, (_, _, oldest) = self._idle.popitem(last=False)
            self._close(oldest)

    def _close(self, connection: TransferConnection) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _quietly(connection: TransferConnection) -> None:
        with contextlib.suppress(OSError):
            await connection.close()
