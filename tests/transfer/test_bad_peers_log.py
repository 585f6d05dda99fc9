"""Ordinary bad peers on the transfer port leave INFO lines, never a traceback, and what they
say reaches the log escaped."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from crypto.keys import Identity
from crypto.signing import sign
from mailnode.transfer.frames import Auth, Error, ErrorCode, encode
from mailnode.transfer.session import AUTH_CONTEXT
from mailnode.transfer.tls import client_context
from tests.transfer.conftest import RecordingStore, ServerFactory, wait_until
from tests.transfer.test_transfer import HOST, close_quietly, raw_tls, read_to_eof


async def test_bad_peers_leave_no_traceback_and_no_raw_text(
        make_server: ServerFactory, client_identity: Identity,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mailnode")
    server = await make_server(RecordingStore())

    reader, writer = await asyncio.open_connection(HOST, server.port)  # no TLS at all
    writer.write(b"EHLO attacker.example\r\n\x1b[2J" * 50)
    await read_to_eof(reader)
    close_quietly(writer)

    reader, writer, _ = await raw_tls(server.port)  # junk frames
    writer.write(b"\xde\xad\xbe\xef" * 64)
    await read_to_eof(reader)
    close_quietly(writer)

    reader, writer, challenge = await raw_tls(server.port)  # a signature that fails
    payload = challenge.server_key + challenge.nonce + client_identity.verify_key
    writer.write(encode(Auth(client_identity.verify_key,
                             sign(Identity.generate(), AUTH_CONTEXT, payload))))
    await read_to_eof(reader)
    close_quietly(writer)

    reader, writer, _ = await raw_tls(server.port)  # the peer's own words, forged lines
    writer.write(encode(Error(ErrorCode.UNEXPECTED,
                              "bye\r\n2026-01-01 INFO mailnode: forged\x1b[2J")))
    await read_to_eof(reader)
    close_quietly(writer)

    context = client_context()  # a TLS version the server refuses
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(HOST, server.port, ssl=context)

    await wait_until(lambda: server.connection_count == 0)
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("mailnode")]
    assert all(m.isprintable() for m in messages), messages
    assert any("peer reported: bye" in m and "forged" in m for m in messages)
