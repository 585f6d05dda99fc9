"""The lookup state machine over a static in-memory network, and its asyncio driver."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter
from collections.abc import Callable

import pytest

from dht.kad.contact import Contact, distance, node_id_for
from dht.kad.lookup import (
    ALPHA,
    FRESH,
    FRESH_SAMPLES,
    PATHS,
    PER_IP,
    PER_SUBNET,
    SLOW_FACTOR,
    SLOW_MIN,
    START,
    Lookup,
    LookupResult,
    RttEstimate,
    run_lookup,
)
from dht.kad.messages import (
    MAX_REPLY_CONTACTS,
    FindNode,
    FindValue,
    Nodes,
    Pong,
    Reply,
    Request,
    Value,
)

Behaviour = Callable[[Contact, Request], Reply | None]


def make_network(n: int, seed: int) -> tuple[list[Contact], dict[bytes, list[Contact]]]:
    """``n`` contacts, each knowing its 20 nearest and 20 random others (a sparse view)."""
    rng = random.Random(seed)
    # each its own /24: the lookup caps candidates per IP and per subnet
    nodes = [Contact(rng.randbytes(32), f"10.{i // 250}.{i % 250}.1", 4000) for i in range(n)]
    views = {}
    for c in nodes:
        near = sorted(nodes, key=lambda o: distance(o.node_id, c.node_id))[1:21]
        views[c.node_id] = near + rng.sample(nodes, 20)
    return nodes, views


def honest(views: dict[bytes, list[Contact]], values: dict[bytes, bytes]) -> Behaviour:
    def answer(contact: Contact, request: Request) -> Reply | None:
        assert isinstance(request, FindNode | FindValue)
        target = request.target if isinstance(request, FindNode) else request.key
        view = sorted(views[contact.node_id], key=lambda o: distance(o.node_id, target))
        closest = tuple(view[:MAX_REPLY_CONTACTS])
        if isinstance(request, FindValue):
            return Value(values.get(contact.node_id, b""), closest)  # empty: no record
        return Nodes(closest)

    return answer


def drive(
    lookup: Lookup[int], behaviour: Behaviour, asked: Counter[bytes] | None = None
) -> LookupResult[int]:
    """Answer requests first in, first out (a network with equal latency)."""
    queue = list(lookup.start())
    while queue:
        contact = queue.pop(0)
        if asked is not None:
            asked[contact.node_id] += 1
        queue += lookup.on_reply(contact, behaviour(contact, lookup.request))
    assert lookup.done
    return lookup.result()


def accept_seq(value: bytes) -> tuple[int, int] | None:
    """Test values: b"ok:<seq>" is valid, anything else forged."""
    if not value.startswith(b"ok:"):
        return None
    return int(value[3:]), int(value[3:])


def true_closest(nodes: list[Contact], target: bytes, k: int = 20) -> list[Contact]:
    return sorted(nodes, key=lambda c: distance(c.node_id, target))[:k]


def test_find_node_returns_the_true_k_closest_and_asks_each_peer_once() -> None:
    nodes, views = make_network(300, 1)
    rng = random.Random(2)
    for _ in range(20):
        me = rng.choice(nodes)
        target = rng.randbytes(20)
        asked: Counter[bytes] = Counter()
        lookup: Lookup[int] = Lookup(me.node_id, target, views[me.node_id][:20])
        result = drive(lookup, honest(views, {}), asked)
        others = [c for c in nodes if c != me]
        assert list(result.closest) == true_closest(others, target)
        assert set(asked.values()) == {1}  # paths are disjoint: nobody asked twice
        assert me.node_id not in asked
        assert result.queries == sum(asked.values())
        assert result.hops >= 1 and result.failed == () and result.found is None


def test_find_value_goes_past_the_first_value_and_believes_the_highest_valid_seq() -> None:
    nodes, views = make_network(300, 3)
    rng = random.Random(4)
    target = rng.randbytes(20)
    close = true_closest(nodes, target)
    values = {c.node_id: b"ok:1" for c in close[:15]}
    values[close[19].node_id] = b"ok:7"  # the newest copy sits at the edge of the k closest
    values[close[0].node_id] = b"forged:99"  # the closest node lies
    far = [c for c in nodes if c not in close]
    values[far[0].node_id] = b"ok:1"  # a far stale copy, found on the way
    me = far[-1]
    lookup = Lookup(me.node_id, target, views[me.node_id][:20], accept=accept_seq)
    result = drive(lookup, honest(views, values))
    assert result.found is not None and result.found.seq == 7 and result.found.value == b"ok:7"
    assert [c.node_id for c in result.found.holders] == [close[19].node_id]
    assert [c.node_id for c in result.liars] == [close[0].node_id]
    assert set(result.repair) == set(result.closest) - {close[19]}
    assert close[0] in result.repair  # the liar holds no valid copy: repair it too


def test_dead_peers_are_reported_and_do_not_end_the_lookup() -> None:
    nodes, views = make_network(300, 5)
    rng = random.Random(6)
    dead = set(c.node_id for c in rng.sample(nodes, 90))
    alive = [c for c in nodes if c.node_id not in dead]
    base = honest(views, {})

    def behaviour(contact: Contact, request: Request) -> Reply | None:
        return None if contact.node_id in dead else base(contact, request)

    for _ in range(10):
        me = rng.choice(alive)
        target = rng.randbytes(20)
        result = drive(Lookup(me.node_id, target, views[me.node_id][:20]), behaviour)
        assert result.failed and all(c.node_id in dead for c in result.failed)
        assert all(c.node_id not in dead for c in result.closest)
        # the live nodes closest to the target are found despite the dead around them
        assert true_closest([c for c in alive if c != me], target, 10) == list(result.closest[:10])


def test_avoided_ids_are_not_asked_and_wrong_replies_count_as_lies() -> None:
    nodes, views = make_network(100, 7)
    me, target = nodes[0], nodes[50].node_id
    seeds = views[me.node_id][:20]
    avoided = {c.node_id for c in true_closest(nodes, target, 8)} - {c.node_id for c in seeds}
    base = honest(views, {})
    pongers = {c.node_id for c in views[me.node_id][5:8]}
    asked: Counter[bytes] = Counter()

    def behaviour(contact: Contact, request: Request) -> Reply | None:
        return Pong() if contact.node_id in pongers else base(contact, request)

    lookup: Lookup[int] = Lookup(me.node_id, target, seeds, avoid=avoided.__contains__)
    result = drive(lookup, behaviour, asked)
    assert avoided and not avoided & set(asked)
    assert {c.node_id for c in result.liars} == pongers & set(asked)
    assert not pongers & {c.node_id for c in result.closest}


def test_work_is_bounded_whatever_the_answers_say() -> None:
    """A peer that answers every request with fresh invented contacts cannot make a lookup
    run on: at most MAX_REPLY_CONTACTS per answer are read and max_queries sent."""
    rng = random.Random(8)
    invented = 0

    def endless(contact: Contact, request: Request) -> Reply | None:
        nonlocal invented
        invented += 50
        return Nodes(tuple(Contact(rng.randbytes(32), host(), 1 + i) for i in range(50)))

    def host() -> str:  # a fresh address each (one address is capped sooner: see below)
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.1"

    seeds = [Contact(rng.randbytes(32), "10.0.0.1", 1000 + i) for i in range(5)]
    lookup: Lookup[int] = Lookup(b"\0" * 20, rng.randbytes(20), seeds, max_queries=60)
    result = drive(lookup, endless)
    assert result.queries == 60
    assert len(result.closest) == 20


def test_replies_for_requests_never_sent_are_ignored() -> None:
    rng = random.Random(9)
    seeds = [Contact(rng.randbytes(32), "10.0.0.1", 1000 + i) for i in range(3)]
    lookup: Lookup[int] = Lookup(b"\0" * 20, rng.randbytes(20), seeds)
    sent = lookup.start()
    stranger = Contact(rng.randbytes(32), "10.0.0.2", 1)
    assert lookup.on_reply(stranger, Nodes(())) == []
    lookup.on_reply(sent[0], Nodes(()))
    assert lookup.on_reply(sent[0], Nodes(())) == []  # a duplicate answer
    assert lookup.result().closest == (sent[0],)


async def test_driver_does_not_wait_for_a_dead_peer_before_asking_others() -> None:
    """One dead seed holds one slot until its timeout; every other peer is asked meanwhile.
    It is the node closest to the target (so its answer could matter: a dead peer farther than
    the k closest that answered is not waited for, see below)."""
    nodes, views = make_network(200, 10)
    me = nodes[0]
    target = nodes[100].node_id
    dead = true_closest(nodes[1:], target, 1)[0]
    seeds = [dead, *[c for c in views[me.node_id] if c != dead][:19]]
    base = honest(views, {})
    release = asyncio.Event()
    asked_before_timeout: list[int] = []
    asked = 0
    asked_dead: list[Contact] = []

    async def query(contact: Contact, request: Request) -> Reply | None:
        nonlocal asked
        asked += 1
        if contact == dead:
            asked_dead.append(contact)
            await release.wait()  # the wire layer's timeout, fired by the test
            asked_before_timeout.append(asked)
            requested_before_timeout.append(lookup.requested)
            return None
        await asyncio.sleep(0)
        return base(contact, request)

    class Recording(Lookup[int]):
        """Counts the requests the lookup asked the driver to send."""

        requested = 0

        def start(self) -> list[Contact]:
            return self._count(super().start())

        def on_reply(self, contact: Contact, reply: Reply | None) -> list[Contact]:
            return self._count(super().on_reply(contact, reply))

        def _count(self, sends: list[Contact]) -> list[Contact]:
            self.requested += len(sends)
            return sends

    requested_before_timeout: list[int] = []
    lookup = Recording(me.node_id, target, seeds)

    async def time_out_when_alone() -> None:
        # the wire layer's timeout fires once the dead peer's request is the only one left
        while not (asked_dead and lookup.in_flight == 1):
            await asyncio.sleep(0)
        release.set()

    timer = asyncio.create_task(time_out_when_alone())
    result = await asyncio.wait_for(run_lookup(lookup, query), 10)
    await timer
    assert result.failed == (dead,)
    # everything the lookup asked for before the timeout had gone out (the dead peer was the
    # closest, so its failure may release more: its path asks on)
    assert asked_before_timeout == requested_before_timeout
    assert asked_before_timeout[0] <= result.queries == lookup.requested
    assert list(result.closest) == true_closest([c for c in nodes if c not in (me, dead)], target)


def test_a_slow_peer_frees_its_slot_and_is_not_waited_for_once_k_answered() -> None:
    nodes, views = make_network(300, 11)
    me, target = nodes[0], nodes[200].node_id
    base = honest(views, {})
    lookup: Lookup[int] = Lookup(me.node_id, target, views[me.node_id][:20])
    first = lookup.start()
    silent, queue = first[0], first[1:]
    replacement = lookup.on_slow(silent)
    assert len(replacement) == 1 and replacement[0] not in first  # the slot moved on
    assert lookup.on_slow(silent) == []  # once
    queue += replacement
    while queue:
        contact = queue.pop(0)
        queue += lookup.on_reply(contact, base(contact, lookup.request))
    assert lookup.done  # k answered: the silent peer is not waited for
    result = lookup.result()
    assert silent not in result.closest and len(result.closest) == 20
    assert lookup.on_reply(silent, Nodes(())) == []  # too late: ignored
    assert lookup.result().closest == result.closest


def test_a_slow_peer_is_waited_for_while_fewer_than_alpha_answered() -> None:
    rng = random.Random(12)
    seeds = [Contact(rng.randbytes(32), "10.0.0.1", 1000 + i) for i in range(3)]
    lookup: Lookup[int] = Lookup(b"\0" * 20, rng.randbytes(20), seeds, paths=1)
    first = lookup.start()
    assert lookup.on_slow(first[0]) == []  # nobody else to ask
    lookup.on_reply(first[1], Nodes(()))
    lookup.on_reply(first[2], Nodes(()))
    assert not lookup.done  # only 2 answered: the slow one may still
    lookup.on_reply(first[0], Nodes(()))
    assert lookup.done and len(lookup.result().closest) == 3


async def test_driver_with_slow_after_ends_without_waiting_for_the_dead() -> None:
    """A dead peer whose query never returns: the driver frees its slot after slow_after,
    ends once k answered, and cancels the dead peer's request."""
    nodes, views = make_network(200, 13)
    me = nodes[0]
    seeds = views[me.node_id][:20]
    target = nodes[150].node_id
    dead = set(sorted(nodes, key=lambda c: distance(c.node_id, target))[:3])
    base = honest(views, {})
    cancelled: list[Contact] = []

    async def query(contact: Contact, request: Request) -> Reply | None:
        if contact in dead:
            try:
                await asyncio.Event().wait()  # no answer and no timeout, ever
            except asyncio.CancelledError:
                cancelled.append(contact)
                raise
        await asyncio.sleep(0)
        return base(contact, request)

    lookup: Lookup[int] = Lookup(me.node_id, target, seeds)
    result = await asyncio.wait_for(run_lookup(lookup, query, slow_after=0.01), 10)
    await asyncio.sleep(0)
    assert len(result.closest) == 20 and not dead & set(result.closest)
    assert set(cancelled) == dead & set(cancelled) and cancelled
    alive = [c for c in nodes if c not in dead and c != me]
    assert list(result.closest) == true_closest(alive, target)


def drive_with_silent(
    lookup: Lookup[int], behaviour: Behaviour, silent: set[bytes], asked: Counter[bytes]
) -> LookupResult[int]:
    """Like :func:`drive`, but peers in ``silent`` never answer: their slot is released by
    ``on_slow`` (what ``slow_after`` does) and their timeout never comes."""
    queue = list(lookup.start())
    while queue:
        contact = queue.pop(0)
        asked[contact.node_id] += 1
        if contact.node_id in silent:
            queue += lookup.on_slow(contact)
        else:
            queue += lookup.on_reply(contact, behaviour(contact, lookup.request))
    assert lookup.done  # no silent peer's answer or timeout was needed to end
    return lookup.result()


def test_under_churn_a_lookup_ends_without_any_dead_peers_timeout() -> None:
    """30 % of the peers near every key are dead: every answer names them, fewer than k of
    the peers near the key are alive, yet the lookup ends once the live ones answered; the
    dead are never waited for (their requests stay unanswered) and the record is found."""
    nodes, views = make_network(300, 21)
    rng = random.Random(22)
    for _ in range(10):
        target = rng.randbytes(20)
        close = true_closest(nodes, target, 30)
        dead = {c.node_id for c in rng.sample(close, 12)}  # 12 of the 30 closest
        alive = [c for c in nodes if c.node_id not in dead]
        me = rng.choice([c for c in alive if c not in close])
        values = {c.node_id: b"ok:3" for c in close[:20] if c.node_id not in dead}
        asked: Counter[bytes] = Counter()
        lookup = Lookup(me.node_id, target, views[me.node_id][:20], accept=accept_seq)
        result = drive_with_silent(lookup, honest(views, values), dead, asked)
        assert dead & set(asked)  # dead peers were asked (and cost a slot each)
        assert result.found is not None and result.found.seq == 3
        assert not dead & {c.node_id for c in result.closest}
        assert max(asked.values()) == 1


def test_dead_peers_farther_than_the_k_closest_are_not_waited_for() -> None:
    """Dead peers outside the neighbourhood of the key never answer. One is declared slow
    (``on_slow``) only when nothing else is left to do; the lookup ends with the others still
    in flight, since the paths heard from their closest and what a farther peer could say no
    longer changes the result. Before, each of them held the lookup for ``slow_after``."""
    nodes, views = make_network(300, 31)
    rng = random.Random(32)
    unwaited = 0
    held: list[Contact]
    for accept in (None, accept_seq):
        for _ in range(10):
            target = rng.randbytes(20)
            close = true_closest(nodes, target, 100)
            far = [c for c in nodes if c not in close]
            dead = {c.node_id for c in rng.sample(far, 60)}
            me = rng.choice([c for c in far if c.node_id not in dead])
            base = honest(views, {c.node_id: b"ok:5" for c in close[:20]})
            lookup = Lookup(me.node_id, target, views[me.node_id][:20], accept=accept)
            queue, held = lookup.start(), []  # held: asked, silent, not yet slow
            while queue or (held and not lookup.done):
                if not queue:  # only silent peers left: the oldest is declared slow
                    queue += lookup.on_slow(held.pop(0))
                    continue
                contact = queue.pop(0)
                if contact.node_id in dead:
                    held.append(contact)  # never answers while the lookup runs
                else:
                    queue += lookup.on_reply(contact, base(contact, lookup.request))
            assert lookup.done
            unwaited += lookup.in_flight  # ended with these unanswered, not even slow
            result = lookup.result()
            alive = [c for c in nodes if c != me and c.node_id not in dead]
            if accept is None:
                assert list(result.closest) == true_closest(alive, target)
            else:
                assert result.found is not None and result.found.seq == 5
                assert set(result.closest) <= set(alive)
    assert unwaited > 0


def test_a_value_lookup_ends_once_its_paths_closest_answered_a_node_lookup_waits() -> None:
    """The node closest to the key is silent (neither answer nor slow signal yet). FIND_VALUE
    ends without it once each path heard from its beam closest (the record is read from
    them); FIND_NODE, whose k closest decide where records are stored, waits for it (until
    ``slow_after`` frees its slot)."""
    nodes, views = make_network(300, 35)
    rng = random.Random(36)
    for _ in range(5):
        target = rng.randbytes(20)
        close = true_closest(nodes, target)
        silent = close[0]
        me = rng.choice([c for c in nodes if c not in close])
        base = honest(views, {c.node_id: b"ok:9" for c in close})
        seeds = [silent, *[c for c in views[me.node_id] if c != silent][:19]]
        for accept in (accept_seq, None):
            lookup = Lookup(me.node_id, target, seeds, accept=accept)
            queue = lookup.start()
            assert silent in queue
            queue.remove(silent)
            while queue:
                contact = queue.pop(0)
                queue += lookup.on_reply(contact, base(contact, lookup.request))
            if accept is None:
                assert not lookup.done  # its answer could change the k closest
                queue = lookup.on_slow(silent)
                while queue:
                    contact = queue.pop(0)
                    queue += lookup.on_reply(contact, base(contact, lookup.request))
                assert lookup.done
            else:
                assert lookup.done and lookup.in_flight == 1
                found = lookup.result().found
                assert found is not None and found.seq == 9


def rounds_under_churn(lookup: Lookup[int], behaviour: Behaviour, dead: set[bytes]) -> int:
    """Drive in rounds: every request sent in a round is settled by its end, the live by their
    answers and the dead by ``on_slow`` (their ``slow_after`` passed). Rounds until done: how
    many ``slow_after`` waits the lookup would take in a row."""
    batch, rounds = lookup.start(), 0
    while batch and not lookup.done:
        rounds += 1
        sends: list[Contact] = []
        for contact in batch:
            if contact.node_id in dead:
                sends += lookup.on_slow(contact)
            else:
                sends += lookup.on_reply(contact, behaviour(contact, lookup.request))
        batch = sends
    assert lookup.done
    return rounds


def test_paths_ask_more_at_once_when_peers_do_not_answer() -> None:
    """With 30 % of the nodes dead, a path counts on only the share of its requests in flight
    that this lookup saw answered, so it asks more of the close peers at once: fewer rounds
    (each round under churn ends with a dead peer's ``slow_after``) than a path that counts on
    every request in flight, and the record is still found."""

    class Trusting(Lookup[int]):
        def _alive(self) -> float:
            return 1.0  # the rule before: every request in flight will answer

    nodes, views = make_network(400, 33)
    rng = random.Random(34)
    dead = {c.node_id for c in rng.sample(nodes, 120)}
    alive = [c for c in nodes if c.node_id not in dead]
    hedged = trusting = 0
    for _ in range(20):
        target = rng.randbytes(20)
        values = {c.node_id: b"ok:7" for c in true_closest(alive, target)}
        base = honest(views, values)
        me = rng.choice(alive)
        seeds = views[me.node_id][:20]
        lookup = Lookup(me.node_id, target, seeds, accept=accept_seq)
        hedged += rounds_under_churn(lookup, base, dead)
        found = lookup.result().found
        assert found is not None and found.seq == 7
        trusting += rounds_under_churn(
            Trusting(me.node_id, target, seeds, accept=accept_seq), base, dead
        )
        # nothing dead, nothing hedged: as many requests as the rule before
        plain, old = (
            cls(me.node_id, target, seeds, accept=accept_seq) for cls in (Lookup, Trusting)
        )
        assert drive(plain, base).queries == drive(old, base).queries
    assert hedged < trusting


def test_a_value_lookup_asks_each_path_for_its_share_of_k() -> None:
    """FIND_VALUE over 3 disjoint paths, each stopping once its share of k (7) answered, asks
    fewer peers than paths that each hear from k, and still finds the record where its
    replicas are (the k closest)."""
    nodes, views = make_network(1000, 23)
    rng = random.Random(24)
    for _ in range(10):
        target = rng.randbytes(20)
        values = {c.node_id: b"ok:1" for c in true_closest(nodes, target)}
        me = rng.choice(nodes)
        value: Lookup[int] = Lookup(me.node_id, target, views[me.node_id][:20], accept=accept_seq)
        found = drive(value, honest(views, values))
        assert found.found is not None and found.found.seq == 1
        whole: Lookup[int] = Lookup(
            me.node_id, target, views[me.node_id][:20], accept=accept_seq, beam=20, quorum=20
        )  # each path hears from k peers (S/Kademlia's d x k)
        assert found.queries < 0.8 * drive(whole, honest(views, values)).queries


def sybils_near(target: bytes, hosts: Callable[[int], str], count: int) -> list[Contact]:
    """``count`` contacts whose ids are the closest to ``target`` among 20,000 fresh keys
    (an attacker grinding keys), at ``hosts(i)``."""
    rng = random.Random(target)
    keys = [rng.randbytes(32) for _ in range(20_000)]
    near = heapq.nsmallest(count, keys, key=lambda k: distance(node_id_for(k), target))
    return [Contact(k, hosts(i), 30000 + i) for i, k in enumerate(near)]


def eclipse_case(hosts: Callable[[int], str]) -> tuple[Counter[bytes], set[bytes], int]:
    """Every honest answer names 10 sybils ground near the key (half its contacts); sybils
    never answer (fresh keys the attacker's socket cannot sign for). How many sybils one
    lookup asked, and whether it still found the record."""
    nodes, views = make_network(300, 25)
    target = random.Random(26).randbytes(20)
    sybils = sybils_near(target, hosts, 40)
    base = honest(views, {c.node_id: b"ok:2" for c in true_closest(nodes, target)})

    def poisoned(contact: Contact, request: Request) -> Reply | None:
        reply = base(contact, request)
        assert isinstance(reply, Value)
        named = tuple(random.Random(contact.node_id).sample(sybils, 10))
        return Value(reply.value, named + reply.contacts[:10])

    asked: Counter[bytes] = Counter()
    lookup = Lookup(nodes[0].node_id, target, views[nodes[0].node_id][:20], accept=accept_seq)
    ids = {c.node_id for c in sybils}
    result = drive_with_silent(lookup, poisoned, ids, asked)
    assert result.found is not None and result.found.seq == 2
    return asked, ids, result.queries


def test_one_address_naming_many_ids_gets_per_ip_slots_in_a_lookup() -> None:
    asked, sybils, _ = eclipse_case(lambda i: "203.0.113.66")
    assert 0 < len(sybils & set(asked)) <= PER_IP  # over all three paths


def test_one_subnet_naming_many_ids_gets_per_subnet_slots_in_a_lookup() -> None:
    asked, sybils, _ = eclipse_case(lambda i: f"203.0.113.{1 + i}")
    assert 0 < len(sybils & set(asked)) <= PER_SUBNET
    ipv6, sybils6, _ = eclipse_case(lambda i: f"2001:db8:1:2::{1 + i:x}")
    assert 0 < len(sybils6 & set(ipv6)) <= PER_SUBNET  # one /64


def test_find_value_takes_value_replies_only_and_an_empty_value_is_no_record() -> None:
    rng = random.Random(27)
    seeds = [Contact(rng.randbytes(32), f"10.0.{i}.1", 1000) for i in range(3)]
    lookup: Lookup[int] = Lookup(b"\0" * 20, rng.randbytes(20), seeds, accept=accept_seq)
    first = lookup.start()
    lookup.on_reply(first[0], Value(b"", ()))  # no record: an answer, not a lie
    lookup.on_reply(first[1], Nodes(()))  # FIND_VALUE is answered by Value on the wire
    lookup.on_reply(first[2], Value(b"ok:4", ()))
    result = lookup.result()
    assert [c.node_id for c in result.liars] == [first[1].node_id]
    assert {c.node_id for c in result.closest} == {first[0].node_id, first[2].node_id}
    assert result.found is not None and result.found.seq == 4


def test_slow_after_follows_the_latest_round_trips() -> None:
    rtt = RttEstimate(ceiling=1.25)
    assert rtt.slow_after(0.0) == 1.25  # nothing measured yet: the ceiling
    for _ in range(16):
        rtt.add(0.9, 0.0)  # a busy moment (a join storm)
    assert rtt.slow_after(0.0) == 1.25  # never above the ceiling
    for i in range(16):
        rtt.add(0.002 if i % 5 else 0.03, 0.0)  # now: 80 % answer in 2 ms, 20 % in 30 ms
    assert rtt.slow_after(0.0) == pytest.approx(SLOW_FACTOR * 0.03)  # x p90 of the latest only
    for _ in range(16):
        rtt.add(0.001, 0.0)
    assert rtt.slow_after(0.0) == SLOW_MIN  # never below: a busy peer is not a dead one


def test_slow_after_goes_by_the_fresh_round_trips_once_there_are_a_few() -> None:
    """The window still holds a join storm's round trips from minutes ago: a few answers of
    the lookup running now decide, not the old p90 (which would make a dead peer cost the
    ceiling until the lookup's own answers filled the window)."""
    rtt = RttEstimate(ceiling=1.25)
    for _ in range(16):
        rtt.add(0.9, 0.0)
    now = 300.0
    for _ in range(FRESH_SAMPLES - 1):
        rtt.add(0.02, now)
        assert rtt.slow_after(now) == 1.25  # too few fresh ones: the whole window
    rtt.add(0.02, now)
    assert rtt.slow_after(now) == pytest.approx(SLOW_FACTOR * 0.02)
    assert rtt.slow_after(now + FRESH + 1) == 1.25  # those too are old by then


async def test_driver_reads_slow_after_afresh_while_it_waits() -> None:
    """The silent peer was sent while slow_after was long; answers since shortened it, and
    the driver frees the silent peer's slot by the new value, not the one at sending."""
    nodes, views = make_network(200, 29)
    me, target = nodes[0], nodes[120].node_id
    seeds = views[me.node_id][:20]
    silent = sorted(seeds, key=lambda c: distance(c.node_id, target))[0]
    base = honest(views, {})
    rtt = RttEstimate(ceiling=3600.0)

    async def query(contact: Contact, request: Request) -> Reply | None:
        if contact == silent:
            await asyncio.Event().wait()  # never answers, never times out
        await asyncio.sleep(0.001)
        rtt.add(0.001, 0.0)
        return base(contact, request)

    lookup: Lookup[int] = Lookup(me.node_id, target, seeds)
    result = await asyncio.wait_for(
        run_lookup(lookup, query, slow_after=lambda: rtt.slow_after(0.0)), 10
    )
    assert silent not in result.closest and len(result.closest) == 20


def test_a_value_lookup_starts_each_path_with_its_nearest_seeds_then_widens() -> None:
    """FIND_VALUE sends START requests per path first (most seeds are far from the key: their
    answers name closer peers than the other seeds), ALPHA once the path has heard; FIND_NODE
    starts with ALPHA."""
    nodes, views = make_network(300, 41)
    me, target = nodes[0], random.Random(42).randbytes(20)
    seeds = views[me.node_id][:20]
    value: Lookup[int] = Lookup(me.node_id, target, seeds, accept=accept_seq)
    first = value.start()
    assert len(first) == PATHS * START < PATHS * ALPHA
    ordered = sorted(seeds, key=lambda c: distance(c.node_id, target))
    assert set(first) == set(ordered[: PATHS * START])  # each path's nearest
    value.on_reply(first[0], Value(b"", tuple(ordered[PATHS * START :])))
    assert value.in_flight > PATHS * START  # its path widened past START in flight
    assert len(Lookup(me.node_id, target, seeds).start()) == PATHS * ALPHA


def test_a_value_lookup_reads_a_quorum_per_path_while_every_value_agrees() -> None:
    """When the QUORUM closest peers of each path hold the same valid record, the lookup
    ends there, with fewer requests than reading each path's beam (its share of k)."""
    nodes, views = make_network(1000, 23)
    rng = random.Random(24)
    for _ in range(10):
        target = rng.randbytes(20)
        values = {c.node_id: b"ok:2" for c in true_closest(nodes, target)}
        me = rng.choice(nodes)
        seeds = views[me.node_id][:20]
        quick = drive(Lookup(me.node_id, target, seeds, accept=accept_seq), honest(views, values))
        full = drive(
            Lookup(me.node_id, target, seeds, accept=accept_seq, quorum=7), honest(views, values)
        )
        assert quick.found is not None and quick.found.seq == 2 and quick.repair == ()
        assert full.found is not None and full.found.seq == 2
        assert quick.queries < full.queries


def test_a_stale_or_refused_value_makes_every_path_read_its_beam() -> None:
    """One replica near the key is stale (or lies): values disagree, so every path reads its
    whole beam as without the quorum (the k closest are all read), the newest is believed and
    the stale replica repaired (the liar named)."""
    nodes, views = make_network(1000, 23)
    rng = random.Random(24)
    for _ in range(10):
        target = rng.randbytes(20)
        close = true_closest(nodes, target)
        me = rng.choice(nodes)
        seeds = views[me.node_id][:20]
        for odd in (b"ok:1", b"forged"):
            values = {c.node_id: b"ok:2" for c in close}
            values[close[0].node_id] = odd
            lookup = Lookup(me.node_id, target, seeds, accept=accept_seq)
            result = drive(lookup, honest(views, values))
            assert result.found is not None and result.found.seq == 2
            assert set(result.closest) == set(close)
            assert close[0] in result.repair
            assert (close[0] in result.liars) == (odd == b"forged")


def test_a_path_whose_first_seeds_are_silent_moves_on_once_later_requests_overtake_them() -> None:
    """Both first seeds of one path never answer and no ``slow_after`` comes (time does not
    pass): once OVERTAKEN answers to requests sent after them came back, on any path, they
    hold no slot, so their path asks its next candidates and the lookup ends without them."""
    nodes, views = make_network(300, 51)
    rng = random.Random(52)
    for _ in range(5):
        target = rng.randbytes(20)
        values = {c.node_id: b"ok:3" for c in true_closest(nodes, target)}
        me = rng.choice(nodes)
        lookup: Lookup[int] = Lookup(
            me.node_id, target, views[me.node_id][:20], accept=accept_seq
        )
        first = lookup.start()
        silent = set(first[:START])  # the first path's seeds
        queue = [c for c in first if c not in silent]
        answer = honest(views, values)
        while queue:
            contact = queue.pop(0)
            queue += lookup.on_reply(contact, answer(contact, lookup.request))
        assert lookup.done and lookup.in_flight == START
        found = lookup.result().found
        assert found is not None and found.seq == 3
