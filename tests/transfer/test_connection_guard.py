"""The transfer port under the connection table: an absolute deadline for TLS plus AUTH, a
per-source cap, and strangers' unauthenticated connections making room for a real peer."""

from __future__ import annotations

import asyncio
import os

from crypto.keys import Identity
from mailnode.transfer import Verdict, send_message
from mailnode.transfer.frames import Auth, ErrorCode, encode
from mailnode.transfer.tls import client_context
from tests.transfer.conftest import RecordingStore, ServerFactory, wait_until
from tests.transfer.test_transfer import (
    HOST,
    RECIPIENT,
    close_quietly,
    parting_error,
    raw_tls,
    read_to_eof,
)


async def test_login_deadline_is_absolute(make_server: ServerFactory) -> None:
    # Each phase may take 10 s, but handshake plus AUTH together only 0.3 s.
    server = await make_server(RecordingStore(), timeout=10.0, login_timeout=0.3)
    reader, writer, _ = await raw_tls(server.port)
    writer.write(encode(Auth(b"\0" * 32, b"\0" * 64))[:3])  # part of a frame, then nothing
    assert await parting_error(reader, writer) is ErrorCode.TIMEOUT
    plain_reader, plain_writer = await asyncio.open_connection(HOST, server.port)
    plain_writer.write(b"\x16\x03\x01")  # a TLS record header trickled, never finished
    assert await read_to_eof(plain_reader) == b""
    close_quietly(plain_writer)
    await wait_until(lambda: server.connection_count == 0)


async def test_per_source_cap(make_server: ServerFactory, server_identity: Identity,
                              client_identity: Identity) -> None:
    server = await make_server(RecordingStore(), max_connections_per_source=2)
    held = [await asyncio.open_connection(HOST, server.port, local_addr=("127.0.0.5", 0))
            for _ in range(2)]
    await wait_until(lambda: server.connection_count == 2)
    reader, writer = await asyncio.open_connection(HOST, server.port,
                                                   local_addr=("127.0.0.5", 0))
    assert await read_to_eof(reader) == b""  # dropped before any TLS work
    close_quietly(writer)
    outcome = await send_message(client_identity, HOST, server.port,
                                 server_identity.verify_key, os.urandom(16), RECIPIENT,
                                 b"from elsewhere", timeout=10.0)
    assert outcome.verdict is Verdict.ACCEPTED
    for _, w in held:
        close_quietly(w)


async def test_strangers_make_room_for_a_real_peer(make_server: ServerFactory,
                                                   server_identity: Identity,
                                                   client_identity: Identity) -> None:
    server = await make_server(RecordingStore(), max_connections=5,
                               max_connections_per_source=5, eviction_grace=0.0)
    strangers = []
    for i in range(20):
        strangers.append(await asyncio.open_connection(
            HOST, server.port, local_addr=(f"127.0.4.{i % 4 + 1}", 0), ssl=client_context()))
    assert server.connection_count <= 5
    outcome = await send_message(client_identity, HOST, server.port,
                                 server_identity.verify_key, os.urandom(16), RECIPIENT,
                                 b"through the crowd", timeout=10.0)
    assert outcome.verdict is Verdict.ACCEPTED
    for _, w in strangers:
        close_quietly(w)
