"""What one ping from a fresh node id makes a DHT node holding many records send back.

A node holding RECORDS records is pinged once (about 50 bytes) by a new node id, then everything
it sends to that address within WINDOW seconds is counted (at the node's socket: a flood
overflows the receiver's buffer), for two kinds of sender:

- silent: nothing answers at the source address (a spoofed source: the reflection victim);
- answering: a kademlia node answers there (it can prove its address, e.g. a real newcomer);

and two routing tables: empty (every record counts as close to the newcomer: the worst case) and
CONTACTS contacts elsewhere (the newcomer is close to only some records, but each record costs a
neighbour search). Before the fix one STORE per close record left at once. Run it against any
checkout: ``python -m bench.dht_amplification``; the unmodified kademlia package holding the
same records is the baseline, measured in the same run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import umsgpack
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.storage import ForgetfulStorage

from crypto.keys import Identity
from dht.node import DhtNode
from dht.records import AddressRecord, dht_key

RECORDS = 10_000
CONTACTS = 100
WINDOW = 5.0
HOST = "127.0.0.1"


class Silent(asyncio.DatagramProtocol):
    """Counts what arrives; never answers."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.bytes = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.bytes += len(data)
        self.received[_kind(data)] += 1


class Answering(KademliaProtocol):  # type: ignore[misc]  # kademlia is untyped
    """A plain kademlia node that also counts what arrives."""

    def __init__(self) -> None:
        super().__init__(Node(os.urandom(20)), ForgetfulStorage(), 20)
        self.received: Counter[str] = Counter()
        self.bytes = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.bytes += len(data)
        self.received[_kind(data)] += 1
        super().datagram_received(data, addr)


def _kind(data: bytes) -> str:
    if data[:1] == b"\x01":
        return "response"
    try:
        return str(umsgpack.unpackb(data[21:])[0])
    except Exception:
        return "junk"


async def _victim(contacts: int) -> DhtNode:
    node = DhtNode()
    await node.start(HOST, 0)
    expires = int(time.time()) + 3600
    for i in range(RECORDS):
        user = Identity(i.to_bytes(4, "big") * 8)
        record = AddressRecord.create(user, bytes(32), [("mail.example", 2525)], 1, expires)
        node.storage.offer(dht_key(user.verify_key), record.encode())
    router = node._server.protocol.router
    for i in range(contacts):  # documentation addresses: nothing there answers
        router.add_contact(Node(os.urandom(20), f"198.18.{i}.1", 4000))
    return node


@dataclass
class Victim:
    transport: asyncio.DatagramTransport
    port: int
    close: Callable[[], Awaitable[None]]


async def _ours(contacts: int) -> Victim:
    node = await _victim(contacts)
    return Victim(node._server.transport, node.port, node.aclose)


async def _baseline(contacts: int) -> Victim:
    """The unmodified kademlia package holding the same records (the baseline)."""
    server = Server(storage=ForgetfulStorage())
    await server.listen(0, HOST)
    expires = int(time.time()) + 3600
    for i in range(RECORDS):
        user = Identity(i.to_bytes(4, "big") * 8)
        record = AddressRecord.create(user, bytes(32), [("mail.example", 2525)], 1, expires)
        server.storage[dht_key(user.verify_key)] = record.encode()
    for i in range(contacts):
        server.protocol.router.add_contact(Node(os.urandom(20), f"198.18.{i}.1", 4000))

    async def close() -> None:
        server.stop()
    return Victim(server.transport, server.transport.get_extra_info("sockname")[1], close)


async def _measure(build: Callable[[int], Awaitable[Victim]], kind: str, contacts: int,
                   ) -> tuple[Counter[str], int, float]:
    victim = await build(contacts)
    loop = asyncio.get_running_loop()
    factory = Silent if kind == "silent" else Answering
    transport, receiver = await loop.create_datagram_endpoint(factory, local_addr=(HOST, 0))
    target = transport.get_extra_info("sockname")
    sent: Counter[str] = Counter()
    size = 0
    node_transport = victim.transport
    send = node_transport.sendto

    def counting_sendto(data: bytes, addr: Any = None) -> None:
        nonlocal size
        if addr is not None and tuple(addr[:2]) == tuple(target[:2]):
            sent[_kind(data)] += 1
            size += len(data)
        send(data, addr)

    node_transport.sendto = counting_sendto  # type: ignore[method-assign,assignment]
    try:
        node_id = receiver.source_node.id if isinstance(receiver, Answering) else os.urandom(20)
        ping = b"\x00" + os.urandom(20) + umsgpack.packb(["ping", [node_id]])
        cpu = time.process_time()
        transport.sendto(ping, (HOST, victim.port))
        await asyncio.sleep(WINDOW)
        return sent, size, time.process_time() - cpu
    finally:
        transport.close()
        await victim.close()


async def main() -> None:
    for noisy in ("kademlia", "rpcudp", "dht"):  # the baseline logs every timed-out STORE
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    print(f"{RECORDS} records held; one ~50-byte ping from a fresh id; {WINDOW:.0f} s window")
    for contacts in (0, CONTACTS):
        for kind in ("silent", "answering"):
            for name, build in (("kademlia 2.2.3", _baseline), ("mailnode dht  ", _ours)):
                sent, size, cpu = await _measure(build, kind, contacts)
                print(
                    f"{name} {contacts:3d} contacts, {kind:>9} source: "
                    f"{sent.get('store', 0):6d} STOREs, {size:10,d} bytes sent to it, "
                    f"{cpu:5.2f} s CPU"
                )


if __name__ == "__main__":
    asyncio.run(main())
