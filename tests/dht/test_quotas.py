"""Storage quotas: one client cannot fill a node's record store or keep junk there for ever.

Before the fix one client stored 100,500 valid junk records (any key pair signs its own) that
never expired, and real records were refused as "store is full".
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from dht.kad.messages import Store, Stored
from dht.kad.rpc import RpcEngine
from dht.kad.udp import UdpEndpoint
from dht.limits import DEFAULT_LIMITS, MAX_RECORD_TTL, DhtLimits, subnet
from dht.node import DhtNode
from dht.records import AddressRecord, RecordError, dht_key
from dht.storage import MAX_CLOCK_SKEW, RecordStore
from tests.dht.support import LOOPBACK, FakeClock, NodeFactory, make_record


def _user(i: int) -> Identity:
    return Identity(i.to_bytes(4, "big") * 8)


def _record(i: int, clock: FakeClock, **kwargs: Any) -> tuple[bytes, bytes]:
    user = _user(i)
    return dht_key(user.verify_key), make_record(user, now=clock.now, **kwargs).encode()


def test_records_beyond_the_per_ip_quota_are_refused_with_the_defaults() -> None:
    clock = FakeClock()
    store = RecordStore(clock)
    quota = DEFAULT_LIMITS.records_per_ip
    for i in range(quota):
        assert store.offer(*_record(i, clock), origin="203.0.113.5")
    with pytest.raises(RecordError, match=r"203\.0\.113\.5 already stored"):
        store.offer(*_record(quota, clock), origin="203.0.113.5")
    assert store.held_from("203.0.113.5") == quota
    # someone else's record is still welcome, and so is this node's own
    assert store.offer(*_record(quota, clock), origin="198.51.100.1")
    assert store.offer(*_record(quota + 1, clock))
    assert len(store) == quota + 2


def test_a_subnet_shares_one_quota() -> None:
    clock = FakeClock()
    store = RecordStore(clock, limits=DhtLimits(records_per_ip=3, records_per_subnet=5))
    for i in range(3):
        store.offer(*_record(i, clock), origin="203.0.113.1")
    for i in range(3, 5):
        store.offer(*_record(i, clock), origin="203.0.113.2")
    with pytest.raises(RecordError, match=r"203\.0\.113\.0/24 already stored 5"):
        store.offer(*_record(5, clock), origin="203.0.113.3")
    assert store.offer(*_record(5, clock), origin="203.0.114.3")  # the next /24 is not charged


def test_a_newer_version_replaces_without_double_counting_and_expiry_frees_the_quota() -> None:
    clock = FakeClock()
    store = RecordStore(clock, limits=DhtLimits(records_per_ip=2, records_per_subnet=2))
    key, first = _record(1, clock, seq=1)
    store.offer(key, first, origin="203.0.113.1")
    for seq in range(2, 6):  # the user's node keeps updating its record
        assert store.offer(key, _record(1, clock, seq=seq)[1], origin="203.0.113.1")
    assert store.held_from("203.0.113.1") == 1
    store.offer(*_record(2, clock, expires=int(clock.now) + 60), origin="203.0.113.1")
    with pytest.raises(RecordError, match="already stored"):
        store.offer(*_record(3, clock), origin="203.0.113.1")
    clock.now += 60
    assert store.offer(*_record(3, clock), origin="203.0.113.1")  # the expired one made room
    # a newer version sent by someone else moves the charge to them
    store.offer(key, _record(1, clock, seq=9)[1], origin="198.51.100.7")
    assert store.held_from("203.0.113.1") == 1
    assert store.held_from("198.51.100.7") == 1


def test_a_full_store_still_takes_records_from_others_and_its_own() -> None:
    clock = FakeClock()
    store = RecordStore(clock, max_records=10, limits=DhtLimits(records_per_ip=4))
    flooded = 0
    for i in range(100):  # a flood from one /24, many addresses
        try:
            store.offer(*_record(i, clock), origin=f"203.0.113.{i}")
            flooded += 1
        except RecordError:
            pass
    assert flooded == 10  # the default per-subnet quota is larger than this tiny store
    with pytest.raises(RecordError, match="full"):
        store.offer(*_record(200, clock), origin="198.51.100.1")
    assert store.offer(*_record(201, clock))  # our own record is never locked out


def test_the_per_ip_quota_leaves_room_in_a_full_size_store() -> None:
    clock = FakeClock()
    store = RecordStore(clock, max_records=10, limits=DhtLimits(records_per_ip=3))
    for i in range(20):  # one client hammering
        with contextlib.suppress(RecordError):
            store.offer(*_record(i, clock), origin="203.0.113.66")
    for i in range(20, 27):  # the rest of the world still fits
        assert store.offer(*_record(i, clock), origin=f"198.51.{i}.1")


def test_expiry_far_in_the_future_is_refused() -> None:
    clock = FakeClock()
    store = RecordStore(clock)
    latest = int(clock.now) + MAX_RECORD_TTL + MAX_CLOCK_SKEW
    with pytest.raises(RecordError, match="expires more than"):
        store.offer(*_record(1, clock, expires=latest + 1), origin="203.0.113.1")
    with pytest.raises(RecordError, match="expires more than"):
        store.offer(*_record(2, clock, expires=2**64 - 1))  # not even our own
    assert store.offer(*_record(3, clock, expires=latest), origin="203.0.113.1")
    assert len(store) == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(0, 12),
            st.integers(1, 3),
            st.sampled_from([0, 0, 0, 2000]),
        ),
        max_size=60,
    )
)
def test_quotas_hold_for_any_sequence_of_stores(
    ops: list[tuple[int, int, int, int, int]],
) -> None:
    """(subnet, host, user, seq, seconds passing) in any order: the counts match what is held
    (expired records free their share), and no IP or subnet exceeds its quota."""
    clock = FakeClock()
    limits = DhtLimits(records_per_ip=3, records_per_subnet=5)
    store = RecordStore(clock, limits=limits)
    for net, host, user, seq, advance in ops:
        clock.now += advance
        origin = f"10.0.{net}.{host}"
        with contextlib.suppress(RecordError):
            store.offer(*_record(user, clock, seq=seq), origin=origin)
        store.cull()
        held = [e.origin for e in store._data.values() if e.origin is not None]
        assert sum(store._per_ip.values()) == len(held)
        for ip in set(held):
            assert held.count(ip) == store.held_from(ip) <= limits.records_per_ip
        for net_name in {subnet(ip) for ip in held}:
            assert sum(subnet(ip) == net_name for ip in held) <= limits.records_per_subnet


def test_subnets_are_24_for_ipv4_and_64_for_ipv6() -> None:
    assert subnet("203.0.113.7") == subnet("203.0.113.200") == "203.0.113.0/24"
    assert subnet("203.0.114.7") != subnet("203.0.113.7")
    assert subnet("2001:db8::1") == subnet("2001:db8::ffff:1") == "2001:db8::/64"
    assert subnet("2001:db8:0:1::1") != subnet("2001:db8::1")
    assert subnet("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert subnet("not an address") == "not an address"


# over UDP, from a stranger's socket


@pytest.fixture
async def stranger() -> AsyncIterator[UdpEndpoint]:
    """A peer with a key of its own: it sends whatever a stranger could."""
    endpoint = UdpEndpoint(RpcEngine(Identity(os.urandom(32)), timeout=2.0), lambda *a: None)
    await endpoint.start(LOOPBACK, 0)
    try:
        yield endpoint
    finally:
        await endpoint.close()


async def test_a_stranger_over_udp_hits_the_quota_and_cannot_store_forever(
    make_node: NodeFactory, stranger: UdpEndpoint
) -> None:
    clock = FakeClock()
    target = await make_node(clock=clock, limits=DhtLimits(records_per_ip=5))
    contact = await stranger.probe((LOOPBACK, target.port))
    assert contact is not None

    async def store(key: bytes, value: bytes) -> bool:
        reply = await stranger.query(contact, Store(key, value))
        assert isinstance(reply, Stored)
        return reply.accepted

    answers = [await store(*_record(i, clock)) for i in range(8)]
    assert answers == [True] * 5 + [False] * 3
    forever = AddressRecord.create(_user(99), bytes(32), [("x", 1)], 1, 2**64 - 1)
    assert await store(dht_key(_user(99).verify_key), forever.encode()) is False
    assert len(target.storage) == 5
    # the node's own publication is not charged to anyone
    own = make_record(_user(100), now=clock.now)
    await target.publish(own)
    assert target.held(_user(100).verify_key) == own


async def test_a_record_ttl_beyond_the_maximum_cannot_be_published(make_node: NodeFactory) -> None:
    node: DhtNode = await make_node()
    expires = int(time.time()) + MAX_RECORD_TTL + MAX_CLOCK_SKEW + 60
    too_long = AddressRecord.create(_user(1), bytes(32), [("x", 1)], 1, expires)
    with pytest.raises(RecordError, match="expires more than"):
        await node.publish(too_long)
