"""The answering side (Peer) and the publish schedule (Publisher): requests in, replies and
decisions out, time passed in."""

from __future__ import annotations

import random

from crypto.keys import Identity
from dht.kad.contact import Contact, distance
from dht.kad.messages import (
    MAX_REPLY_CONTACTS,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    Value,
)
from dht.kad.peer import EXPIRY_MARGIN, REPUBLISH_INTERVAL, RETRY_AFTER, Peer, Publisher
from dht.kad.routing import GOOD_FOR, RoutingTable
from dht.limits import DhtLimits
from dht.records import AddressRecord, dht_key
from dht.storage import RecordStore

NOW = 1_700_000_000.0
OPEN = DhtLimits(
    contacts_per_ip_bucket=10**6,
    contacts_per_ip=10**6,
    contacts_per_subnet_bucket=10**6,
    contacts_per_subnet=10**6,
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def stranger(rng: random.Random, host: str | None = None) -> Contact:
    host = host or f"10.{rng.randrange(256)}.{rng.randrange(256)}.1"
    return Contact(rng.randbytes(32), host, 4000)


def make_peer(
    limits: DhtLimits = OPEN, seed: int = 1, **kwargs: float | bool
) -> tuple[Peer, Clock, random.Random]:
    rng = random.Random(seed)
    me = stranger(rng)
    clock = Clock()
    table = RoutingTable(me.node_id, NOW, limits=limits, rng=random.Random(seed))
    store = RecordStore(clock, limits=limits)
    return Peer(me, table, store, NOW, limits=limits, **kwargs), clock, rng  # type: ignore[arg-type]


def record(user: Identity, seq: int = 1, expires: float = NOW + 86400) -> AddressRecord:
    return AddressRecord.create(user, bytes(32), [("mx.example", 25)], seq, int(expires))


def test_ping_answers_pong_and_meets_the_source() -> None:
    peer, _, rng = make_peer()
    source = stranger(rng)
    assert peer.handle(source, Ping(), NOW).reply == Pong()
    assert source.node_id in peer.table


def test_find_node_answers_the_closest_bounded_and_never_the_asker() -> None:
    peer, _, rng = make_peer()
    others = [stranger(rng) for _ in range(200)]
    for c in others:
        peer.table.offer(c, NOW)
    asker = others[0]
    target = asker.node_id
    reply = peer.handle(asker, FindNode(target), NOW).reply
    assert isinstance(reply, Nodes)
    assert len(reply.contacts) == MAX_REPLY_CONTACTS
    assert asker not in reply.contacts
    held = [c for c in peer.table.contacts() if c != asker]
    assert list(reply.contacts) == sorted(held, key=lambda c: distance(c.node_id, target))[:20]


def test_find_value_answers_value_and_contacts_or_an_empty_value() -> None:
    peer, _, rng = make_peer()
    for _ in range(30):
        peer.table.offer(stranger(rng), NOW)
    user = Identity(rng.randbytes(32))
    key, value = dht_key(user.verify_key), record(user).encode()
    asker = stranger(rng)
    empty = peer.handle(asker, FindValue(key), NOW).reply
    # FIND_VALUE is always answered by Value (the wire checks one reply kind per request)
    assert isinstance(empty, Value) and empty.value == b""
    assert len(empty.contacts) == MAX_REPLY_CONTACTS
    assert peer.handle(stranger(rng), Store(key, value), NOW).reply == Stored(True)
    held = peer.handle(asker, FindValue(key), NOW).reply
    assert isinstance(held, Value) and held.value == value
    assert len(held.contacts) == MAX_REPLY_CONTACTS  # a lookup can go on past this holder


def test_store_accepts_only_valid_newer_records_and_counts_them_per_origin() -> None:
    limits = DhtLimits(
        contacts_per_ip_bucket=10**6, contacts_per_ip=10**6, contacts_per_subnet_bucket=10**6,
        contacts_per_subnet=10**6, records_per_ip=3,
    )
    peer, _, rng = make_peer(limits)
    source = stranger(rng, "192.0.2.1")
    user, other = Identity(rng.randbytes(32)), Identity(rng.randbytes(32))
    key = dht_key(user.verify_key)
    newer, older = record(user, seq=5), record(user, seq=4)
    assert peer.handle(source, Store(key, newer.encode()), NOW).reply == Stored(True)
    assert peer.handle(source, Store(key, older.encode()), NOW).reply == Stored(False)
    assert peer.handle(source, Store(dht_key(other.verify_key), newer.encode()), NOW).reply == (
        Stored(False)  # someone else's record under another key
    )
    forged = bytearray(record(user, seq=9).encode())
    forged[-1] ^= 1
    assert peer.handle(source, Store(key, bytes(forged)), NOW).reply == Stored(False)
    assert peer.store.get(key) == newer.encode()
    for _ in range(4):  # one IP may hold records_per_ip records here
        u = Identity(rng.randbytes(32))
        peer.handle(source, Store(dht_key(u.verify_key), record(u).encode()), NOW)
    assert peer.store.held_from("192.0.2.1") == 3


def test_requests_and_stores_are_rate_limited_per_ip() -> None:
    limits = DhtLimits(
        contacts_per_ip_bucket=10**6, contacts_per_ip=10**6, contacts_per_subnet_bucket=10**6,
        contacts_per_subnet=10**6, requests_per_ip_second=1.0, requests_per_ip_burst=10,
    )
    peer, _, rng = make_peer(limits, stores_per_ip_second=1.0, stores_per_ip_burst=3)
    flood = stranger(rng, "198.51.100.9")
    answered = [peer.handle(flood, Ping(), NOW).reply for _ in range(50)]
    assert answered.count(Pong()) == 10 and answered.count(None) == 40
    assert peer.handle(stranger(rng, "198.51.100.10"), Ping(), NOW).reply == Pong()
    assert peer.handle(flood, Ping(), NOW + 1.0).reply == Pong()  # refilled over time
    storer = stranger(rng, "203.0.113.3")
    user = Identity(rng.randbytes(32))
    key, value = dht_key(user.verify_key), record(user).encode()
    stores = [peer.handle(storer, Store(key, value), NOW).reply for _ in range(6)]
    assert stores.count(Stored(True)) == 3 and stores.count(None) == 3


def test_request_buckets_can_be_left_to_the_wire() -> None:
    """Behind an RpcEngine (which charges the same per-source limits before the signature
    check) the Peer keeps no second table of buckets; STOREs are still limited here."""
    limits = DhtLimits(
        contacts_per_ip_bucket=10**6, contacts_per_ip=10**6, contacts_per_subnet_bucket=10**6,
        contacts_per_subnet=10**6, requests_per_ip_second=1.0, requests_per_ip_burst=10,
    )
    peer, _, rng = make_peer(
        limits, stores_per_ip_second=1.0, stores_per_ip_burst=3, limit_requests=False
    )
    flood = stranger(rng, "198.51.100.9")
    assert [peer.handle(flood, Ping(), NOW).reply for _ in range(50)] == [Pong()] * 50
    user = Identity(rng.randbytes(32))
    key, value = dht_key(user.verify_key), record(user).encode()
    stores = [peer.handle(flood, Store(key, value), NOW).reply for _ in range(6)]
    assert stores.count(Stored(True)) == 3 and stores.count(None) == 3


def test_a_full_bucket_asks_for_a_ping_of_its_head() -> None:
    peer, _, rng = make_peer()
    far: list[Contact] = []
    while len(far) < 22:
        c = stranger(rng)
        if peer.table.bucket_index(c.node_id) == 159:
            far.append(c)
    for c in far[:20]:
        assert peer.handle(c, Ping(), NOW).ping is None
    assert peer.handle(far[20], Ping(), NOW + 1).ping is None  # all spoke lately
    assert peer.handle(far[21], Ping(), NOW + GOOD_FOR).ping == far[0]


def test_records_are_handed_to_a_closer_newcomer_after_it_proves_its_address() -> None:
    peer, _, rng = make_peer()
    users = [Identity(rng.randbytes(32)) for _ in range(40)]
    for u in users:
        peer.store.offer(dht_key(u.verify_key), record(u).encode())
    newcomer = stranger(rng)
    peer.handle(newcomer, Ping(), NOW)  # alone in our table: it should hold everything
    assert peer.handover_due
    step = peer.handover_step(NOW)
    assert step.pings == [newcomer] and step.stores == []  # its address may be spoofed
    assert not peer.handover_due
    peer.handover_answered(newcomer.node_id, ok=True)
    sent: list[tuple[Contact, bytes, bytes]] = []
    now = NOW
    while True:
        step = peer.handover_step(now)
        sent += step.stores
        if step.delay is None:
            break
        now += step.delay
    assert {key for _, key, _ in sent} == {dht_key(u.verify_key) for u in users}
    assert all(c == newcomer and peer.store.get(k) == v for c, k, v in sent)
    assert peer.handover_pending() == 0


def test_hand_over_goes_only_where_we_are_the_closest_holder() -> None:
    peer, _, rng = make_peer()
    for _ in range(100):
        peer.table.offer(stranger(rng), NOW, verified=True)
    users = [Identity(rng.randbytes(32)) for _ in range(50)]
    newcomer = stranger(rng)
    for u in users:
        key = dht_key(u.verify_key)
        held = sorted(peer.table.contacts(), key=lambda c: distance(c.node_id, key))
        expected = distance(peer.me.node_id, key) < distance(held[0].node_id, key) and (
            distance(newcomer.node_id, key) < distance(held[19].node_id, key)
        )
        assert peer.should_hold(newcomer, key, NOW) == expected


def test_publisher_due_at_once_then_hourly_and_before_expiry() -> None:
    pub = Publisher()
    key = b"k" * 20
    pub.set(key, b"v1", NOW + 86400, NOW)
    assert pub.due(NOW) == [(key, b"v1")]
    assert pub.due(NOW) == []  # in flight
    assert pub.next_due() is None
    pub.published(key, b"v1", 20, NOW)
    assert pub.next_due() == NOW + REPUBLISH_INTERVAL
    pub.set(key, b"v1", NOW + 86400, NOW + 10)  # unchanged: not due again
    assert pub.due(NOW + 10) == []
    pub.set(key, b"v2", NOW + 86400, NOW + 20)  # changed endpoints: at once
    assert pub.due(NOW + 20) == [(key, b"v2")]
    pub.published(key, b"v1", 20, NOW + 21)  # a late report on the old value changes nothing
    assert pub.due(NOW + 22) == []
    pub.published(key, b"v2", 0, NOW + 30)  # reached nobody: retried soon
    assert pub.next_due() == NOW + 30 + RETRY_AFTER
    pub = Publisher()
    short = b"s" * 20
    pub.set(short, b"x", NOW + 1000, NOW)
    pub.due(NOW)
    pub.published(short, b"x", 5, NOW)
    assert pub.due(NOW + 1000 - EXPIRY_MARGIN) == [(short, b"x")]  # before it expires
    assert pub.due(NOW + 1000) == [] and short not in list(pub.keys())  # expired: dropped
