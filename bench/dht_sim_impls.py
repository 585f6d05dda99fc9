"""The DHT implementations :mod:`bench.dht_sim` can run, each behind one small adapter.

The harness only speaks :class:`SimNode`: start, publish, lookup, stop, and turn malicious.
Everything implementation-specific (wire format, how a liar answers, how RPCs are counted) lives
in the adapter, so another implementation joins the benchmark with one class and one line in
:data:`IMPLEMENTATIONS`::

    class KadCoreNode:                       # e.g. the sans-IO core in dht/kad on UDP
        async def start(self, host, port, bootstrap): ...
        ...                                  # every member of SimNode
    IMPLEMENTATIONS["kad"] = KadCoreNode

and ``python -m bench.dht_sim --impl kademlia,mailnode,kad`` prints it next to the others.
What each malicious kind means is fixed by :class:`Attack` (the harness builds the lies; the
adapter only decides how its wire carries them).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kademlia.crawling import ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node

from crypto.keys import Identity
from dht.kad.contact import Contact
from dht.kad.messages import (
    MAX_REPLY_CONTACTS,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Reply,
    Request,
    Value,
)
from dht.kad.rpc import RpcEngine
from dht.limits import DEFAULT_LIMITS, DhtLimits
from dht.node import DhtNode
from dht.records import AddressRecord, dht_key

Address = tuple[str, int]
FakeContact = tuple[bytes, str, int]  # (node id, ip, port) as rpcudp-based nodes exchange them

KINDS = ("forge", "stale", "drop", "eclipse")


@dataclass(frozen=True)
class Attack:
    """What a malicious node does; built by the harness, carried out by the adapter.

    - ``forge``: answer every FIND_VALUE with ``lie(key)``: a record under the key that does
      not verify (signed by another key) or a valid record of another user.
    - ``stale``: answer FIND_VALUE with ``lie(key)``: the owner's older, validly signed record
      (lower seq) although the owner has published a newer one.
    - ``drop``: answer nothing and send nothing.
    - ``eclipse``: the node listens on the attackers' one IP; it answers FIND_NODE and
      FIND_VALUE with ``sybils(key)`` (ids closer to the key than any real node, all at the
      attackers' addresses, never a value) and announces ``announce(contact_id)`` fake ids
      to the contacts it knows, to fill their routing tables. An implementation whose ids
      are bound to keys (S/Kademlia) cannot claim a chosen id without its key: its adapter
      makes the same number of contacts from fresh keys at the same addresses instead (ids
      as close as an attacker without key grinding gets).
    """

    kind: str
    lie: Callable[[bytes], bytes | None] = lambda key: None
    sybils: Callable[[bytes], list[FakeContact]] = lambda key: []
    announce: Callable[[bytes], list[bytes]] = lambda node_id: []


class SimNode(Protocol):
    """One DHT node as the harness drives it. ``user_key`` is a 32-byte Ed25519 key; the DHT
    key is :func:`dht.records.dht_key` of it. ``lookup`` returns the record bytes the node
    believes (the harness judges them) or None."""

    async def start(self, host: str, port: int, bootstrap: Sequence[Address]) -> Address: ...

    async def publish(self, record: AddressRecord) -> None: ...

    async def lookup(self, user_key: bytes) -> bytes | None: ...

    def rpcs_sent(self) -> int:
        """Requests this node has sent so far (monotonic; the harness takes differences)."""
        ...

    def contact_hosts(self) -> list[str]:
        """The IPs of the contacts in its routing table (to measure eclipse share)."""
        ...

    async def make_malicious(self, attack: Attack | None) -> None:
        """Start ``attack``; None: behave honestly again (the harness reuses one network for
        several attacks in turn)."""
        ...

    async def stop(self) -> None: ...


class _RpcudpNode:
    """What kademlia's adapters share: rpcudp's wire, so the same liars work."""

    def __init__(self) -> None:
        self._sent = 0

    # subclasses provide these two
    def _transport(self) -> Any:
        raise NotImplementedError

    def _protocol(self) -> Any:
        raise NotImplementedError

    def _count_requests(self) -> None:
        transport = self._transport()
        send = transport.sendto

        def counting(data: bytes, addr: Any = None) -> None:
            if data[:1] == b"\x00":
                self._sent += 1
            send(data, addr)

        transport.sendto = counting

    def rpcs_sent(self) -> int:
        return self._sent

    def _contacts(self) -> list[Any]:
        return [n for bucket in self._protocol().router.buckets for n in bucket.get_nodes()]

    def contact_hosts(self) -> list[str]:
        return [n.ip for n in self._contacts()]

    def _value_answer(self, value: bytes, nodes: list[Any]) -> object:
        raise NotImplementedError

    async def make_malicious(self, attack: Attack | None) -> None:
        protocol = self._protocol()
        for name in ("datagram_received", "rpc_find_node", "rpc_find_value"):
            protocol.__dict__.pop(name, None)  # the class's own, honest methods again
        if attack is None:
            return
        if attack.kind == "drop":
            protocol.datagram_received = lambda data, addr: None
            return
        if attack.kind in ("forge", "stale"):
            honest = protocol.rpc_find_value

            def lying(sender: Address, nodeid: bytes, key: bytes) -> object:
                value = attack.lie(key) if isinstance(key, bytes) else None
                if value is None:
                    return honest(sender, nodeid, key)
                return self._value_answer(value, protocol.rpc_find_node(sender, nodeid, key))

            protocol.rpc_find_value = lying
            return
        if attack.kind == "eclipse":

            def sybils(sender: Address, nodeid: bytes, key: bytes) -> list[FakeContact]:
                return attack.sybils(key) if isinstance(key, bytes) else []

            protocol.rpc_find_node = sybils
            protocol.rpc_find_value = sybils
            contacts = self._contacts()
            pings = [
                protocol.ping((c.ip, c.port), fake)
                for c in random.sample(contacts, min(len(contacts), 64))
                for fake in attack.announce(c.id)
            ]
            await asyncio.gather(*pings)
            return
        raise ValueError(f"unknown attack {attack.kind!r}")


class KademliaNode(_RpcudpNode):
    """The unmodified ``kademlia`` 2.2.3 package: a plain ``Server`` storing the record bytes.

    Only the key differs from ``Server.set``/``get``: records live under ``dht_key(user)``
    (``set_digest``; ``get`` without its ``digest()``), as mailnode stores them.
    """

    def __init__(self, rpc_timeout: float = 5.0) -> None:
        super().__init__()
        self._server = Server()
        self._rpc_timeout = rpc_timeout

    def _transport(self) -> Any:
        return self._server.transport

    def _protocol(self) -> Any:
        return self._server.protocol

    def _value_answer(self, value: bytes, nodes: list[Any]) -> object:
        return {"value": value}

    async def start(self, host: str, port: int, bootstrap: Sequence[Address]) -> Address:
        await self._server.listen(port, host)
        self._server.protocol._wait_timeout = self._rpc_timeout
        self._count_requests()
        if bootstrap:
            await self._server.bootstrap(list(bootstrap))
        sockname = self._server.transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    async def publish(self, record: AddressRecord) -> None:
        await self._server.set_digest(dht_key(record.user_key), record.encode())

    async def lookup(self, user_key: bytes) -> bytes | None:
        dkey = dht_key(user_key)
        held = self._server.storage.get(dkey)
        if held is not None:
            return bytes(held)
        node = Node(dkey)
        nearest = self._server.protocol.router.find_neighbors(node)
        if not nearest:
            return None
        server = self._server
        value = await ValueSpiderCrawl(
            server.protocol, node, nearest, server.ksize, server.alpha
        ).find()
        return value if isinstance(value, bytes) else None

    async def stop(self) -> None:
        self._server.stop()


class MailnodeNode:
    """mailnode's :class:`dht.node.DhtNode`: the sans-IO core in :mod:`dht.kad` on UDP (ids
    bound to keys, every datagram MACed; default limits: each simulated node has its own IP).
    Its wire is not rpcudp's, so its liars are made by replacing the node's request handler;
    requests are counted at the RPC engine."""

    def __init__(self, rpc_timeout: float = 5.0, limits: DhtLimits = DEFAULT_LIMITS) -> None:
        self._node = DhtNode(rpc_timeout=rpc_timeout, limits=limits)
        self._sent = 0

    async def start(self, host: str, port: int, bootstrap: Sequence[Address]) -> Address:
        await self._node.start(host, port)
        engine = self._node._endpoint.engine
        request = engine.request

        def counting(contact: Contact, message: Request, now: float) -> tuple[bytes, bytes]:
            self._sent += 1
            return request(contact, message, now)

        engine.request = counting  # type: ignore[method-assign]
        if bootstrap:
            await self._node.bootstrap(bootstrap)
        return (host, self._node.port)

    async def publish(self, record: AddressRecord) -> None:
        await self._node.publish(record)

    async def lookup(self, user_key: bytes) -> bytes | None:
        record = await self._node.lookup(user_key)
        return None if record is None else record.encode()

    def rpcs_sent(self) -> int:
        return self._sent

    def contact_hosts(self) -> list[str]:
        return [c.host for c in self._node._table.contacts()]

    async def make_malicious(self, attack: Attack | None) -> None:
        node, endpoint = self._node, self._node._endpoint
        endpoint.__dict__.pop("_received", None)  # the class's own, honest method again
        endpoint._handler = node._answer
        if attack is None:
            return
        honest = node._answer
        if attack.kind == "drop":
            endpoint._received = lambda data, address: None  # type: ignore[method-assign]
            return
        if attack.kind in ("forge", "stale"):

            def lying(contact: Contact, request: Request, now: float) -> Reply | None:
                reply = honest(contact, request, now)
                if isinstance(request, FindValue) and isinstance(reply, Value):
                    lie = attack.lie(request.key)
                    if lie is not None:
                        return Value(lie, reply.contacts)
                return reply

            endpoint._handler = lying
            return
        if attack.kind == "eclipse":
            # Ids are bound to keys: an attacker cannot claim the ids sybils() names, so it
            # names as many fresh keys at the attackers' addresses (it holds no key for them:
            # a request to one is refused by the attacker's own engine and times out).
            def fresh(target: bytes) -> tuple[Contact, ...]:
                named = attack.sybils(target)[:MAX_REPLY_CONTACTS]
                return tuple(Contact(os.urandom(32), host, port) for _, host, port in named)

            def sybils(contact: Contact, request: Request, now: float) -> Reply | None:
                if isinstance(request, FindNode):
                    return Nodes(fresh(request.target))
                if isinstance(request, FindValue):
                    return Value(b"", fresh(request.key))
                return honest(contact, request, now)

            endpoint._handler = sybils
            contacts = node._table.contacts()
            for contact in random.sample(contacts, min(len(contacts), 64)):
                for _ in attack.announce(contact.node_id):  # a ping from a fresh key each
                    engine = RpcEngine(Identity.generate())
                    endpoint._send(engine.request(contact, Ping(), 0.0)[1], contact.address)
            return
        raise ValueError(f"unknown attack {attack.kind!r}")

    async def stop(self) -> None:
        await self._node.aclose()


# name -> factory taking the RPC timeout; --impl chooses among these
IMPLEMENTATIONS: dict[str, Callable[[float], SimNode]] = {
    "kademlia": KademliaNode,
    "mailnode": MailnodeNode,
}
