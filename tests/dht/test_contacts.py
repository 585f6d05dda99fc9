"""The routing table, peers.json and log lines against one hostile address.

Before the fix one UDP socket, sending pings with invented node ids, put 648 contacts into a
node's routing table and all 64 entries of its saved peers.json; rpcudp logged the method name a
peer sent verbatim at WARNING and every unanswered call at ERROR.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import umsgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.storage import ForgetfulStorage

from dht.limits import DEFAULT_LIMITS, DhtLimits, cap_addresses, subnet
from dht.protocol import DhtProtocol, RoutingTable, _node_list
from dht.storage import RecordStore
from dht.tasks import TaskSet
from mailnode.runstate import MAX_SAVED_PEERS, PEERS_NAME, load_peers, save_peers
from tests.dht.support import LOOPBACK, FakeClock, NodeFactory, eventually

ATTACKER = "203.0.113.5"


async def _noop(*args: Any) -> None:
    return None


def _protocol(ksize: int = 20, limits: DhtLimits = DEFAULT_LIMITS) -> DhtProtocol:
    protocol = DhtProtocol(
        Node(os.urandom(20)),
        RecordStore(FakeClock()),
        ksize,
        tasks=TaskSet(),
        rpc_timeout=1.0,
        limits=limits,
    )
    protocol.call_ping = _noop  # type: ignore[method-assign,assignment]  # full bucket pings head
    return protocol


def _entries(table: RoutingTable) -> list[tuple[int, Node]]:
    return list(table._entries())


def _check_caps(table: RoutingTable, limits: DhtLimits) -> None:
    entries = [(i, n) for i, n in _entries(table) if (n.ip, n.port) not in table.protected]
    addresses = Counter((n.ip, n.port) for _, n in _entries(table))
    assert all(count == 1 for count in addresses.values()), "one id per ip:port"
    assert max(Counter(n.ip for _, n in entries).values(), default=0) <= limits.contacts_per_ip
    assert (
        max(Counter(subnet(n.ip) for _, n in entries).values(), default=0)
        <= limits.contacts_per_subnet
    )
    assert (
        max(Counter((i, n.ip) for i, n in entries).values(), default=0)
        <= limits.contacts_per_ip_bucket
    )
    assert (
        max(Counter((i, subnet(n.ip)) for i, n in entries).values(), default=0)
        <= limits.contacts_per_subnet_bucket
    )


def _populate(protocol: DhtProtocol, count: int, rng: random.Random) -> None:
    """Honest contacts, each in its own /24, so the table has split into many buckets."""
    for i in range(count):
        node = Node(rng.randbytes(20), f"10.{i // 250}.{i % 250}.1", 4000)
        assert protocol.router.add_contact(node, verified=True)


async def test_one_socket_with_many_ids_is_one_contact() -> None:
    protocol = _protocol()
    for _ in range(1000):
        protocol.rpc_ping((ATTACKER, 4000), os.urandom(20))
    assert [(n.ip, n.port) for _, n in _entries(protocol.router)] == [(ATTACKER, 4000)]


async def test_one_ip_and_one_subnet_get_at_most_their_share() -> None:
    rng = random.Random(5)
    protocol = _protocol()
    _populate(protocol, 300, rng)
    assert len(protocol.router.buckets) > 8
    for port in range(1000, 3000):  # one IP, many sockets, fresh ids
        protocol.rpc_ping((ATTACKER, port), rng.randbytes(20))
    for host in range(1, 255):  # its whole /24
        for port in range(3):
            protocol.rpc_ping((f"203.0.113.{host}", 5000 + port), rng.randbytes(20))
    from_attacker = [n for _, n in _entries(protocol.router) if n.ip == ATTACKER]
    from_subnet = [n for _, n in _entries(protocol.router) if subnet(n.ip) == "203.0.113.0/24"]
    assert 0 < len(from_attacker) <= DEFAULT_LIMITS.contacts_per_ip == 8
    assert len(from_subnet) == DEFAULT_LIMITS.contacts_per_subnet == 16
    _check_caps(protocol.router, DEFAULT_LIMITS)
    assert sum(n.ip.startswith("10.") for _, n in _entries(protocol.router)) == 300  # all kept


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 3),
            st.integers(0, 2),
            st.binary(min_size=20, max_size=20),
            st.booleans(),
        ),
        max_size=120,
    ),
    st.sampled_from([2, 3, 20]),
)
def test_caps_hold_for_any_sequence_of_contacts(
    contacts: list[tuple[int, int, int, bytes, bool]], ksize: int
) -> None:
    """Small buckets split often; whatever arrives, from wherever, the caps hold."""
    limits = DhtLimits(
        contacts_per_ip_bucket=1,
        contacts_per_ip=3,
        contacts_per_subnet_bucket=2,
        contacts_per_subnet=5,
    )

    async def run() -> None:
        protocol = _protocol(ksize, limits)
        for net, host, port, node_id, verified in contacts:
            node = Node(node_id, f"10.0.{net}.{host}", 4000 + port)
            protocol.router.add_contact(node, verified=verified)
            _check_caps(protocol.router, limits)

    asyncio.run(run())


async def test_a_proven_contact_is_not_displaced_or_moved_by_claims() -> None:
    protocol = _protocol()
    router = protocol.router
    real = Node(os.urandom(20), "198.51.100.1", 4000)
    assert router.add_contact(real, verified=True)
    # a spoofed datagram from its address with another id
    assert not router.add_contact(Node(os.urandom(20), real.ip, real.port))
    # its id claimed from another address, even by something that answers there
    assert not router.add_contact(Node(real.id, "198.51.100.66", 4000), verified=True)
    # a lookup told us its id lives at a dead address; our call there fails
    router.remove_contact(Node(real.id, "198.51.100.66", 4000))
    assert [n for _, n in _entries(router)] == [real]
    assert (real.ip, real.port) == ("198.51.100.1", 4000)


async def test_an_unproven_contact_gives_way_to_one_that_answers() -> None:
    protocol = _protocol()
    router = protocol.router
    spoofed = Node(os.urandom(20), "198.51.100.1", 4000)
    assert router.add_contact(spoofed)  # e.g. a spoofed source address
    real = Node(os.urandom(20), "198.51.100.1", 4000)
    assert router.add_contact(real, verified=True)
    assert [n.id for _, n in _entries(router)] == [real.id]


async def test_protected_addresses_are_exempt_from_the_caps() -> None:
    protocol = _protocol()
    router = protocol.router
    for port in range(100):
        router.add_contact(Node(os.urandom(20), ATTACKER, port))
    bootstrap = (ATTACKER, 9999)
    assert not router.add_contact(Node(os.urandom(20), *bootstrap))
    router.protected.add(bootstrap)
    assert router.add_contact(Node(os.urandom(20), *bootstrap))


def test_answers_naming_non_ip_hosts_are_dropped() -> None:
    good = (os.urandom(20), "198.51.100.1", 4000)
    junk = [
        (os.urandom(20), "evil\n[ERROR] forged", 4000),
        (os.urandom(20), "localhost", 4000),
        (os.urandom(20), "", 4000),
    ]
    assert _node_list([good, *junk]) == [good]


# peers.json


def test_saved_peers_are_capped_and_keep_the_first_listed(tmp_path: Path) -> None:
    bootstrap = ("198.51.100.1", 4000)
    flood = [(ATTACKER, port) for port in range(1000, 1100)]
    subnet_flood = [(f"203.0.113.{h}", 4000) for h in range(10, 100)]
    honest = [(f"10.0.{i}.1", 4000) for i in range(20)]
    save_peers(tmp_path, [bootstrap, *flood, *subnet_flood, *honest])
    saved = load_peers(tmp_path)
    assert saved[0] == bootstrap
    assert sum(ip == ATTACKER for ip, _ in saved) == DEFAULT_LIMITS.contacts_per_ip
    assert sum(subnet(ip) == "203.0.113.0/24" for ip, _ in saved) == 16
    assert set(honest) <= set(saved)
    assert len(saved) <= MAX_SAVED_PEERS


def test_a_poisoned_peers_file_from_before_is_capped_on_load(tmp_path: Path) -> None:
    (tmp_path / PEERS_NAME).write_text(json.dumps([[ATTACKER, p] for p in range(64)]))
    assert load_peers(tmp_path) == [(ATTACKER, p) for p in range(8)]


def test_cap_addresses_keeps_order_and_drops_duplicates() -> None:
    addresses = [("10.0.0.1", 1), ("10.0.0.1", 1), ("10.0.0.1", 2), ("10.0.0.2", 1)]
    assert cap_addresses(addresses, per_ip=1, per_subnet=5, total=10) == [
        ("10.0.0.1", 1),
        ("10.0.0.2", 1),
    ]
    assert cap_addresses(addresses, per_ip=5, per_subnet=5, total=2) == [
        ("10.0.0.1", 1),
        ("10.0.0.1", 2),
    ]


# over UDP, with the default limits


async def _open_stranger() -> KademliaProtocol:
    """kademlia's own protocol on a fresh loopback socket: it sends what a stranger could."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: KademliaProtocol(Node(os.urandom(20)), ForgetfulStorage(), 20),
        local_addr=(LOOPBACK, 0),
    )
    protocol._wait_timeout = 2.0
    return protocol


def _close_stranger(protocol: KademliaProtocol) -> None:
    for _, timeout in protocol._outstanding.values():
        timeout.cancel()
    protocol.transport.close()


@pytest.fixture
async def stranger() -> AsyncIterator[KademliaProtocol]:
    protocol = await _open_stranger()
    try:
        yield protocol
    finally:
        _close_stranger(protocol)


async def test_a_flood_of_ids_over_udp_leaves_one_contact_and_the_bootstrap_peer_first(
    make_node: NodeFactory, stranger: KademliaProtocol, tmp_path: Path
) -> None:
    boot = await make_node()
    node = await make_node(protected_peers=[(LOOPBACK, boot.port)])
    address = (LOOPBACK, node.port)
    for _ in range(DEFAULT_LIMITS.requests_per_ip_burst - 10):  # all answered: within rate
        ok, _ = await stranger.ping(address, os.urandom(20))
        assert ok
    assert node.peer_count() == 1
    # more sockets on the same IP: loopback's share of the one bucket is used up ...
    others = [await _open_stranger() for _ in range(3)]
    try:
        for other in others:
            ok, _ = await other.ping(address, os.urandom(20))
            assert ok
        assert node.peer_count() == DEFAULT_LIMITS.contacts_per_ip_bucket
        # ... but the configured bootstrap peer still gets in, and is listed (and saved) first
        await node.bootstrap([(LOOPBACK, boot.port)])
        await eventually(lambda: (LOOPBACK, boot.port) in node.peers(), what="bootstrap kept")
        assert node.peers()[0] == (LOOPBACK, boot.port)
        save_peers(tmp_path, node.peers())
        assert load_peers(tmp_path)[0] == (LOOPBACK, boot.port)
    finally:
        for other in others:
            _close_stranger(other)


# log lines


def _dht_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] in ("dht", "rpcudp", "kademlia")]


async def test_hostile_input_and_silent_peers_cannot_forge_or_flood_logs(
    make_node: NodeFactory, stranger: KademliaProtocol, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node = await make_node(rpc_timeout=0.2)
    address = (LOOPBACK, node.port)
    forged = "x\n2026-01-01 [CRITICAL] root: forged\x1b[2J"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind((LOOPBACK, 0))
        for payload in (
            [forged, [os.urandom(20)]],  # an unknown method name
            ["stun", []],  # a library RPC that is not ours
            ["store", [os.urandom(20), forged.encode(), forged.encode()]],
            ["ping", [forged]],
            ["ping", [os.urandom(20), "extra", "args"]],
            forged,
        ):
            raw.sendto(b"\x00" + os.urandom(20) + umsgpack.packb(payload), address)
        raw.sendto(b"\x01" + os.urandom(20) + umsgpack.packb(forged), address)  # unasked
        # a silent peer: the node's call to it times out
        silent = raw.getsockname()
        protocol = node._server.protocol
        ok, _ = await protocol.call_ping(Node(os.urandom(20), *silent))
        assert not ok
    ok, node_id = await stranger.ping(address, os.urandom(20))  # still answering
    assert ok and node_id == node.node_id
    records = _dht_records(caplog)
    assert records, "the hostile input was logged at DEBUG"
    for record in records:
        message = record.getMessage()
        assert record.levelno < logging.WARNING, message
        assert message.isprintable(), message
        assert "CRITICAL] root: forged" not in message or "\\n" in message


class _Transport:
    """Records what the protocol sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


async def test_requests_beyond_a_source_ips_rate_are_dropped() -> None:
    """Bounds the CPU one address takes and what a spoofed source (reflection victim) gets."""
    protocol = _protocol(limits=DhtLimits(requests_per_ip_second=0.001, requests_per_ip_burst=10))
    transport = _Transport()
    protocol.connection_made(transport)
    victim = ("198.51.100.77", 4000)
    request = umsgpack.packb(["find_node", [os.urandom(20), os.urandom(20)]])
    for _ in range(50):
        protocol.datagram_received(b"\x00" + os.urandom(20) + request, victim)
    protocol.datagram_received(b"\x00" + os.urandom(20) + request, ("198.51.100.78", 4000))
    await eventually(lambda: len(protocol._tasks) == 0, what="requests answered")
    answered = Counter(addr for _, addr in transport.sent)
    assert answered == {victim: 10, ("198.51.100.78", 4000): 1}


async def test_a_node_is_never_its_own_contact() -> None:
    """A peer may know us by another address (loopback and LAN): that is not a peer of ours,
    or we would publish, save and dial it as one."""
    protocol = _protocol()
    me = protocol.source_node
    assert not protocol.router.add_contact(Node(me.id, "192.0.2.2", 10038), verified=True)
    protocol.rpc_ping(("192.0.2.2", 10038), me.id)
    assert _entries(protocol.router) == []
