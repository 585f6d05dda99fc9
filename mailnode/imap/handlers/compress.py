"""RFC 4978 COMPRESS=DEFLATE: the command, and the sans-IO codec the adapter runs the
connection through once it succeeded.

Compression starts right after the tagged OK, in both directions (raw deflate, no zlib
header: window bits -15). Inflating is bounded: at most ``INFLATE_CHUNK`` bytes come out per
step, and the adapter hands each step to the session (which applies its own line and literal
limits) before asking for the next, so a deflate bomb expands no faster than the session
consumes it, and a bomb of one long line ends the connection at the line limit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap.errors import CommandNo

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader
    from mailnode.imap.session import ImapSession

INFLATE_CHUNK = 64 * 1024
"""Most bytes one inflate step produces."""


@dataclass(frozen=True)
class Compress(c.Command):
    mechanism: str


c.NAMES[Compress] = "COMPRESS"


def parse(rd: _Reader, tag: str) -> c.Command:
    rd.sp()
    mechanism = rd.keyword()
    rd.end()
    return Compress(tag, mechanism)


class Deflate:
    """Both directions of one compressed connection (no I/O: bytes in, bytes out)."""

    def __init__(self) -> None:
        self._out = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self._in = zlib.decompressobj(-15)
        self._pending = b""
        self._full = False
        """The last step filled its chunk: zlib may hold more output without more input."""

    def compress(self, data: bytes) -> bytes:
        """``data`` compressed and flushed (Z_SYNC_FLUSH), so the client can read all of it
        now; empty in, empty out."""
        if not data:
            return b""
        return self._out.compress(data) + self._out.flush(zlib.Z_SYNC_FLUSH)

    def feed(self, data: bytes) -> None:
        """Compressed bytes received from the client."""
        self._pending += data

    def inflate(self) -> bytes:
        """The next at most INFLATE_CHUNK decompressed bytes (empty: more input needed).

        Raises ``zlib.error`` on a corrupt stream; the adapter ends the connection.
        """
        if not self.has_pending:
            return b""
        out = self._in.decompress(self._pending, INFLATE_CHUNK)
        self._pending = self._in.unconsumed_tail
        self._full = len(out) >= INFLATE_CHUNK
        if self._in.eof:  # the client ended its stream: nothing more can be read from it
            raise zlib.error("deflate stream ended")
        return out

    @property
    def has_pending(self) -> bool:
        """Whether :meth:`inflate` may have more to give without more input."""
        return bool(self._pending) or self._full


async def do_compress(session: ImapSession, cmd: Compress) -> str:
    if cmd.mechanism != "DEFLATE":
        raise CommandNo("Unknown compression mechanism", "CANNOT")
    if session.deflate is not None:
        raise CommandNo("Compression is already active", "COMPRESSIONACTIVE")
    codec = Deflate()
    # Bytes the client sent after the command are already compressed.
    codec.feed(session.parser.take_buffered())
    session.deflate = codec  # the adapter switches once this command's OK is out
    return "DEFLATE active"
