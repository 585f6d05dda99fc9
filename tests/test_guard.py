"""The sans-IO connection table and login penalty, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.guard import (
    MAX_WAIT,
    ByteBudget,
    ConnectionTable,
    LoginPenalty,
    Throttled,
    source_key,
)

# --- source_key -------------------------------------------------------------------------------


def test_source_key_counts_ipv6_by_64_and_unmaps_ipv4() -> None:
    assert source_key("203.0.113.5") == "203.0.113.5"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::2")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert len(source_key("x" * 1000)) == 64  # not an address: bounded, still a key


# --- ConnectionTable --------------------------------------------------------------------------


def test_per_source_cap_refuses_only_that_source() -> None:
    table: ConnectionTable[int] = ConnectionTable(100, 2)
    assert table.admit(1, "a").admitted and table.admit(2, "a").admitted
    refused = table.admit(3, "a")
    assert not refused.admitted and "your address" in refused.reason
    assert table.admit(4, "b").admitted
    table.release(1)
    assert table.admit(5, "a").admitted


def test_full_listener_evicts_oldest_waiting_of_the_busiest_source() -> None:
    table: ConnectionTable[str] = ConnectionTable(4, 10)
    for handle, source in (("a1", "a"), ("b1", "b"), ("b2", "b"), ("a2", "a")):
        assert table.admit(handle, source).evict is None
    assert table.login("a1", "alice")
    # waiting: b1, b2, a2 -> b holds the most, its oldest goes
    admission = table.admit("new", "c")
    assert admission.admitted and admission.evict == "b1"
    assert len(table) == 4 and table.from_source("b") == 1
    assert table.admit("new2", "c").evict == "b2"  # now a, b and c hold one each: oldest


def test_logged_in_sessions_are_never_evicted() -> None:
    table: ConnectionTable[int] = ConnectionTable(2, 10)
    for handle in (1, 2):
        table.admit(handle, "owner")
        assert table.login(handle, "alice")
    refused = table.admit(3, "stranger")
    assert not refused.admitted and refused.evict is None
    assert len(table) == 2


def test_per_user_cap() -> None:
    table: ConnectionTable[int] = ConnectionTable(10, 10, max_per_user=2)
    for handle in (1, 2, 3, 4):
        table.admit(handle, "s")
    assert table.login(1, "alice") and table.login(2, "alice")
    assert not table.login(3, "alice")
    assert table.login(4, "bob")  # one user's sessions do not lock others out
    table.release(1)
    assert table.login(3, "alice")
    assert table.sessions("alice") == 2


def test_login_of_an_evicted_connection_is_refused() -> None:
    table: ConnectionTable[int] = ConnectionTable(1, 10)
    table.admit(1, "a")
    assert table.admit(2, "b").evict == 1
    assert not table.login(1, "alice")


def test_logged_in_sessions_can_leave_the_source_count() -> None:
    """IMAP and SMTP: the per-source cap is for strangers; users are capped per user."""
    table: ConnectionTable[int] = ConnectionTable(10, 2, max_per_user=5,
                                                  sessions_per_source=False)
    for handle in (1, 2):
        table.admit(handle, "127.0.0.1")
        assert table.login(handle, "alice")
    assert table.from_source("127.0.0.1") == 0
    assert table.admit(3, "127.0.0.1").admitted and table.admit(4, "127.0.0.1").admitted
    assert not table.admit(5, "127.0.0.1").admitted  # two strangers' worth still waiting
    table.release(1)
    assert table.from_source("127.0.0.1") == 2 and table.sessions("alice") == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["admit", "login", "release"]),
                          st.integers(0, 30), st.integers(0, 4), st.integers(0, 3))),
       st.booleans())
def test_table_invariants_hold_for_any_sequence(
        ops: list[tuple[str, int, int, int]], sessions_per_source: bool) -> None:
    table: ConnectionTable[int] = ConnectionTable(8, 3, max_per_user=2,
                                                  sessions_per_source=sessions_per_source)
    open_: dict[int, str] = {}
    users: dict[int, str] = {}
    for op, handle, source_n, user_n in ops:
        source, user = f"s{source_n}", f"u{user_n}"
        if op == "admit" and handle not in open_:
            admission = table.admit(handle, source)
            if admission.evict is not None:
                assert admission.evict not in users  # only waiting connections are evicted
                del open_[admission.evict]
            if admission.admitted:
                open_[handle] = source
        elif op == "login" and handle in open_ and handle not in users:
            if table.login(handle, user):
                users[handle] = user
        elif op == "release":
            table.release(handle)
            open_.pop(handle, None)
            users.pop(handle, None)
        assert len(table) == len(open_) <= 8
        counted = [src for h, src in open_.items() if sessions_per_source or h not in users]
        for src in set(open_.values()):
            assert table.from_source(src) == counted.count(src) <= 3
        for u in set(users.values()):
            assert table.sessions(u) == list(users.values()).count(u) <= 2
        assert table.waiting() == len(open_) - len(users)
    for handle in list(open_):
        table.release(handle)
    assert len(table) == 0 and not table._per_source and not table._per_user


# --- LoginPenalty -----------------------------------------------------------------------------


def penalty(**kwargs: float) -> LoginPenalty:
    settings_ = {"base_delay": 1.0, "lockout_after": 5, "lockout": 600.0, **kwargs}
    return LoginPenalty(**settings_)  # type: ignore[arg-type]


def test_a_source_that_never_failed_is_never_delayed() -> None:
    p = penalty()
    assert [p.reserve("owner", "alice", 0.0) for _ in range(100)] == [0.0] * 100
    assert len(p) == 0  # and it costs no memory


def test_delay_doubles_per_failure() -> None:
    p = penalty(lockout_after=10)
    now = 0.0
    for expected in (1.0, 2.0, 4.0, 8.0, 16.0):
        p.failed("x", "alice", now)
        wait = p.reserve("x", "alice", now)
        assert wait == expected
        now += wait


def test_parallel_attempts_from_one_source_are_spaced_out() -> None:
    p = penalty(lockout_after=10)
    for _ in range(4):
        p.failed("x", "alice", 0.0)  # 8 s between attempts from now on
    # Connections asking at once get consecutive slots, not one free guess each.
    assert [p.reserve("x", "alice", 0.0) for _ in range(3)] == [8.0, 16.0, 24.0]
    with pytest.raises(Throttled) as exc:
        p.reserve("x", "alice", 0.0)
    assert exc.value.retry_after == 32.0 > MAX_WAIT


def test_delay_is_capped() -> None:
    p = penalty(lockout_after=100)
    for i in range(40):
        p.failed("x", "alice", float(i))
    assert p.delay(40) == MAX_WAIT
    assert p.reserve("x", "alice", 1000.0) == 0.0  # the cap has long passed


def test_lockout_after_n_failures_then_forgotten() -> None:
    p = penalty(base_delay=0.0)
    for _ in range(5):
        assert p.reserve("x", "bob", 10.0) == 0.0
        p.failed("x", "bob", 10.0)
    with pytest.raises(Throttled) as exc:
        p.reserve("x", "bob", 11.0)
    assert exc.value.retry_after == 599.0
    with pytest.raises(Throttled):  # another account does not help the locked source
        p.reserve("x", "carol", 11.0)
    assert p.reserve("x", "bob", 610.0) == 0.0  # lockout over, failures forgotten
    assert len(p) == 0


def test_success_resets_the_source() -> None:
    p = penalty()
    for i in range(4):
        p.failed("x", "alice", float(i))
    p.succeeded("x", "alice", 4.0)
    assert p.reserve("x", "alice", 4.0) == 0.0


def test_account_under_attack_refuses_the_sources_that_failed_on_it_only() -> None:
    p = penalty(base_delay=0.0)
    bots = [f"10.0.0.{i}" for i in range(5)]
    for bot in bots:  # one guess each: no source reaches its own lockout
        assert p.reserve(bot, "alice", 1.0) == 0.0
        p.failed(bot, "alice", 1.0)
    for bot in bots:
        with pytest.raises(Throttled):
            p.reserve(bot, "alice", 2.0)
        assert p.reserve(bot, "bob", 2.0) == 0.0  # other accounts: only its own delay
    assert p.reserve("owner-phone", "alice", 2.0) == 0.0
    assert p.reserve("owner-laptop", "alice", 2.0) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(["alice", "bob", "x", "ALICE"]),
                          st.floats(0, 100), st.booleans())))
def test_strangers_never_slow_down_a_clean_source(
        events: list[tuple[int, str, float, bool]]) -> None:
    p = penalty(base_delay=0.5, lockout_after=3)
    now = 0.0
    for source_n, account, step, success in events:
        now += step
        source = f"stranger-{source_n}"
        try:
            p.reserve(source, account, now)
        except Throttled:
            continue
        (p.succeeded if success else p.failed)(source, account, now)
        for target in ("alice", "bob"):
            assert p.reserve("owner", target, now) == 0.0


def test_one_source_gets_at_most_lockout_after_checks_per_lockout_period() -> None:
    """A greedy guesser with many connections: count the attempts the penalty lets through."""
    p = penalty(base_delay=1.0, lockout_after=5, lockout=600.0)
    now, checked, horizon = 0.0, 0, 6000.0
    while now < horizon:
        try:
            wait = p.reserve("x", "alice", now)
        except Throttled as exc:
            now += exc.retry_after
            continue
        now += wait
        checked += 1
        p.failed("x", "alice", now)
    periods = horizon / 600.0
    assert checked <= 5 * (periods + 1)


def test_tables_stay_bounded_under_a_flood_of_sources_and_names() -> None:
    p = LoginPenalty(max_sources=100, max_accounts=50, max_failed_from=8)
    for i in range(10_000):
        p.failed(f"src-{i}", f"name-{i % 3000}", float(i) / 1000)
    assert len(p._sources) == 100 and len(p._accounts) == 50
    assert all(len(a.failed_from) <= 8 for a in p._accounts.values())


def test_young_connections_are_not_evicted_for_newcomers() -> None:
    """Within its grace a connection (someone logging in right now) is safe: a flood of
    newcomers is refused instead; past it, the oldest stranger makes room."""
    table: ConnectionTable[str] = ConnectionTable(2, 5, grace=3.0)
    assert table.admit("user", "10.0.0.1", now=100.0).admitted
    assert table.admit("s1", "10.0.0.2", now=100.5).admitted
    refused = table.admit("s2", "10.0.0.3", now=101.0)
    assert not refused.admitted and refused.evict is None
    admission = table.admit("s3", "10.0.0.4", now=103.2)  # "user" is past its grace now
    assert admission.admitted and admission.evict == "user"
    table.login("s1", "bob")
    assert table.admit("s4", "10.0.0.5", now=200.0).evict == "s3"  # not bob's session
    table.login("s4", "carol")
    assert not table.admit("s5", "10.0.0.6", now=300.0).admitted  # sessions never evicted


def test_byte_budget_caps_the_sum_and_each_owners_share() -> None:
    budget = ByteBudget(100)
    assert budget.reserve(40, "slow sender") and budget.reserve(10, "slow sender")
    assert not budget.reserve(10, "slow sender")  # half the budget is its share at most
    assert budget.reserve(45, "someone else")
    assert not budget.reserve(10, "third")  # 95 of 100 in use
    budget.release(40, "slow sender")
    assert budget.reserve(10, "third") and budget.reserve(30, "slow sender")
    assert budget.used == 95
