"""Kept connections: a stream of messages to one node shares one TLS connection, and a kept
connection the peer closed meanwhile is replaced without the caller noticing."""

from __future__ import annotations

import os

from crypto.keys import Identity
from mailnode.transfer import TransferServer, Verdict
from mailnode.transfer.pool import ConnectionPool
from tests.transfer.conftest import RecordingStore, ServerFactory, wait_until

RECIPIENT = b"\x42" * 32


async def test_messages_to_one_node_share_a_connection(make_server: ServerFactory,
                                                       server_identity: Identity) -> None:
    store = RecordingStore()
    server = await make_server(store)
    pool = ConnectionPool(Identity.generate(), timeout=10.0, connect_timeout=5.0)
    try:
        for _ in range(5):
            outcome = await pool.send("127.0.0.1", server.port, server_identity.verify_key,
                                      os.urandom(16), RECIPIENT, b"sealed")
            assert outcome.verdict is Verdict.ACCEPTED
        assert len(store.stored) == 5
        assert server.connection_count == 1
    finally:
        await pool.aclose()
    await wait_until(lambda: server.connection_count == 0)


async def test_a_connection_the_peer_closed_is_replaced(server_identity: Identity) -> None:
    store = RecordingStore()
    first = TransferServer(server_identity, store, max_message_size=1000, timeout=10.0)
    await first.start("127.0.0.1", 0)
    port = first.port
    pool = ConnectionPool(Identity.generate(), timeout=10.0, connect_timeout=5.0)
    second = TransferServer(server_identity, store, max_message_size=1000, timeout=10.0)
    try:
        await pool.send("127.0.0.1", port, server_identity.verify_key, os.urandom(16),
                        RECIPIENT, b"one")
        await first.stop()  # e.g. the node restarted: the kept connection is dead
        await second.start("127.0.0.1", port)
        outcome = await pool.send("127.0.0.1", port, server_identity.verify_key,
                                  os.urandom(16), RECIPIENT, b"two")
        assert outcome.verdict is Verdict.ACCEPTED
        assert sorted(store.stored.values()) == [b"one", b"two"]
    finally:
        await pool.aclose()
        await second.stop()
