"""Who may connect and how often a source may guess passwords: pure policy, time passed in.

Two tables, both bounded whatever strangers do:

* :class:`ConnectionTable` (one per listener) admits connections under a global cap and a
  per-source cap, counts sessions per user, and when the listener is full evicts the oldest
  connection that has not logged in yet (taken from the source holding the most of them)
  rather than refusing the newcomer: a real user can always get in past hundreds of idle or
  trickling strangers, and a logged-in session is never evicted for a stranger.
* :class:`LoginPenalty` (one per node, shared by IMAP and SMTP) makes a source that failed
  wait before its next attempt (doubling per failure, attempts from one source are spaced out
  even when sent on parallel connections) and locks it out after ``lockout_after`` failures.
  An account that many sources fail on locks out the sources that failed on *it*; a source
  that never failed on the account (the owner's phone) is never slowed by strangers.

Sources are IP addresses; IPv6 is counted per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

H = TypeVar("H", bound=Hashable)

MAX_WAIT = 30.0
"""Longest a login attempt is held before it is checked; beyond that it is refused at once."""


def source_key(host: object) -> str:
    """The address a limit counts by: IPv4 as is, IPv6 by its /64, v4-mapped v6 as IPv4."""
    text = str(host).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# --- connections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission(Generic[H]):
    """Whether a new connection may stay, and which older one must go to make room."""

    admitted: bool
    evict: H | None = None
    reason: str = ""


@dataclass
class _Entry:
    source: str
    since: float = 0.0  # when it was admitted
    user: object = None  # set once the connection has logged in
    per_source: bool = True  # still counted against its source's cap


class ByteBudget:
    """Bytes that may be held at once across all connections of a listener (message bodies
    on their way in). Each connection's own limit bounds one message; this bounds the sum,
    so many peers sending large messages at once cost a fixed amount of memory. One owner
    (a user, a sending address) may hold at most half of it, so a slow sender cannot keep
    everyone else waiting."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a byte budget must be positive")
        self.limit = limit
        self.used = 0
        self._by_owner: dict[object, int] = {}

    def reserve(self, size: int, owner: object = None) -> bool:
        """Take ``size`` bytes for ``owner`` if they fit; False (nothing taken) if not."""
        if self.used + size > self.limit:
            return False
        if owner is not None:
            held = self._by_owner.get(owner, 0)
            if held and held + size > self.limit // 2:
                return False
            self._by_owner[owner] = held + size
        self.used += size
        return True

    def release(self, size: int, owner: object = None) -> None:
        self.used = max(0, self.used - size)
        if owner is not None:
            held = self._by_owner.pop(owner, 0) - size
            if held > 0:
                self._by_owner[owner] = held


LOGIN_GRACE = 3.0
"""Seconds a new connection cannot be evicted for newcomers (see ``ConnectionTable.grace``)."""


class ConnectionTable(Generic[H]):
    """Open connections of one listener, keyed by whatever handle the adapter uses.

    With ``sessions_per_source=False`` a connection leaves its source's count when it logs
    in (it is then bounded per user): the per-source cap is about strangers, and the owner's
    clients (on a loopback node, all from 127.0.0.1) are not capped by it. Where logging in
    costs nothing (a peer node's key is free to make) it stays counted.
    """

    def __init__(self, max_total: int, max_per_source: int,
                 max_per_user: int | None = None, *, sessions_per_source: bool = True,
                 grace: float = 0.0) -> None:
        if max_total < 1 or max_per_source < 1 or (max_per_user is not None
                                                   and max_per_user < 1):
            raise ValueError("connection limits must be positive")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.max_per_user = max_per_user
        self.sessions_per_source = sessions_per_source
        self.grace = grace
        """Seconds a new connection is safe from eviction: long enough for a real client to
        log in, so a flood of newcomers cannot push out someone who is logging in (when
        every waiting connection is that young, the newcomer is refused instead)."""
        self._entries: dict[H, _Entry] = {}
        self._per_source: dict[str, int] = defaultdict(int)
        self._per_user: dict[object, int] = defaultdict(int)
        self._waiting: dict[H, None] = {}  # not logged in yet, oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def handles(self) -> list[H]:
        return list(self._entries)

    def waiting(self) -> int:
        """Connections that have not logged in."""
        return len(self._waiting)

    def admit(self, handle: H, source: str, now: float = 0.0) -> Admission[H]:
        """Take a new connection from ``source`` at time ``now``; the caller closes ``evict``
        if one is named."""
        if self._per_source[source] >= self.max_per_source:
            self._forget_source(source)
            return Admission(False, reason="too many connections from your address")
        victim: H | None = None
        if len(self._entries) >= self.max_total:
            victim = self._victim(now)
            if victim is None:
                return Admission(False, reason="too many connections")
            self.release(victim)
        self._entries[handle] = _Entry(source, now)
        self._per_source[source] += 1
        self._waiting[handle] = None
        return Admission(True, evict=victim)

    def _victim(self, now: float) -> H | None:
        """The oldest waiting connection, past its grace, of the source with the most such."""
        cutoff = now - self.grace
        counts: dict[str, int] = defaultdict(int)
        for handle in self._waiting:
            entry = self._entries[handle]
            if entry.since > cutoff:
                break  # oldest first: the rest are younger still
            counts[entry.source] += 1
        if not counts:
            return None
        busiest = max(counts.values())
        return next(h for h in self._waiting
                    if counts[self._entries[h].source] == busiest)

    def login(self, handle: H, user: object) -> bool:
        """Mark the connection as ``user``'s session; False if that user has too many."""
        entry = self._entries.get(handle)
        if entry is None:  # evicted while its login was being checked
            return False
        if entry.user is not None:
            return entry.user == user
        if self.max_per_user is not None and self._per_user[user] >= self.max_per_user:
            return False
        entry.user = user
        self._per_user[user] += 1
        self._waiting.pop(handle, None)
        if not self.sessions_per_source:
            entry.per_source = False
            self._per_source[entry.source] -= 1
            self._forget_source(entry.source)
        return True

    def release(self, handle: H) -> None:
        """The connection is gone (idempotent)."""
        entry = self._entries.pop(handle, None)
        if entry is None:
            return
        self._waiting.pop(handle, None)
        if entry.per_source:
            self._per_source[entry.source] -= 1
            self._forget_source(entry.source)
        if entry.user is not None:
            self._per_user[entry.user] -= 1
            if not self._per_user[entry.user]:
                del self._per_user[entry.user]

    def _forget_source(self, source: str) -> None:
        if not self._per_source.get(source):
            self._per_source.pop(source, None)

    def sessions(self, user: object) -> int:
        return self._per_user.get(user, 0)

    def from_source(self, source: str) -> int:
        return self._per_source.get(source, 0)


# --- password guessing ------------------------------------------------------------------------


class Throttled(Exception):
    """The attempt is refused unchecked; the source may try again after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.0f} s")
        self.retry_after = max(1.0, retry_after)


@dataclass
class _Source:
    failures: int = 0
    last_failure: float = 0.0
    next_slot: float = 0.0  # attempts from this source are spaced out from here on


@dataclass
class _Account:
    failures: int = 0
    last_failure: float = 0.0
    failed_from: OrderedDict[str, None] = field(default_factory=OrderedDict)


class LoginPenalty:
    """Failed logins per source and per account, with progressive delay and lockout.

    A source's n-th failure makes it wait ``base_delay * 2**(n-1)`` (at most :data:`MAX_WAIT`)
    before its next attempt is checked, whichever connection that comes on; after
    ``lockout_after`` failures it is refused unchecked until ``lockout`` seconds after its last
    failure. Failures are forgotten ``lockout`` seconds after the last one; a success resets
    the source. An account with ``lockout_after`` recent failures refuses, for the same time,
    the sources that failed on it (a botnet gets one guess per address), never the others.
    Tables are LRU-capped so a flood of addresses or names cannot grow them without bound.
    """

    def __init__(self, *, base_delay: float = 1.0, lockout_after: int = 10,
                 lockout: float = 900.0, max_sources: int = 16384, max_accounts: int = 4096,
                 max_failed_from: int = 64) -> None:
        if base_delay < 0 or lockout_after < 1 or lockout <= 0:
            raise ValueError("penalty settings must be positive")
        self.base_delay = base_delay
        self.lockout_after = lockout_after
        self.lockout = lockout
        self.max_sources = max_sources
        self.max_accounts = max_accounts
        self.max_failed_from = max_failed_from
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._accounts: OrderedDict[str, _Account] = OrderedDict()

    def __len__(self) -> int:
        """Entries held (for tests of the memory bound)."""
        return len(self._sources) + len(self._accounts)

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(MAX_WAIT, self.base_delay * 2.0 ** min(failures - 1, 32))

    def _expire(self, now: float) -> None:
        """Drop entries whose last failure is older than ``lockout`` (oldest touched first)."""
        while self._sources and now - next(iter(self._sources.values())).last_failure \
                >= self.lockout:
            self._sources.popitem(last=False)
        while self._accounts and now - next(iter(self._accounts.values())).last_failure \
                >= self.lockout:
            self._accounts.popitem(last=False)

    def reserve(self, source: str, account: str, now: float) -> float:
        """Before checking a password: seconds to wait first, or raise :class:`Throttled`."""
        self._expire(now)
        src = self._sources.get(source)
        if src is None:
            return 0.0  # a source that has not failed is never slowed down
        if src.failures >= self.lockout_after:
            raise Throttled(src.last_failure + self.lockout - now)
        acc = self._accounts.get(account)
        if acc is not None and acc.failures >= self.lockout_after and source in acc.failed_from:
            raise Throttled(acc.last_failure + self.lockout - now)
        slot = max(now, src.next_slot)
        if slot - now > MAX_WAIT:
            raise Throttled(slot - now)
        src.next_slot = slot + self.delay(src.failures)
        return slot - now

    def failed(self, source: str, account: str, now: float) -> None:
        """The password was checked and wrong (or the account does not exist)."""
        self._expire(now)
        src = self._sources.pop(source, None) or _Source()
        src.failures += 1
        src.last_failure = now
        src.next_slot = max(src.next_slot, now + self.delay(src.failures))
        self._sources[source] = src  # most recently touched last
        acc = self._accounts.pop(account, None) or _Account()
        acc.failures += 1
        acc.last_failure = now
        acc.failed_from.pop(source, None)
        acc.failed_from[source] = None
        while len(acc.failed_from) > self.max_failed_from:
            acc.failed_from.popitem(last=False)
        self._accounts[account] = acc
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        while len(self._accounts) > self.max_accounts:
            self._accounts.popitem(last=False)

    def succeeded(self, source: str, account: str, now: float) -> None:
        """The source knows this account's password: forget its failures."""
        self._sources.pop(source, None)
        acc = self._accounts.get(account)
        if acc is not None:
            acc.failed_from.pop(source, None)
