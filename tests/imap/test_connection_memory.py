"""A closed connection's memory goes back as soon as it closes, not at the next full GC."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

import mailnode.imap.server as server_module
from mailnode.imap.session import ImapSession
from tests.imap.conftest import ServerFactory


async def test_a_closed_session_is_freed_without_the_cycle_collector(
        start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session (its mailbox listing, buffers, streams) left in a reference cycle waited for
    a full collection: under imaptest's 50 reconnecting clients, hundreds of dead sessions
    held ~10 MB of a node at a time. Reference counting alone must free it."""
    made: list[weakref.ref[ImapSession]] = []

    class Recorded(ImapSession):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(server_module, "ImapSession", Recorded)
    srv = await start_server()
    assert srv.port is not None
    gc.collect()
    gc.disable()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        await reader.readline()
        writer.write(b"a LOGIN alice secret\r\n")
        assert (await reader.readline()).startswith(b"a OK")
        [task] = [conn.task for conn in srv.table.handles()]
        writer.write(b"b SELECT INBOX\r\nc FETCH 1:* (FLAGS)\r\nd LOGOUT\r\n")
        await reader.read()  # everything up to the server's close
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(10):
            await asyncio.wait({task})
        del task
        assert len(made) == 1
        assert made[0]() is None
    finally:
        gc.enable()
