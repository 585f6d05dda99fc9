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
from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import (
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Reply,
    Request,
    Store,
    Stored,
    Value,
)
from dht.kad.rpc import RpcEngine
from dht.kad.udp import UdpEndpoint
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


_OUR_KINDS = {wire.KIND_PING: "ping", wire.KIND_FIND_NODE: "find_node",
              wire.KIND_FIND_VALUE: "find_value", wire.KIND_STORE: "store"}


def _our_kind(data: bytes) -> str:
    return _OUR_KINDS.get(data[1], "response") if len(data) > 1 else "junk"


async def _victim(contacts: int) -> DhtNode:
    node = DhtNode()
    await node.start(HOST, 0)
    expires = int(time.time()) + 3600
    for i in range(RECORDS):
        user = Identity(i.to_bytes(4, "big") * 8)
        record = AddressRecord.create(user, bytes(32), [("mail.example", 2525)], 1, expires)
        node.storage.offer(dht_key(user.verify_key), record.encode())
    for i in range(contacts):  # documentation addresses: nothing there answers
        contact = Contact(os.urandom(32), f"198.18.{i}.1", 4000)
        node._table.offer(contact, time.monotonic(), verified=True)
    return node


@dataclass
class Victim:
    sender: Any  # the object whose ``send_name(data, address)`` sends the victim's datagrams
    send_name: str
    port: int
    close: Callable[[], Awaitable[None]]
    key: bytes | None = None  # ours: the node's key (a request is signed for it)


async def _ours(contacts: int) -> Victim:
    node = await _victim(contacts)
    return Victim(node._endpoint, "_send", node.port, node.aclose, node._identity.verify_key)


class _Answers:
    """What an honest newcomer answers (it proves its address when pinged)."""

    def __call__(self, sender: Contact, request: Request, now: float) -> Reply:
        if isinstance(request, Store):
            return Stored(True)
        if isinstance(request, FindNode):
            return Nodes(())
        if isinstance(request, FindValue):
            return Value(b"", ())
        return Pong()


async def _ping_ours(victim: Victim, kind: str) -> tuple[Callable[[], None], Any]:
    """One ping from a fresh key to our node; (close, the pinger's address)."""
    assert victim.key is not None
    loop = asyncio.get_running_loop()
    node = Contact(victim.key, HOST, victim.port)
    if kind == "silent":
        transport, _ = await loop.create_datagram_endpoint(Silent, local_addr=(HOST, 0))
        ping = RpcEngine(Identity.generate()).request(node, Ping(), 0.0)[1]
        transport.sendto(ping, (HOST, victim.port))
        return transport.close, transport.get_extra_info("sockname")
    endpoint = UdpEndpoint(RpcEngine(Identity.generate()), _Answers())
    await endpoint.start(HOST, 0)
    task = loop.create_task(endpoint.query(node, Ping()))

    def close() -> None:
        task.cancel()
        endpoint.shutdown()
    return close, endpoint.address


async def _ping_kademlia(victim: Victim, kind: str) -> tuple[Callable[[], None], Any]:
    loop = asyncio.get_running_loop()
    factory = Silent if kind == "silent" else Answering
    transport, receiver = await loop.create_datagram_endpoint(factory, local_addr=(HOST, 0))
    node_id = receiver.source_node.id if isinstance(receiver, Answering) else os.urandom(20)
    ping = b"\x00" + os.urandom(20) + umsgpack.packb(["ping", [node_id]])
    transport.sendto(ping, (HOST, victim.port))
    return transport.close, transport.get_extra_info("sockname")


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
    return Victim(server.transport, "sendto", server.transport.get_extra_info("sockname")[1],
                  close)


async def _measure(build: Callable[[int], Awaitable[Victim]], kind: str, contacts: int,
                   ) -> tuple[Counter[str], int, float]:
    victim = await build(contacts)
    ours = victim.key is not None
    sent: Counter[str] = Counter()
    size = 0
    send = getattr(victim.sender, victim.send_name)
    target: Any = None

    def counting_sendto(data: bytes, addr: Any = None) -> None:
        nonlocal size
        if addr is not None and target is not None and tuple(addr[:2]) == tuple(target[:2]):
            sent[_our_kind(data) if ours else _kind(data)] += 1
            size += len(data)
        send(data, addr)

    setattr(victim.sender, victim.send_name, counting_sendto)
    cpu = time.process_time()
    close, target = await (_ping_ours if ours else _ping_kademlia)(victim, kind)
    try:
        await asyncio.sleep(WINDOW)
        return sent, size, time.process_time() - cpu
    finally:
        close()
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
