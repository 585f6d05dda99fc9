"""Delta Chat (deltachat-rpc-server from PyPI, when installed) configures an account on a real
node and shows the node's quota: it logs in, turns on COMPRESS=DEFLATE, asks GETQUOTAROOT and
GETMETADATA, and ends up connected. A proxy in front of the IMAP port records what it sends
(inflating the stream once compression is on) so the test can say which extensions it used."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nodes import NodeProcess, cli, free_port, wait_until

rpc_client = pytest.importorskip("deltachat_rpc_client")
pytestmark = pytest.mark.skipif(shutil.which("deltachat-rpc-server") is None,
                                reason="deltachat-rpc-server not installed")

PASSWORD = "delta-password-123"


class Recorder:
    """A TCP proxy on its own thread and loop; ``lines`` are the client's command lines."""

    def __init__(self, target: int) -> None:
        self.port = free_port()
        self.target = target
        self.lines: list[bytes] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                         daemon=True).start()
        assert self._ready.wait(10)

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await server.serve_forever()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        inflate: list[zlib._Decompress] = []  # set once the server said OK to COMPRESS
        asked: list[bytes] = []  # this connection's lines

        async def client_side() -> None:
            pending = b""
            while data := await cr.read(65536):
                sw.write(data)
                text = inflate[0].decompress(data) if inflate else data
                pending += text
                *done, pending = pending.split(b"\r\n")
                asked.extend(done)
                self.lines.extend(done)
            sw.close()

        async def server_side() -> None:
            while data := await sr.read(65536):
                cw.write(data)
                if not inflate and asked and asked[-1].upper().endswith(b"COMPRESS DEFLATE") \
                        and b" OK " in data:
                    inflate.append(zlib.decompressobj(-15))
            cw.close()

        await asyncio.gather(client_side(), server_side(), return_exceptions=True)

    def commands(self) -> set[str]:
        words = set()
        for line in self.lines:
            parts = line.split(b" ")
            if len(parts) > 1 and parts[1].isalpha():
                words.add(parts[1].decode().upper())
        return words


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeProcess, str]]:
    proc = NodeProcess.init(tmp_path / "node", [], user_quota_mb=100)
    out = cli(proc.data_dir, "user", "add", "alice", password=PASSWORD)
    found = re.search(r"[a-z0-9]+@[a-z0-9.\-]+", out)
    assert found, out
    proc.start()
    try:
        yield proc, found.group(0)
    finally:
        proc.stop()


def test_delta_chat_configures_and_uses_compress_quota_metadata(
        node: tuple[NodeProcess, str], tmp_path: Path) -> None:
    proc, address = node
    recorder = Recorder(proc.imap_port)
    with rpc_client.Rpc(accounts_dir=str(tmp_path / "accounts")) as rpc:
        account = rpc_client.DeltaChat(rpc).add_account()
        rpc.add_or_update_transport(account.id, {
            "addr": address, "password": PASSWORD,
            "imapServer": "127.0.0.1", "imapPort": recorder.port, "imapSecurity": "plain",
            "smtpServer": "127.0.0.1", "smtpPort": proc.smtp_port, "smtpSecurity": "plain"})
        account.start_io()
        try:
            try:
                wait_until(lambda: "IDLE" in recorder.commands(), 60, "Delta Chat to IDLE")
            except AssertionError:
                raise AssertionError(recorder.lines) from None
            html = rpc.get_connectivity_html(account.id)
        finally:
            account.stop_io()
    used = recorder.commands()
    assert {"COMPRESS", "GETQUOTAROOT", "GETMETADATA"} <= used, used
    assert "of 100 MiB used" in html
