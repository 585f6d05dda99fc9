"""Fixtures for transfer tests on real loopback sockets: every server started is stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from crypto.keys import Identity
from mailnode.transfer import InboundMessage, Outcome, TransferServer, Verdict

ServerFactory = Callable[..., Awaitable[TransferServer]]


class RecordingStore:
    """An accept callback that stores by message id, reporting duplicates as success."""

    def __init__(self, verdict: Verdict = Verdict.ACCEPTED, reason: str = "stored") -> None:
        self.verdict = verdict
        self.reason = reason
        self.calls: list[InboundMessage] = []
        self.stored: dict[bytes, bytes] = {}

    async def __call__(self, message: InboundMessage) -> Outcome:
        self.calls.append(message)
        if message.message_id in self.stored:
            return Outcome(Verdict.ACCEPTED, "already stored")
        if self.verdict is Verdict.ACCEPTED:
            self.stored[message.message_id] = message.sealed
        return Outcome(self.verdict, self.reason)


@pytest.fixture
def server_identity() -> Identity:
    return Identity.generate()


@pytest.fixture
def client_identity() -> Identity:
    return Identity.generate()


@pytest.fixture
async def make_server(server_identity: Identity) -> AsyncIterator[ServerFactory]:
    servers: list[TransferServer] = []

    async def factory(accept: Any, **kwargs: Any) -> TransferServer:
        kwargs.setdefault("max_message_size", 10 * 1024 * 1024)
        kwargs.setdefault("timeout", 10.0)
        server = TransferServer(server_identity, accept, **kwargs)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await asyncio.wait_for(server.stop(), 10)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition (never a fixed sleep): fails the test if it stays false."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
