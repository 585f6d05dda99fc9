"""Client and server over real TLS on 127.0.0.1: the behaviour the delivery queue relies on."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl

import pytest

from crypto.keys import Identity
from crypto.signing import sign
from mailnode.transfer import (
    InboundMessage,
    Outcome,
    PinMismatchError,
    TransferError,
    Verdict,
    connect,
    send_message,
)
from mailnode.transfer.frames import (
    Auth,
    Challenge,
    Error,
    ErrorCode,
    FrameDecoder,
    encode,
)
from mailnode.transfer.session import AUTH_CONTEXT
from mailnode.transfer.tls import client_context
from tests.transfer.conftest import RecordingStore, ServerFactory, wait_until

HOST = "127.0.0.1"
RECIPIENT = b"\x42" * 32


def new_id() -> bytes:
    return os.urandom(16)


async def send(
    client: Identity, port: int, node_key: bytes, sealed: bytes, message_id: bytes | None = None
) -> Outcome:
    return await send_message(
        client, HOST, port, node_key, message_id or new_id(), RECIPIENT, sealed, timeout=10.0
    )


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends before it closes (a reset counts as a close)."""
    chunks = []
    try:
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except (ConnectionResetError, ssl.SSLError):
        pass
    return b"".join(chunks)


async def raw_tls(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Challenge]:
    """A hand-driven TLS client that has read the server's CHALLENGE."""
    reader, writer = await asyncio.open_connection(HOST, port, ssl=client_context())
    decoder = FrameDecoder()
    async with asyncio.timeout(10):
        while not (events := decoder.events(await reader.read(65536))):
            pass
    [challenge] = events
    assert isinstance(challenge, Challenge)
    return reader, writer, challenge


def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


async def parting_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ErrorCode:
    """The one ERROR frame the server sends before it hangs up."""
    [error] = FrameDecoder().events(await read_to_eof(reader))
    close_quietly(writer)
    assert isinstance(error, Error)
    return error.code


async def test_round_trip(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    message_id = new_id()
    sealed = os.urandom(200_000) + b"\x00\r\n.\r\n"
    outcome = await send(
        client_identity, server.port, server_identity.verify_key, sealed, message_id
    )
    assert outcome == Outcome(Verdict.ACCEPTED, "stored")
    assert store.calls == [
        InboundMessage(client_identity.verify_key, message_id, RECIPIENT, sealed,
                       source="127.0.0.1")
    ]


async def test_wrong_pinned_key_is_refused_before_anything_is_sent(
    make_server: ServerFactory, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    with pytest.raises(PinMismatchError) as info:
        await send(client_identity, server.port, Identity.generate().verify_key, b"secret")
    assert isinstance(info.value, TransferError) and isinstance(info.value, OSError)
    await wait_until(lambda: server.connection_count == 0)
    assert store.calls == []


async def test_oversize_offer_is_permanent_and_connection_stays_usable(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store, max_message_size=1000)
    async with await connect(
        client_identity, HOST, server.port, server_identity.verify_key, timeout=10
    ) as connection:
        outcome = await connection.send(new_id(), RECIPIENT, b"x" * 1001)
        # Had any DATA followed the refused OFFER, the server would have closed the
        # connection as a protocol violation and the next send would fail.
        assert outcome.verdict is Verdict.PERMANENT
        assert "1001" in outcome.reason
        assert store.calls == []
        assert (await connection.send(new_id(), RECIPIENT, b"y" * 1000)).verdict is Verdict.ACCEPTED
    assert len(store.calls) == 1


@pytest.mark.parametrize("verdict", [Verdict.TEMPORARY, Verdict.PERMANENT])
async def test_callback_verdict_propagates(
    make_server: ServerFactory,
    server_identity: Identity,
    client_identity: Identity,
    verdict: Verdict,
) -> None:
    server = await make_server(RecordingStore(verdict, "mailbox said so"))
    outcome = await send(client_identity, server.port, server_identity.verify_key, b"m")
    assert outcome == Outcome(verdict, "mailbox said so")


async def test_callback_exception_is_temporary(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    async def broken(message: InboundMessage) -> Outcome:
        raise RuntimeError("database on fire")

    server = await make_server(broken)
    outcome = await send(client_identity, server.port, server_identity.verify_key, b"m")
    assert outcome.verdict is Verdict.TEMPORARY
    assert "fire" not in outcome.reason  # local details stay local


async def test_duplicate_send_is_accepted_twice_and_stored_once(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    message_id = new_id()
    for _ in range(2):
        outcome = await send(
            client_identity, server.port, server_identity.verify_key, b"once", message_id
        )
        assert outcome.verdict is Verdict.ACCEPTED
    assert len(store.calls) == 2
    assert store.stored == {message_id: b"once"}


async def test_several_messages_on_one_connection(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    bodies = [os.urandom(n) for n in (1, 65536, 65537, 300_000)]
    async with await connect(
        client_identity, HOST, server.port, server_identity.verify_key, timeout=10
    ) as connection:
        assert connection.peer_node_key == server_identity.verify_key
        for body in bodies:
            assert (await connection.send(new_id(), RECIPIENT, body)).verdict is Verdict.ACCEPTED
    assert [m.sealed for m in store.calls] == bodies


async def test_five_megabytes_stream(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    sealed = os.urandom(5 * 1024 * 1024 + 123)
    outcome = await send(client_identity, server.port, server_identity.verify_key, sealed)
    assert outcome.verdict is Verdict.ACCEPTED
    [message] = store.calls
    assert hashlib.sha256(message.sealed).digest() == hashlib.sha256(sealed).digest()


async def test_plaintext_garbage_then_good_client(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(b"EHLO attacker.example\r\n" * 100)
    await read_to_eof(reader)
    close_quietly(writer)
    assert (
        await send(client_identity, server.port, server_identity.verify_key, b"ok")
    ).verdict is (Verdict.ACCEPTED)


async def test_junk_frames_after_tls_then_good_client(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    reader, writer, _ = await raw_tls(server.port)
    writer.write(b"\xde\xad\xbe\xef" * 64)
    assert await parting_error(reader, writer) is ErrorCode.MALFORMED
    assert (
        await send(client_identity, server.port, server_identity.verify_key, b"ok")
    ).verdict is (Verdict.ACCEPTED)


async def test_giant_frame_header_is_refused(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    server = await make_server(RecordingStore())
    reader, writer, _ = await raw_tls(server.port)
    writer.write(b"\x02\xff\xff\xff\xff")  # an AUTH frame claiming 4 GiB
    assert await parting_error(reader, writer) is ErrorCode.FRAME_TOO_LARGE


async def test_forged_auth_then_good_client(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    store = RecordingStore()
    server = await make_server(store)
    reader, writer, challenge = await raw_tls(server.port)
    impostor = Identity.generate()
    # Claims client_identity's key but signs with another key.
    payload = challenge.server_key + challenge.nonce + client_identity.verify_key
    writer.write(encode(Auth(client_identity.verify_key, sign(impostor, AUTH_CONTEXT, payload))))
    assert await parting_error(reader, writer) is ErrorCode.AUTH_FAILED
    assert store.calls == []
    assert (
        await send(client_identity, server.port, server_identity.verify_key, b"ok")
    ).verdict is (Verdict.ACCEPTED)


async def test_replayed_auth_is_refused(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    server = await make_server(RecordingStore())
    reader, writer, challenge = await raw_tls(server.port)
    payload = challenge.server_key + challenge.nonce + client_identity.verify_key
    recorded = encode(
        Auth(client_identity.verify_key, sign(client_identity, AUTH_CONTEXT, payload))
    )
    writer.write(recorded)
    assert (await reader.read(65536)).startswith(b"\x03")  # READY
    close_quietly(writer)
    # A second connection gets a fresh challenge, so the recorded AUTH is worthless.
    reader, writer, second = await raw_tls(server.port)
    assert second.nonce != challenge.nonce
    writer.write(recorded)
    assert await parting_error(reader, writer) is ErrorCode.AUTH_FAILED


async def test_silent_client_times_out(make_server: ServerFactory) -> None:
    server = await make_server(RecordingStore(), timeout=0.3)
    reader, writer, _ = await raw_tls(server.port)
    assert await parting_error(reader, writer) is ErrorCode.TIMEOUT


async def test_tcp_client_without_handshake_is_dropped(make_server: ServerFactory) -> None:
    server = await make_server(RecordingStore(), timeout=0.3)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    assert await read_to_eof(reader) == b""
    close_quietly(writer)
    await wait_until(lambda: server.connection_count == 0)


async def test_idle_authenticated_client_times_out(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    server = await make_server(RecordingStore(), timeout=0.3)
    connection = await connect(client_identity, HOST, server.port, server_identity.verify_key)
    await wait_until(lambda: server.connection_count == 0)
    with pytest.raises(TransferError):
        await connection.send(new_id(), RECIPIENT, b"late")
    await connection.close()


async def test_tls12_client_is_refused(make_server: ServerFactory) -> None:
    server = await make_server(RecordingStore())
    context = client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(HOST, server.port, ssl=context)


async def test_connection_limit(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    server = await make_server(RecordingStore(), max_connections=1)
    first = await connect(client_identity, HOST, server.port, server_identity.verify_key)
    with pytest.raises(TransferError):
        await send(client_identity, server.port, server_identity.verify_key, b"refused")
    await first.close()
    await wait_until(lambda: server.connection_count == 0)
    assert (
        await send(client_identity, server.port, server_identity.verify_key, b"ok")
    ).verdict is (Verdict.ACCEPTED)


async def test_stop_with_idle_connection(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    server = await make_server(RecordingStore())
    port = server.port
    connection = await connect(client_identity, HOST, port, server_identity.verify_key)
    reader, writer, _ = await raw_tls(port)  # one more, not even authenticated
    await asyncio.wait_for(server.stop(), 10)
    assert server.connection_count == 0
    with pytest.raises(TransferError):
        await connection.send(new_id(), RECIPIENT, b"after stop")
    await read_to_eof(reader)
    close_quietly(writer)
    with pytest.raises(TransferError):
        await send(client_identity, port, server_identity.verify_key, b"listener is closed")


async def test_stop_during_commit(
    make_server: ServerFactory, server_identity: Identity, client_identity: Identity
) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(message: InboundMessage) -> Outcome:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    server = await make_server(stuck)
    sending = asyncio.create_task(
        send(client_identity, server.port, server_identity.verify_key, b"m")
    )
    await asyncio.wait_for(entered.wait(), 10)
    await asyncio.wait_for(server.stop(), 10)
    assert cancelled.is_set()
    with pytest.raises(TransferError):
        await sending


async def test_unreachable_port_is_transfer_error(
    server_identity: Identity, client_identity: Identity
) -> None:
    with pytest.raises(TransferError):
        await send(client_identity, 1, server_identity.verify_key, b"m")


async def test_bad_arguments_are_value_errors(client_identity: Identity) -> None:
    with pytest.raises(ValueError):
        await send_message(client_identity, HOST, 1, b"short", new_id(), RECIPIENT, b"")
    with pytest.raises(ValueError):
        await send_message(client_identity, HOST, 1, b"k" * 32, b"short", RECIPIENT, b"")
