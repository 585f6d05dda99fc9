"""The routing table, peers.json and log lines against one hostile address.

Before the fix one UDP socket, sending pings with invented node ids, put 648 contacts into a
node's routing table and all 64 entries of its saved peers.json; rpcudp logged the method name a
peer sent verbatim at WARNING and every unanswered call at ERROR. Ids are now bound to keys (and
every reply signed); the table below (:mod:`dht.kad.routing`) caps what one address and one
subnet can hold whatever ids they bring.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import FindNode, Ping
from dht.kad.routing import Kind, RoutingTable
from dht.kad.rpc import RpcEngine
from dht.limits import DEFAULT_LIMITS, DhtLimits, cap_addresses, subnet
from mailnode.runstate import MAX_SAVED_PEERS, PEERS_NAME, load_peers, save_peers
from tests.dht.support import LOOPBACK, NodeFactory

ATTACKER = "203.0.113.5"


def _table(
    k: int = 20, limits: DhtLimits = DEFAULT_LIMITS, rng: random.Random | None = None
) -> RoutingTable:
    key = rng.randbytes(32) if rng is not None else os.urandom(32)
    return RoutingTable(Contact(key, "192.0.2.1", 1).node_id, 0.0, k=k, limits=limits)


def _contact(rng: random.Random, host: str, port: int = 4000) -> Contact:
    return Contact(rng.randbytes(32), host, port)


def _check_caps(table: RoutingTable, limits: DhtLimits) -> None:
    held = table.contacts()
    entries = [(table.bucket_index(c.node_id), c) for c in held if not table.is_anchor(c.node_id)]
    assert all(n == 1 for n in Counter(c.address for c in held).values()), "one id per ip:port"
    assert max(Counter(c.host for _, c in entries).values(), default=0) <= limits.contacts_per_ip
    assert (
        max(Counter(subnet(c.host) for _, c in entries).values(), default=0)
        <= limits.contacts_per_subnet
    )
    assert (
        max(Counter((i, c.host) for i, c in entries).values(), default=0)
        <= limits.contacts_per_ip_bucket
    )
    assert (
        max(Counter((i, subnet(c.host)) for i, c in entries).values(), default=0)
        <= limits.contacts_per_subnet_bucket
    )


def test_one_socket_with_many_ids_is_one_contact() -> None:
    table, rng = _table(), random.Random(1)
    for _ in range(1000):
        table.offer(_contact(rng, ATTACKER), 0.0)  # each one a request from a fresh key
    assert [c.address for c in table.contacts()] == [(ATTACKER, 4000)]


def test_one_ip_and_one_subnet_get_at_most_their_share() -> None:
    rng = random.Random(5)
    table = _table(rng=rng)
    for i in range(300):  # honest contacts, each in its own /24, proven
        table.offer(_contact(rng, f"10.{i // 250}.{i % 250}.1"), 0.0, verified=True)
    honest = {c.node_id for c in table.contacts()}
    assert len(honest) > 60  # spread over many buckets
    for port in range(1000, 3000):  # one IP, many sockets, fresh ids
        table.offer(_contact(rng, ATTACKER, port), 1.0)
    for host in range(1, 255):  # its whole /24
        for port in range(3):
            table.offer(_contact(rng, f"203.0.113.{host}", 5000 + port), 1.0)
    held = table.contacts()
    from_attacker = [c for c in held if c.host == ATTACKER]
    from_subnet = [c for c in held if subnet(c.host) == "203.0.113.0/24"]
    assert 0 < len(from_attacker) <= DEFAULT_LIMITS.contacts_per_ip == 8
    assert 0 < len(from_subnet) <= DEFAULT_LIMITS.contacts_per_subnet == 16
    _check_caps(table, DEFAULT_LIMITS)
    assert honest <= {c.node_id for c in held}  # none displaced


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 3),
            st.integers(0, 2),
            st.binary(min_size=32, max_size=32),
            st.booleans(),
            st.booleans(),
        ),
        max_size=120,
    ),
    st.sampled_from([2, 3, 20]),
)
def test_caps_hold_for_any_sequence_of_contacts(
    contacts: list[tuple[int, int, int, bytes, bool, bool]], k: int
) -> None:
    """Small buckets fill often; whatever arrives, from wherever, and whoever times out, the
    caps hold."""
    limits = DhtLimits(
        contacts_per_ip_bucket=1,
        contacts_per_ip=3,
        contacts_per_subnet_bucket=2,
        contacts_per_subnet=5,
    )
    table = _table(k, limits)
    for now, (net, host, port, key, verified, fails) in enumerate(contacts):
        contact = Contact(key, f"10.0.{net}.{host}", 4000 + port)
        table.offer(contact, float(now), verified=verified)
        if fails:
            table.failed(contact.node_id, float(now))
        _check_caps(table, limits)


def test_a_node_is_never_its_own_contact() -> None:
    """A peer may know us by another address (loopback and LAN): that is not a peer of ours,
    or we would publish, save and dial it as one."""
    me = Identity(os.urandom(32))
    table = RoutingTable(Contact(me.verify_key, "192.0.2.1", 1).node_id, 0.0)
    decision = table.offer(Contact(me.verify_key, "192.0.2.2", 10038), 0.0, verified=True)
    assert decision.kind is Kind.REFUSED
    assert table.contacts() == []


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


# log lines


def _dht_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] == "dht"]


async def test_hostile_input_and_silent_peers_cannot_forge_or_flood_logs(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node = await make_node(rpc_timeout=0.2)
    address = (LOOPBACK, node.port)
    forged = b"x\n2026-01-01 [CRITICAL] root: forged\x1b[2J"
    stranger = RpcEngine(Identity(os.urandom(32)))
    target = Contact(node._identity.verify_key, *address)
    ping = stranger.request(target, Ping(), time.monotonic())[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind((LOOPBACK, 0))
        for datagram in (
            forged,
            forged * 100,
            bytes([wire.VERSION, 0x7F]) + forged.ljust(200, b"\0"),  # an unknown kind
            ping[:-1] + bytes([ping[-1] ^ 1]),  # a bad signature
            bytes([wire.VERSION, wire.KIND_PONG]) + os.urandom(8) + forged.ljust(160, b"\0"),
        ):
            raw.sendto(datagram, address)
        # a silent peer: the node's query to it times out
        silent = Contact(os.urandom(32), *raw.getsockname()[:2])
        assert await node._query(silent, FindNode(os.urandom(20))) is None
    answered = await node._endpoint.probe(address)  # still answering (a probe of itself: no)
    assert answered is None
    other = await make_node([address])  # but others still join through it
    assert other.peer_count() == 1
    records = _dht_records(caplog)
    assert any("dropped" in r.getMessage() for r in records), "the hostile input is logged"
    for record in records:
        message = record.getMessage()
        assert record.levelno < logging.WARNING, message
        assert message.isprintable(), message
        assert "CRITICAL] root: forged" not in message or "\\n" in message
