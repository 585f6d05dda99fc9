"""Our view of the network: k-buckets that return decisions instead of doing I/O.

The table never sends anything. :meth:`RoutingTable.offer` says what became of a contact
(added, refreshed, refused and why, or "bucket full: ping this head"), and the caller reports
what the network said with :meth:`~RoutingTable.answered` and :meth:`~RoutingTable.failed`. So
the same table runs under a simulated clock and on UDP.

What changed from the ``kademlia`` package, and why:

- A contact that timed out is marked and no longer returned as live; a peer's answer naming it
  does not make it live again (only its own answer does); after ``max_failures`` timeouts, or at
  once when a replacement is waiting, it is evicted and the freshest replacement promoted. The
  package re-added dead contacts from other answers and returned them, so lookups kept waiting
  on them.
- Fixed buckets by shared-prefix length instead of a split tree: the same k contacts per
  distance range, exact nearest search by a full scan (the table holds a few hundred contacts).
- Per-IP and per-subnet (/24, /64) caps overall and per bucket (one machine cannot fill our
  view: ids are bound to keys, but keys are free), one id per ip:port, and an id moves to a new
  address only when it answered from there (replies are signed by the key behind the id).
- Anchors (friends, bootstrap peers) are held apart: exempt from caps, never evicted, listed
  first in :meth:`~RoutingTable.export` and :meth:`~RoutingTable.seeds`, so a restarted node
  rejoins through them and an eclipse of the buckets cannot take them away.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections import Counter
from dataclasses import dataclass

from dht.kad.contact import ID_SIZE, Contact
from dht.limits import DEFAULT_LIMITS, DhtLimits, subnet

K = 20
"""Contacts per bucket, and the size of a lookup's result."""
MAX_FAILURES = 3
"""Timeouts in a row after which a contact is evicted even if no replacement waits."""
REFRESH_INTERVAL = 3600.0
"""A bucket no lookup went through for this long is refreshed with a lookup of a random id in it."""
PING_GRACE = 30.0
"""How long a contact stays "being pinged" (no second ping) if the caller never reports back."""
GOOD_FOR = 900.0
"""A contact heard from this recently counts as alive without a ping (BitTorrent's DHT, BEP 5,
calls such a node "good" for 15 minutes): a full bucket pings its quietest contact for a
newcomer only when even that one has been silent longer."""
RETRY_AFTER = 60.0
"""A timed-out contact that was not evicted is pinged again after this long (partitions heal)."""
ID_BITS = ID_SIZE * 8


class Kind(enum.Enum):
    ADDED = "added"
    REFRESHED = "refreshed"
    FULL = "full"  # bucket full: the newcomer waits as a replacement; ``ping`` the head if set
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`RoutingTable.offer` did, and the one I/O it asks for (a ping), if any."""

    kind: Kind
    ping: Contact | None = None
    reason: str = ""


@dataclass(slots=True)
class _Entry:
    contact: Contact
    number: int  # the id as an integer, for the XOR metric without conversions per scan
    seen: float  # last time it was offered or answered
    failures: int = 0  # timeouts since it last answered
    failed_at: float = 0.0  # time of the last timeout
    verified: bool = False  # it answered one of our requests (signed, from its address)
    pinged: float | None = None  # when we asked the caller to ping it (as a full bucket's head)

    @property
    def live(self) -> bool:
        return self.failures == 0


class _Bucket:
    """Up to k entries, least recently seen first, and up to k replacements, freshest last."""

    __slots__ = ("entries", "replacements", "used")

    def __init__(self, now: float) -> None:
        self.entries: dict[bytes, _Entry] = {}
        self.replacements: dict[bytes, _Entry] = {}
        self.used = now  # last lookup through this bucket's range


class RoutingTable:
    """The k-buckets of node ``own_id``; pure: time is passed in, I/O is returned as decisions."""

    def __init__(
        self,
        own_id: bytes,
        now: float,
        *,
        k: int = K,
        limits: DhtLimits = DEFAULT_LIMITS,
        max_failures: int = MAX_FAILURES,
        rng: random.Random | None = None,
    ) -> None:
        if len(own_id) != ID_SIZE:
            raise ValueError(f"a node id is {ID_SIZE} bytes")
        self.own_id = own_id
        self._own = int.from_bytes(own_id, "big")
        self.k = k
        self._limits = limits
        self._max_failures = max_failures
        self._rng = rng or random.Random()
        self._buckets = [_Bucket(now) for _ in range(ID_BITS)]
        self._anchors: dict[bytes, _Entry] = {}
        self._where: dict[bytes, int] = {}  # id -> bucket index, entries and replacements
        self._nonempty_cache: list[int] | None = None
        self._addresses: dict[tuple[str, int], bytes] = {}  # one id per ip:port
        self._per_ip: Counter[str] = Counter()
        self._per_net: Counter[str] = Counter()
        self._per_ip_bucket: Counter[tuple[int, str]] = Counter()
        self._per_net_bucket: Counter[tuple[int, str]] = Counter()

    # -- queries

    def __len__(self) -> int:
        return sum(len(b.entries) for b in self._buckets) + len(self._anchors)

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, bytes) and self._entry(node_id) is not None

    def bucket_index(self, node_id: bytes) -> int:
        """0 for the id closest to ours (differs in the last bit) .. 159 for the farthest half."""
        return (int.from_bytes(node_id, "big") ^ self._own).bit_length() - 1

    def is_live(self, node_id: bytes) -> bool:
        """Whether ``node_id`` is in the table and has not timed out since it last answered."""
        entry = self._anchors.get(node_id)
        if entry is None and node_id in self._where:
            entry = self._buckets[self._where[node_id]].entries.get(node_id)
        return entry is not None and entry.live

    def is_failed(self, node_id: bytes) -> bool:
        """Whether we hold ``node_id`` as timed out, so a lookup should not wait on it."""
        entry = self._entry(node_id)
        return entry is not None and not entry.live

    def contact(self, node_id: bytes) -> Contact | None:
        entry = self._entry(node_id)
        return None if entry is None else entry.contact

    def is_anchor(self, node_id: bytes) -> bool:
        return node_id in self._anchors

    def closest(
        self, target: bytes, count: int, now: float, *, lookup: bool = True
    ) -> list[Contact]:
        """The ``count`` live contacts closest to ``target`` (anchors included), nearest first.

        ``lookup``: we are starting a lookup of ``target``, which counts as a refresh of its
        bucket (answering a peer's request does not: pass False).
        """
        number = int.from_bytes(target, "big")
        index = (number ^ self._own).bit_length() - 1  # -1: the target is our own id
        if lookup and index >= 0:
            self._buckets[index].used = now
        # Bucket i holds distances to the target in [2^i, 2^(i+1)) when i > index, below
        # 2^index when i == index, and all of [2^index, 2^(index+1)) when i < index; among
        # those, bucket i is nearer than every bucket below it if bit i of our distance to the
        # target is set, farther than all of them if not. Gathered in that order, whole
        # buckets, until ``count`` are in hand: a few buckets per request, not the table.
        anchors = self._anchors.values()
        gathered = [(e.number ^ number, e.contact) for e in anchors if not e.failures]
        enough = len(gathered) + count
        buckets = self._buckets
        nonempty = self._nonempty()
        split = bisect.bisect_right(nonempty, index)
        lower = nonempty[:split]
        order: list[int] = []
        if lower and lower[-1] == index:
            order.append(lower.pop())
        apart = number ^ self._own
        order += [i for i in reversed(lower) if apart >> i & 1]
        order += [i for i in lower if not apart >> i & 1]
        order += nonempty[split:]
        for i in order:
            entries = buckets[i].entries.values()
            gathered += [(e.number ^ number, e.contact) for e in entries if not e.failures]
            if len(gathered) >= enough:
                break
        gathered.sort()  # distances are distinct (distinct ids): contacts are never compared
        return [c for _, c in gathered[:count]]

    def seeds(self, target: bytes, count: int, now: float) -> list[Contact]:
        """Where a lookup of ``target`` starts: live anchors first, then the closest other live
        contacts; anchors that timed out only when that leaves fewer than ``count`` (one lost
        datagram must not leave a fresh node with nobody to ask, and a dead bootstrap node
        must not cost every later lookup a timeout).

        Anchors are the contacts we trust not to be Sybils; starting through them means an
        attacker who filled our buckets still does not own every path.
        """
        live = [e.contact for e in self._anchors.values() if e.live]
        live += [c for c in self.closest(target, count, now) if c.node_id not in self._anchors]
        if len(live) < count:
            live += [e.contact for e in self._anchors.values() if not e.live]
        return live[: max(count, len(self._anchors))]

    def export(self) -> list[Contact]:
        """What to save (peers.json): every anchor first, then answered live contacts, most
        recently seen first. Unanswered contacts (maybe spoofed) are never saved."""
        anchors = [e.contact for e in self._anchors.values()]
        verified = [e for b in self._buckets for e in b.entries.values() if e.live and e.verified]
        verified.sort(key=lambda e: e.seen, reverse=True)
        return anchors + [e.contact for e in verified]

    def answered_count(self) -> int:
        """How many contacts :meth:`export` lists are live: live anchors and live contacts
        that answered us (without building and sorting the list)."""
        buckets = self._buckets
        return sum(1 for e in self._anchors.values() if not e.failures) + sum(
            1 for i in self._nonempty() for e in buckets[i].entries.values()
            if e.verified and not e.failures
        )

    def contacts(self) -> list[Contact]:
        """Every contact held (live or not, anchors included), not the replacements."""
        return [e.contact for e in self._anchors.values()] + [
            e.contact for b in self._buckets for e in b.entries.values()
        ]

    def buckets_to_refresh(self, now: float, *, joining: bool = False) -> list[bytes]:
        """One random id per bucket that no lookup went through for REFRESH_INTERVAL (every one
        when ``joining``: after the lookup of our own id, as the paper's join does): every
        bucket from our nearest non-empty one outwards, empty ones included (a far bucket
        emptied by churn is how a node loses sight of half the network; a lookup there through
        the contacts we still have finds it again). Our own id too while fewer than k contacts
        are live (a join whose datagrams were lost; anchors alone count as "few"). Nothing while
        the table is empty.

        The caller looks each up (which marks the bucket used through :meth:`closest`).
        """
        lowest = next((i for i, b in enumerate(self._buckets) if b.entries), ID_BITS)
        targets = [
            self.random_id_in_bucket(index)
            for index in range(lowest, ID_BITS)
            if joining or now - self._buckets[index].used >= REFRESH_INTERVAL
        ]
        live = sum(e.live for b in self._buckets for e in b.entries.values())
        if not joining and live < self.k and (self._anchors or lowest < ID_BITS):
            targets.insert(0, self.own_id)  # few live contacts (a join lost): look again
        return targets

    def random_id_in_bucket(self, index: int) -> bytes:
        """An id whose distance to ours falls in bucket ``index``."""
        low = self._rng.getrandbits(index) if index else 0
        number = self._own ^ ((1 << index) | low)
        return number.to_bytes(ID_SIZE, "big")

    # -- changes

    def offer(
        self, contact: Contact, now: float, *, anchor: bool = False, verified: bool = False
    ) -> Decision:
        """Consider ``contact``: it sent us a request, answered us (``verified``: its reply was
        signed by its key from its address), or is a friend or bootstrap peer (``anchor``).

        An offer refreshes a known contact's age but never clears its timeouts: only
        :meth:`answered` does, so a peer naming a dead contact cannot make it live again.
        """
        node_id = contact.node_id
        if node_id == self.own_id:
            return Decision(Kind.REFUSED, reason="self")
        if anchor:
            return self._anchor(contact, now, verified)
        known = self._entry(node_id)
        if known is not None:
            return self._refresh(known, contact, now, verified)
        holder = self._addresses.get(contact.address)
        if holder is not None:
            held = self._entry(holder)
            assert held is not None
            if not verified or (held.verified and held.live) or holder in self._anchors:
                return Decision(Kind.REFUSED, reason="another id at this address")
            self._remove(holder)  # an unproven or dead id at an address that answers as another
        index = self.bucket_index(node_id)
        refusal = self._over_cap(index, contact.host)
        if refusal:
            return Decision(Kind.REFUSED, reason=refusal)
        entry = _Entry(contact, int.from_bytes(node_id, "big"), now, verified=verified)
        bucket = self._buckets[index]
        if len(bucket.entries) < self.k:
            self._put(bucket.entries, index, entry)
            return Decision(Kind.ADDED)
        dead = [e for e in bucket.entries.values() if not e.live]
        if dead:  # a contact that already timed out makes room without another ping
            self._remove(max(dead, key=lambda e: e.failures).contact.node_id)
            self._put(bucket.entries, index, entry)
            return Decision(Kind.ADDED)
        if len(bucket.replacements) >= self.k:
            self._remove(next(iter(bucket.replacements)))  # the stalest replacement
        self._put(bucket.replacements, index, entry)
        # Ping the contact we heard from longest ago, unless even it is good (GOOD_FOR): a
        # full bucket of live peers needs no proof, and pinging its head for every newcomer
        # made each lookup through us cost pings on top of its answers.
        head = min(bucket.entries.values(), key=lambda e: e.seen)
        if now - head.seen < GOOD_FOR or (
            head.pinged is not None and now - head.pinged < PING_GRACE
        ):
            return Decision(Kind.FULL)
        head.pinged = now
        return Decision(Kind.FULL, ping=head.contact)

    def answered(self, node_id: bytes, now: float) -> bool:
        """``node_id`` answered one of our requests: live again, most recently seen."""
        entry = self._entry(node_id)
        if entry is None:
            return False
        entry.failures = 0
        entry.verified = True
        entry.seen = now
        entry.pinged = None
        index = self._where.get(node_id)
        if index is not None:
            bucket = self._buckets[index]
            table = bucket.entries if node_id in bucket.entries else bucket.replacements
            table[node_id] = table.pop(node_id)  # to the tail: most recently seen
        return True

    def failed(self, node_id: bytes, now: float) -> bool:
        """A request to ``node_id`` timed out (or got garbage); True if it was evicted.

        It stops being live at once. It is evicted after ``max_failures`` timeouts, or at
        once when its bucket has a replacement waiting (then the freshest one is promoted).
        Anchors are never evicted.
        """
        entry = self._entry(node_id)
        if entry is None:
            return False
        entry.failures += 1
        entry.failed_at = now
        entry.pinged = None
        if node_id in self._anchors:
            return False
        index = self._where[node_id]
        bucket = self._buckets[index]
        if node_id in bucket.replacements:
            self._remove(node_id)
            return True
        if entry.failures < self._max_failures and not bucket.replacements:
            return False
        self._remove(node_id)
        if bucket.replacements:
            newest = next(reversed(bucket.replacements))
            bucket.entries[newest] = bucket.replacements.pop(newest)
        return True

    def due_pings(self, now: float, limit: int = 8) -> list[Contact]:
        """Timed-out contacts still held (anchors, or fewer than ``max_failures`` timeouts) that
        are due another ping: one RETRY_AFTER after their last timeout. Without this a healed
        partition would leave both sides holding each other as dead."""
        due: list[Contact] = []
        entries = list(self._anchors.values()) + [
            e for b in self._buckets for e in b.entries.values()
        ]
        for entry in entries:
            if len(due) >= limit:
                break
            if (
                not entry.live
                and now - entry.failed_at >= RETRY_AFTER
                and (entry.pinged is None or now - entry.pinged >= PING_GRACE)
            ):
                entry.pinged = now
                due.append(entry.contact)
        return due

    def remove(self, node_id: bytes) -> None:
        """Forget ``node_id`` (a peer caught lying); anchors stay unless ``unanchor`` is used."""
        if node_id in self._where:
            self._remove(node_id)

    def unanchor(self, node_id: bytes) -> None:
        """Stop treating ``node_id`` as an anchor (a friend removed); it is forgotten."""
        entry = self._anchors.pop(node_id, None)
        if entry is not None:
            self._addresses.pop(entry.contact.address, None)

    # -- internals

    def _nonempty(self) -> list[int]:
        """Indices of buckets with entries, ascending (cached until the table changes)."""
        if self._nonempty_cache is None:
            self._nonempty_cache = [i for i, b in enumerate(self._buckets) if b.entries]
        return self._nonempty_cache

    def _entry(self, node_id: bytes) -> _Entry | None:
        anchor = self._anchors.get(node_id)
        if anchor is not None:
            return anchor
        index = self._where.get(node_id)
        if index is None:
            return None
        bucket = self._buckets[index]
        return bucket.entries.get(node_id) or bucket.replacements.get(node_id)

    def _anchor(self, contact: Contact, now: float, verified: bool) -> Decision:
        node_id = contact.node_id
        if node_id in self._where:
            self._remove(node_id)
        old = self._anchors.get(node_id)
        holder = self._addresses.get(contact.address)
        if holder is not None and holder != node_id:
            if holder in self._anchors:
                return Decision(Kind.REFUSED, reason="another anchor at this address")
            self._remove(holder)
        if old is not None:
            self._addresses.pop(old.contact.address, None)
        entry = _Entry(contact, int.from_bytes(node_id, "big"), now, verified=verified)
        if old is not None:
            entry.failures, entry.verified = old.failures, old.verified or verified
        self._anchors[node_id] = entry
        self._addresses[contact.address] = node_id
        return Decision(Kind.REFRESHED if old is not None else Kind.ADDED)

    def _refresh(self, known: _Entry, contact: Contact, now: float, verified: bool) -> Decision:
        node_id = contact.node_id
        if known.contact.address != contact.address:
            taken = self._addresses.get(contact.address)
            if not verified or (taken is not None and taken != node_id):
                return Decision(Kind.REFUSED, reason="known id at another address")
            if node_id in self._anchors:
                return self._anchor(contact, now, verified)
            # it answered from its new address: move it (caps are checked as for a newcomer)
            index = self._where[node_id]
            self._remove(node_id)
            refusal = self._over_cap(index, contact.host)
            if refusal:
                return Decision(Kind.REFUSED, reason=refusal)
            entry = _Entry(contact, known.number, now, verified=True)
            self._put(self._buckets[index].entries, index, entry)
            return Decision(Kind.REFRESHED)
        known.seen = now
        if verified:
            self.answered(node_id, now)
        elif not known.live and (known.pinged is None or now - known.pinged >= PING_GRACE):
            known.pinged = now  # it timed out but speaks to us: only its answer revives it
            return Decision(Kind.REFRESHED, ping=known.contact)
        return Decision(Kind.REFRESHED)

    def _over_cap(self, index: int, host: str) -> str:
        limits = self._limits
        net = subnet(host)
        if self._per_ip_bucket[index, host] >= limits.contacts_per_ip_bucket:
            return "per-IP cap in bucket"
        if self._per_ip[host] >= limits.contacts_per_ip:
            return "per-IP cap"
        if self._per_net_bucket[index, net] >= limits.contacts_per_subnet_bucket:
            return "per-subnet cap in bucket"
        if self._per_net[net] >= limits.contacts_per_subnet:
            return "per-subnet cap"
        return ""

    def _put(self, table: dict[bytes, _Entry], index: int, entry: _Entry) -> None:
        """Hold ``entry`` in a bucket's entries or replacements; counts it against the caps
        (replacements too: they are promoted without another check)."""
        contact = entry.contact
        net = subnet(contact.host)
        if not table and table is self._buckets[index].entries:
            self._nonempty_cache = None  # a bucket with entries now: not for a replacement
        table[contact.node_id] = entry
        self._where[contact.node_id] = index
        self._addresses[contact.address] = contact.node_id
        self._per_ip[contact.host] += 1
        self._per_net[net] += 1
        self._per_ip_bucket[index, contact.host] += 1
        self._per_net_bucket[index, net] += 1

    def _remove(self, node_id: bytes) -> None:
        index = self._where.pop(node_id)
        bucket = self._buckets[index]
        entry = bucket.entries.pop(node_id, None) or bucket.replacements.pop(node_id)
        if not bucket.entries:
            self._nonempty_cache = None
        contact = entry.contact
        net = subnet(contact.host)
        if self._addresses.get(contact.address) == node_id:
            del self._addresses[contact.address]
        for counter, name in (
            (self._per_ip, contact.host),
            (self._per_net, net),
        ):
            counter[name] -= 1
            if counter[name] <= 0:
                del counter[name]
        for bucket_counter, pair in (
            (self._per_ip_bucket, (index, contact.host)),
            (self._per_net_bucket, (index, net)),
        ):
            bucket_counter[pair] -= 1
            if bucket_counter[pair] <= 0:
                del bucket_counter[pair]
