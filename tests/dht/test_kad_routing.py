"""The sans-IO routing table: decisions, caps, timeouts and anchors, with time passed in."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dht.kad.contact import Contact, distance
from dht.kad.routing import (
    GOOD_FOR,
    MAX_FAILURES,
    REFRESH_INTERVAL,
    RETRY_AFTER,
    Decision,
    Kind,
    RoutingTable,
)
from dht.limits import DEFAULT_LIMITS, DhtLimits

OPEN = DhtLimits(
    contacts_per_ip_bucket=10**6,
    contacts_per_ip=10**6,
    contacts_per_subnet_bucket=10**6,
    contacts_per_subnet=10**6,
)


def contact(rng: random.Random, host: str | None = None, port: int | None = None) -> Contact:
    host = host or f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return Contact(rng.randbytes(32), host, port or rng.randrange(1024, 65535))


def in_bucket(table: RoutingTable, rng: random.Random, index: int, n: int) -> list[Contact]:
    """``n`` contacts with distinct addresses whose ids fall in bucket ``index``."""
    found: list[Contact] = []
    while len(found) < n:
        c = contact(rng)
        if table.bucket_index(c.node_id) == index:
            found.append(c)
    return found


def table(limits: DhtLimits = OPEN, seed: int = 1) -> tuple[RoutingTable, random.Random]:
    rng = random.Random(seed)
    own = contact(rng)
    return RoutingTable(own.node_id, 0.0, limits=limits, rng=random.Random(seed)), rng


def test_self_is_refused_and_a_newcomer_added_then_refreshed() -> None:
    t, rng = table()
    me = Contact(rng.randbytes(32), "10.0.0.1", 1)
    t2 = RoutingTable(me.node_id, 0.0)
    assert t2.offer(me, 1.0).kind is Kind.REFUSED
    c = contact(rng)
    assert t.offer(c, 1.0).kind is Kind.ADDED
    assert t.offer(c, 2.0).kind is Kind.REFRESHED
    assert t.closest(c.node_id, 5, 2.0) == [c]
    assert len(t) == 1


def test_one_address_announcing_many_ids_gets_a_few_slots() -> None:
    """One socket is one contact; one IP at most contacts_per_ip (2 per bucket)."""
    t, rng = table(DEFAULT_LIMITS)
    same_socket = [Contact(rng.randbytes(32), "203.0.113.7", 4000) for _ in range(50)]
    kinds = [t.offer(c, 1.0).kind for c in same_socket]
    assert kinds.count(Kind.ADDED) == 1
    same_ip = [Contact(rng.randbytes(32), "203.0.113.8", 5000 + i) for i in range(1000)]
    for c in same_ip:
        t.offer(c, 1.0)
    held = [c for c in t.contacts() if c.host == "203.0.113.8"]
    assert len(held) == DEFAULT_LIMITS.contacts_per_ip
    per_bucket: dict[int, int] = {}
    for c in held:
        i = t.bucket_index(c.node_id)
        per_bucket[i] = per_bucket.get(i, 0) + 1
    assert max(per_bucket.values()) <= DEFAULT_LIMITS.contacts_per_ip_bucket
    # replacements count too: the whole table never holds more than the cap for this IP
    assert sum(1 for c in same_ip if c.node_id in t) == DEFAULT_LIMITS.contacts_per_ip


def test_one_subnet_is_capped_v4_and_v6() -> None:
    t, rng = table(DEFAULT_LIMITS)
    v4 = [Contact(rng.randbytes(32), f"198.51.100.{i}", 7000) for i in range(1, 250)]
    v6 = [Contact(rng.randbytes(32), f"2001:db8::{i:x}", 7000) for i in range(1, 250)]
    for c in v4 + v6:
        t.offer(c, 1.0)
    assert sum(1 for c in v4 if c.node_id in t) == DEFAULT_LIMITS.contacts_per_subnet
    assert sum(1 for c in v6 if c.node_id in t) == DEFAULT_LIMITS.contacts_per_subnet
    # another subnet is unaffected
    assert t.offer(Contact(rng.randbytes(32), "198.51.101.1", 7000), 1.0).kind is Kind.ADDED


def test_full_bucket_asks_to_ping_its_head_once_and_holds_the_newcomer() -> None:
    t, rng = table()
    first, *others = in_bucket(t, rng, 159, 23)
    assert t.offer(first, 0.0).kind is Kind.ADDED
    for c in others[:19]:
        assert t.offer(c, 1.0).kind is Kind.ADDED
    newcomer, second, third = others[19:]
    late = 1.0 + GOOD_FOR  # the bucket has been quiet long enough to be worth a proof
    decision = t.offer(newcomer, late + 1.0)
    assert decision.kind is Kind.FULL and decision.ping == first
    assert t.offer(second, late + 1.5).kind is Kind.FULL
    assert t.offer(second, late + 1.5).ping is None
    assert newcomer not in t.closest(newcomer.node_id, 40, late + 2.0)
    # the head answers: it stays (now the most recently seen), the newcomer keeps waiting
    t.answered(first.node_id, late + 2.0)
    assert first in t.closest(first.node_id, 1, late + 2.0)
    decision = t.offer(third, late + 3.0)
    assert decision.kind is Kind.FULL and decision.ping == others[0]  # the new head
    # that head times out: evicted at once for the freshest waiting replacement
    assert t.failed(others[0].node_id, late + 4.0)
    assert others[0].node_id not in t
    assert third in t.contacts()


def test_a_full_bucket_heard_from_lately_costs_a_newcomer_no_ping() -> None:
    """Every newcomer to a full bucket used to cost a ping of its head; when the head's answer
    moved it to the tail, the next newcomer pinged the next head, so a node's requests turned
    into pings at the rate strangers came. A bucket whose quietest contact spoke within
    GOOD_FOR (BEP 5's 15 minutes) needs no proof; the newcomer waits as a replacement."""
    t, rng = table()
    members, newcomers = in_bucket(t, rng, 159, 20), in_bucket(t, rng, 159, 6)
    for c in members:
        assert t.offer(c, 0.0).kind is Kind.ADDED
    for k, c in enumerate(newcomers[:5]):
        decision = t.offer(c, 1.0 + k)
        assert decision == Decision(Kind.FULL)
    t.offer(members[0], GOOD_FOR + 0.5)  # it spoke again: the quietest is now members[1]
    assert t.offer(newcomers[5], GOOD_FOR + 1.0).ping == members[1]


def test_a_timed_out_contact_is_not_live_and_hearsay_does_not_revive_it() -> None:
    t, rng = table()
    a, b = contact(rng), contact(rng)
    t.offer(a, 0.0, verified=True)
    t.offer(b, 0.0, verified=True)
    assert not t.failed(a.node_id, 1.0)  # no replacement waiting: kept, marked
    assert t.is_failed(a.node_id) and not t.is_live(a.node_id)
    assert a not in t.closest(a.node_id, 20, 1.0)
    # it (or someone naming it) speaks of it: refreshed, and only a ping may revive it
    assert t.offer(a, 2.0) == Decision(Kind.REFRESHED, ping=a)
    assert t.offer(a, 2.5).ping is None  # one ping at a time
    assert a not in t.closest(a.node_id, 20, 2.0)
    assert a not in t.export()
    t.answered(a.node_id, 3.0)  # its own answer does
    assert t.closest(a.node_id, 1, 3.0) == [a]


def test_timed_out_contacts_are_retried_once_due() -> None:
    t, rng = table()
    a, b = contact(rng), contact(rng)
    t.offer(a, 0.0, anchor=True)
    t.offer(b, 0.0)
    t.failed(a.node_id, 10.0)
    t.failed(b.node_id, 10.0)
    assert t.due_pings(10.0 + RETRY_AFTER - 1) == []
    assert set(t.due_pings(10.0 + RETRY_AFTER)) == {a, b}
    assert t.due_pings(10.0 + RETRY_AFTER + 1) == []  # being pinged
    t.answered(b.node_id, 80.0)
    t.failed(a.node_id, 80.0)
    assert t.due_pings(80.0 + RETRY_AFTER) == [a]


def test_evicted_after_max_failures() -> None:
    t, rng = table()
    a = contact(rng)
    t.offer(a, 0.0)
    for i in range(MAX_FAILURES - 1):
        assert not t.failed(a.node_id, float(i))
    assert t.failed(a.node_id, 10.0)
    assert a.node_id not in t and len(t) == 0


def test_a_dead_contact_makes_room_in_a_full_bucket_without_a_ping() -> None:
    t, rng = table()
    members = in_bucket(t, rng, 159, 21)
    for c in members[:20]:
        t.offer(c, 0.0)
    t.failed(members[5].node_id, 1.0)
    assert t.offer(members[20], 2.0).kind is Kind.ADDED
    assert members[5].node_id not in t


def test_anchors_are_exempt_from_caps_never_evicted_and_listed_first() -> None:
    t, rng = table(DEFAULT_LIMITS)
    crowd = [Contact(rng.randbytes(32), "192.0.2.9", 9000 + i) for i in range(20)]
    for c in crowd:
        t.offer(c, 0.0, verified=True)
    friends = [Contact(rng.randbytes(32), "192.0.2.9", 8000 + i) for i in range(3)]
    for f in friends:
        assert t.offer(f, 0.0, anchor=True).kind is Kind.ADDED
    for _ in range(10):
        assert not t.failed(friends[0].node_id, 1.0)
    assert friends[0].node_id in t and t.is_anchor(friends[0].node_id)
    assert t.export()[:3] == friends
    seeds = t.seeds(rng.randbytes(20), 5, 1.0)
    assert seeds[:2] == friends[1:] and friends[0] not in seeds  # live anchors first
    assert friends[0] in t.seeds(rng.randbytes(20), 40, 1.0)[-1:]  # the last resort
    t.answered(friends[0].node_id, 2.0)
    assert t.seeds(rng.randbytes(20), 5, 2.0)[:3] == friends
    # a bucket contact offered as an anchor moves to the anchors
    assert t.offer(crowd[0], 3.0, anchor=True).kind is Kind.ADDED
    assert t.is_anchor(crowd[0].node_id)


def test_one_id_per_address_and_moves_only_when_answered_from_there() -> None:
    t, rng = table()
    a = Contact(rng.randbytes(32), "10.1.1.1", 1000)
    t.offer(a, 0.0)
    squatter = Contact(rng.randbytes(32), "10.1.1.1", 1000)
    assert t.offer(squatter, 1.0).kind is Kind.REFUSED
    # the squatter answered from that address and ``a`` never did: the address is its
    assert t.offer(squatter, 1.0, verified=True).kind is Kind.ADDED
    assert a.node_id not in t
    moved = Contact(squatter.key, "10.1.1.2", 1000)
    assert t.offer(moved, 2.0).kind is Kind.REFUSED
    assert t.offer(moved, 2.0, verified=True).kind is Kind.REFRESHED
    assert t.contact(squatter.node_id) == moved
    # a verified live holder keeps its address against a later claimant
    assert t.offer(Contact(rng.randbytes(32), "10.1.1.2", 1000), 3.0, verified=True).kind is (
        Kind.REFUSED
    )


def test_export_saves_only_answered_contacts() -> None:
    t, rng = table()
    heard, answered = contact(rng), contact(rng)
    t.offer(heard, 0.0)
    t.offer(answered, 0.0, verified=True)
    assert t.export() == [answered]


def test_buckets_to_refresh_names_ids_in_idle_buckets_from_the_nearest_non_empty_out() -> None:
    t, rng = table()
    assert t.buckets_to_refresh(REFRESH_INTERVAL) == []  # nobody to ask
    anchor = contact(rng)
    t.offer(anchor, 0.0, anchor=True)
    assert t.buckets_to_refresh(1.0) == [t.own_id]  # only an anchor: join (again) through it
    t.unanchor(anchor.node_id)
    for c in in_bucket(t, rng, 155, 2):
        t.offer(c, 0.0)
    assert t.buckets_to_refresh(REFRESH_INTERVAL - 1) == [t.own_id]
    targets = t.buckets_to_refresh(REFRESH_INTERVAL)
    assert targets[0] == t.own_id  # fewer than k live contacts: look ourselves up again
    assert [t.bucket_index(x) for x in targets[1:]] == [155, 156, 157, 158, 159]
    t.closest(targets[1], 20, REFRESH_INTERVAL)  # a lookup through bucket 155
    assert len(t.buckets_to_refresh(REFRESH_INTERVAL + 1)) == 1 + 4
    assert len(t.buckets_to_refresh(REFRESH_INTERVAL + 1, joining=True)) == 5
    for c in in_bucket(t, rng, 159, 20):
        t.offer(c, REFRESH_INTERVAL + 1)
    assert t.own_id not in t.buckets_to_refresh(REFRESH_INTERVAL + 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 300), st.integers(1, 40), st.booleans())
def test_closest_is_exact(seed: int, n: int, count: int, own_id: bool) -> None:
    t, rng = table(seed=seed)
    for i in range(n):
        t.offer(contact(rng), 0.0, anchor=i % 50 == 0)
    target = t.own_id if own_id else rng.randbytes(20)
    live = t.contacts()
    expected = sorted(live, key=lambda c: distance(c.node_id, target))[:count]
    assert t.closest(target, count, 0.0) == expected
    assert len(t) <= n


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 400), st.integers(1, 45), st.integers(0, 16))
def test_closest_is_exact_for_targets_in_any_bucket_with_dead_contacts(
    seed: int, n: int, count: int, depth: int
) -> None:
    """closest() reads only the buckets it needs, in distance order: whatever bucket the
    target falls in (its distance to our id has top bit ``159 - depth``: the buckets random
    contacts fill lie on both sides of it) and which contacts timed out, it returns exactly
    what a full sort of the live contacts does."""
    bit = 159 - depth
    t, rng = table(seed=seed)
    offered = [contact(rng) for _ in range(n)]
    for i, c in enumerate(offered):
        t.offer(c, 0.0, anchor=i % 60 == 0)
    for c in rng.sample(offered, n // 3):
        t.answered(c.node_id, 0.5)
    for c in rng.sample(offered, n // 5):
        t.failed(c.node_id, 1.0)
    assert t.answered_count() == sum(1 for c in t.export() if t.is_live(c.node_id))
    mask = (1 << bit) | rng.getrandbits(bit)
    target = (int.from_bytes(t.own_id, "big") ^ mask).to_bytes(20, "big")
    live = [c for c in t.contacts() if t.is_live(c.node_id)]
    expected = sorted(live, key=lambda c: distance(c.node_id, target))[:count]
    assert t.closest(target, count, 2.0) == expected
