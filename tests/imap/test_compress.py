"""RFC 4978 COMPRESS=DEFLATE against a real listener: raw deflate both ways after the OK,
only once and only after login, commands pipelined behind COMPRESS, a deflate bomb bounded
(each inflate step is at most INFLATE_CHUNK and the line limit ends it), corrupt input ends
the connection with a BYE."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from mailnode.imap.handlers.compress import INFLATE_CHUNK, Deflate
from tests.imap.conftest import MESSAGE, Dialog, ServerFactory
from tests.imap.test_e2e import TIMEOUT, command, raw_connect


class Peer:
    """A client speaking deflate on a raw connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inf = zlib.decompressobj(-15)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.writer.write(self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH))

    async def until(self, marker: bytes) -> bytes:
        """Decompressed replies up to and including the line that starts with ``marker``."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                lines = self.buf.split(b"\r\n")
                for i, line in enumerate(lines[:-1]):
                    if line.startswith(marker):
                        done = b"\r\n".join(lines[:i + 1]) + b"\r\n"
                        self.buf = self.buf[len(done):]
                        return done
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                self.buf += self.inf.decompress(data)


async def logged_in(start_server: ServerFactory) -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]:
    srv = await start_server(idle_timeout=30, login_timeout=30)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    assert (await command(reader, writer, b"a", b"LOGIN alice secret"))[-1].startswith(b"a OK")
    return reader, writer


async def test_compressed_session_works_both_ways(start_server: ServerFactory) -> None:
    reader, writer = await logged_in(start_server)
    assert (await command(reader, writer, b"c", b"COMPRESS DEFLATE"))[-1] == \
        b"c OK DEFLATE active\r\n"
    peer = Peer(reader, writer)
    peer.send(b"d APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
    assert b"d OK [APPENDUID" in await peer.until(b"d ")
    peer.send(b"e SELECT INBOX\r\nf FETCH 1 BODY[]\r\n")  # pipelined, in one deflate block
    await peer.until(b"e OK")
    out = await peer.until(b"f ")
    assert MESSAGE in out and out.endswith(b"f OK FETCH completed\r\n")
    peer.send(b"g COMPRESS DEFLATE\r\n")
    assert await peer.until(b"g ") == b"g NO [COMPRESSIONACTIVE] Compression is already active\r\n"
    peer.send(b"h LOGOUT\r\n")
    assert (await peer.until(b"h ")).endswith(b"h OK LOGOUT completed\r\n")


async def test_commands_sent_right_after_compress_are_compressed(
        start_server: ServerFactory) -> None:
    """A client may send its next (compressed) command without waiting for the OK."""
    reader, writer = await logged_in(start_server)
    peer = Peer(reader, writer)
    writer.write(b"c COMPRESS DEFLATE\r\n" + peer.out.compress(b"d NOOP\r\n")
                 + peer.out.flush(zlib.Z_SYNC_FLUSH))
    async with asyncio.timeout(TIMEOUT):
        line = await reader.readline()
    assert line == b"c OK DEFLATE active\r\n"
    peer.buf = b""
    assert await peer.until(b"d ") == b"d OK NOOP completed\r\n"


async def test_compress_before_login_or_unknown_is_refused(start_server: ServerFactory) -> None:
    srv = await start_server(idle_timeout=30, login_timeout=30)
    assert srv.port
    reader, writer = await raw_connect(srv.port)
    assert (await command(reader, writer, b"a", b"COMPRESS DEFLATE"))[-1].startswith(b"a BAD")
    assert (await command(reader, writer, b"b", b"LOGIN alice secret"))[-1].startswith(b"b OK")
    assert (await command(reader, writer, b"c", b"COMPRESS GZIP"))[-1].startswith(
        b"c NO [CANNOT]")
    assert (await command(reader, writer, b"d", b"COMPRESS"))[-1].startswith(b"d BAD")
    assert (await command(reader, writer, b"e", b"NOOP"))[-1].startswith(b"e OK")


async def test_deflate_bomb_of_one_line_ends_at_the_line_limit(
        start_server: ServerFactory) -> None:
    """64 MiB of 'A' without a line end compress to about 64 KiB; the server inflates a chunk
    at a time, the parser refuses the line at its limit, and the connection ends."""
    reader, writer = await logged_in(start_server)
    await command(reader, writer, b"c", b"COMPRESS DEFLATE")
    peer = Peer(reader, writer)
    bomb = peer.out.compress(b"x NOOP " + b"A" * (64 * 1024 * 1024))
    writer.write(bomb + peer.out.flush(zlib.Z_SYNC_FLUSH))
    assert len(bomb) < 128 * 1024
    out = await peer.until(b"* BYE")
    assert b"x BAD Command too long" in out or b"BAD Line too long" in out


async def test_corrupt_stream_ends_the_connection(start_server: ServerFactory) -> None:
    reader, writer = await logged_in(start_server)
    await command(reader, writer, b"c", b"COMPRESS DEFLATE")
    peer = Peer(reader, writer)
    writer.write(b"\xff" * 64)  # not a valid deflate block type
    assert b"* BYE Corrupt compressed data" in await peer.until(b"* BYE")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.read() == b""


def test_inflate_is_bounded_per_step() -> None:
    codec = Deflate()
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b"a NOOP\r\n" * 1_000_000  # 8 MB of valid commands, compressed to a few KiB
    codec.feed(packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH))
    total = steps = 0
    while codec.has_pending:
        chunk = codec.inflate()
        if not chunk:
            break
        assert len(chunk) <= INFLATE_CHUNK
        total += len(chunk)
        steps += 1
    assert total == len(data) and steps >= len(data) // INFLATE_CHUNK


def test_compress_and_inflate_round_trip() -> None:
    server, client_in = Deflate(), zlib.decompressobj(-15)
    assert server.compress(b"") == b""
    assert client_in.decompress(server.compress(b"* OK hi\r\n")) == b"* OK hi\r\n"
    assert client_in.decompress(server.compress(b"* OK again\r\n")) == b"* OK again\r\n"


async def test_session_refuses_a_second_compress(dialog: Dialog) -> None:
    await dialog.login()
    assert await dialog.send(b"c COMPRESS DEFLATE\r\n") == b"c OK DEFLATE active\r\n"
    assert dialog.session.deflate is not None


@pytest.mark.parametrize("mechanism", [b"deflate", b"DEFLATE"])
async def test_mechanism_is_case_insensitive(dialog: Dialog, mechanism: bytes) -> None:
    await dialog.login()
    assert (await dialog.send(b"c COMPRESS " + mechanism + b"\r\n")).startswith(b"c OK")
