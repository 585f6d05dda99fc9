"""The DHT's RPC engine, sans-IO: which datagram to send, and what an arriving datagram means.

The adapter (:mod:`dht.kad.udp`, or a simulated network) only moves bytes and runs a timer; every
decision is here, with time passed in. An arriving datagram becomes exactly one event:

- :class:`IncomingRequest`: a well-formed request authenticated by its sender's key (the MAC of
  :mod:`dht.kad.wire`) and addressed to us, within its source IP's rate; answer it with
  :meth:`RpcEngine.respond`;
- :class:`IncomingReply`: a reply authenticated by the key we asked, from the address we asked,
  to a request of ours still pending, of the kind that request gets;
- :class:`Dropped`, with the reason.

Cost bounds: decoding is linear in a datagram of bounded size; a request is charged to its source
IP's token bucket and the overall bucket *before* any crypto, and to a derivation bucket before a
key is derived for a sender whose key is not cached (a MAC costs ~1 µs, a derivation about two
signature checks); a reply is checked only when it matches a pending request's id, address and
key, whose shared key our request derived. The pending table, the rate-limit table and the
cache of shared keys are bounded.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import os
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from crypto.keys import Identity
from crypto.pairing import PairError
from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import Reply, Request
from dht.limits import DEFAULT_LIMITS, DhtLimits, TokenBucket, subnet

Address = tuple[str, int]

ANY_KEY = wire.ANY_KEY
"""A Ping to this key probes an address (see :meth:`dht.kad.udp.UdpEndpoint.probe`); its sender
is not made a contact, as a captured probe could be replayed to other nodes."""


class DropReason(enum.Enum):
    MALFORMED = "malformed"
    RATE_LIMITED = "rate limited"
    OVERLOADED = "over the overall request rate"
    BAD_SIGNATURE = "bad tag"
    UNKNOWN_KEY = "over the key derivation rate"
    UNKNOWN_REQUEST = "unknown request id"
    WRONG_SENDER = "wrong sender"
    WRONG_KIND = "reply of the wrong kind"
    REPLAYED = "replayed request"
    FROM_SELF = "from our own key"


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """An authenticated request; ``contact`` is the sender's key at the datagram's source."""

    request_id: bytes
    contact: Contact
    request: Request
    digest: bytes
    size: int
    to_anyone: bool = False  # a Ping addressed to ANY_KEY: answer it, learn nothing from it
    mac_key: bytes = field(default=b"", repr=False)  # shared with the sender (b"": look it up)


@dataclass(frozen=True, slots=True)
class IncomingReply:
    """The authenticated answer to our request ``request_id``."""

    request_id: bytes
    contact: Contact
    reply: Reply


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: DropReason
    address: Address
    request_id: bytes = b""


Event = IncomingRequest | IncomingReply | Dropped


class RpcBusy(RuntimeError):
    """The pending table is full: too many requests in flight."""


@dataclass(frozen=True, slots=True)
class _Pending:
    contact: Contact
    answer: type
    digest: bytes
    deadline: float


@functools.lru_cache(maxsize=4096)
def normal_host(host: str) -> str | None:
    """One spelling per IP address (an IPv4-mapped IPv6 address is its IPv4 address), so the
    address a reply comes from compares equal to the address we sent to; None if ``host`` is
    not an IP address literal."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class RpcEngine:
    """Requests out, events in, for the node holding ``identity``.

    ``timeout`` is the same for every request, so the pending table in insertion order is also
    in deadline order and expiring is a walk from its front. ``max_pending`` bounds it;
    ``replay_window`` request ids recently answered are remembered to drop replays (a replay
    from another address would otherwise place the sender's key at the replayer's address).

    Per-IP buckets alone do not bound the work a spoofer can cause (each forged source address
    comes with a fresh burst), so every request also takes a token from one overall bucket of
    ``requests_per_second`` (bursts of twice that), and a request whose sender's key is not
    among the ``pair_cache`` cached shared keys one from ``derivations_per_second`` (bursts of
    twice that): at ~110 µs per derivation the default 1,000/s costs at most about an eighth of
    a core, as the 2,000 signature checks per second of wire version 1 did.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        limits: DhtLimits = DEFAULT_LIMITS,
        timeout: float = 1.0,
        max_pending: int = 1024,
        replay_window: int = 4096,
        requests_per_second: float = 2000.0,
        derivations_per_second: float = 1000.0,
        pair_cache: int = 256,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._pairs = wire.pair_keys(identity, pair_cache)
        self.key = identity.verify_key
        self._limits = limits
        self._timeout = timeout
        self._max_pending = max_pending
        self._replay_window = replay_window
        self._random = random_bytes
        self._pending: dict[bytes, _Pending] = {}
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        # (request id, signer) of recent requests, as the process's keyed (SipHash) hash: an
        # int instead of 40 bytes and an ordered-dict node, for each of thousands per node
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._overall = TokenBucket(requests_per_second, 2 * requests_per_second, 0.0)
        self._derivations = TokenBucket(
            derivations_per_second, 2 * derivations_per_second, 0.0
        )
        self._last_deadline = float("-inf")
        self.dropped: Counter[DropReason] = Counter()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def request(self, contact: Contact, message: Request, now: float) -> tuple[bytes, bytes]:
        """Register ``message`` to ``contact``; returns (request id, datagram to send it).

        Raises :class:`RpcBusy` when ``max_pending`` requests are already waiting, and
        :class:`dht.kad.wire.EncodeError` for a message that cannot be encoded.
        """
        host = normal_host(contact.host)
        if host is None:  # a name would be resolved, blocking, by the socket
            raise wire.EncodeError("a contact's host must be an IP address literal")
        if len(self._pending) >= self._max_pending:
            raise RpcBusy(f"{len(self._pending)} requests pending")
        request_id = self._random(wire.REQUEST_ID_SIZE)
        while request_id in self._pending:
            request_id = self._random(wire.REQUEST_ID_SIZE)
        datagram = wire.encode_request(self._pairs, contact.key, request_id, message)
        # Deadlines never go backwards, so insertion order stays deadline order.
        deadline = max(now + self._timeout, self._last_deadline)
        self._last_deadline = deadline
        target = Contact(contact.key, host, contact.port)
        self._pending[request_id] = _Pending(
            target, wire.ANSWERS[type(message)], wire.digest(datagram), deadline
        )
        return request_id, datagram

    def respond(self, incoming: IncomingRequest, reply: Reply) -> bytes:
        """The datagram answering ``incoming`` with ``reply`` (send it to its contact).

        Raises :class:`dht.kad.wire.EncodeError` if the reply cannot be sent, including one
        that would exceed the amplification bound (the wire's padding makes that impossible for
        a well-formed reply of the right kind).
        """
        if not isinstance(reply, wire.ANSWERS[type(incoming.request)]):
            raise wire.EncodeError(f"{type(reply).__name__} does not answer the request")
        datagram = wire.encode_reply(
            self._pairs, incoming.contact.key, incoming.request_id, incoming.digest, reply,
            shared=incoming.mac_key or None,
        )
        if len(datagram) > wire.reply_budget(incoming.size):
            raise wire.EncodeError("reply exceeds the amplification bound")
        return datagram

    def cancel(self, request_id: bytes) -> None:
        """Forget a pending request (its caller gave up); a late reply is then dropped."""
        self._pending.pop(request_id, None)

    def expire(self, now: float) -> list[bytes]:
        """Remove and return the ids of requests whose deadline has passed."""
        expired: list[bytes] = []
        for request_id, pending in self._pending.items():
            if pending.deadline > now:
                break
            expired.append(request_id)
        for request_id in expired:
            del self._pending[request_id]
        return expired

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing pending)."""
        for pending in self._pending.values():
            return pending.deadline
        return None

    def receive(self, datagram: bytes, address: Address, now: float) -> Event:
        """What ``datagram`` from ``address`` means; never raises for any bytes.

        A reply is matched to a pending request on its header before its body is parsed, so
        unsolicited replies cost a dictionary lookup.
        """
        source = (normal_host(address[0]) or address[0], address[1])
        try:
            kind, request_id, sender_key = wire.peek(datagram)
        except wire.DecodeError:
            return self._drop(DropReason.MALFORMED, source)
        if kind < 0x80:
            packet = self._decoded(datagram, source)
            if isinstance(packet, Dropped):
                return packet
            return self._request(packet, source, now)
        pending = self._match(request_id, sender_key, source)
        if isinstance(pending, Dropped):
            return pending
        packet = self._decoded(datagram, source)
        if isinstance(packet, Dropped):
            return packet
        return self._reply(packet, pending)

    def _decoded(self, datagram: bytes, source: Address) -> wire.Packet | Dropped:
        try:
            return wire.decode(datagram)
        except wire.DecodeError:
            return self._drop(DropReason.MALFORMED, source)

    def _drop(self, reason: DropReason, address: Address, request_id: bytes = b"") -> Dropped:
        self.dropped[reason] += 1
        return Dropped(reason, address, request_id)

    def _request(self, packet: wire.Packet, address: Address, now: float) -> Event:
        host, port = address
        if packet.sender_key == self.key:
            return self._drop(DropReason.FROM_SELF, address, packet.request_id)
        if not self._admit(host, now):
            return self._drop(DropReason.RATE_LIMITED, address, packet.request_id)
        if not self._overall.take(now):
            return self._drop(DropReason.OVERLOADED, address, packet.request_id)
        if port == 0:
            return self._drop(DropReason.MALFORMED, address, packet.request_id)
        seen = hash(packet.request_id + packet.sender_key)
        if seen in self._seen:
            return self._drop(DropReason.REPLAYED, address, packet.request_id)
        to_anyone = packet.kind == wire.KIND_PROBE
        if to_anyone and not wire.verify_request(packet, None, self.key):
            return self._drop(DropReason.BAD_SIGNATURE, address, packet.request_id)
        # A probe's answer needs the key too (its tag proves ours): charged alike, never kept.
        key = self._pairs.lookup(packet.sender_key)
        derived = key is None
        if key is None:
            if not self._derivations.take(now):
                return self._drop(DropReason.UNKNOWN_KEY, address, packet.request_id)
            try:
                key = self._pairs.derive(packet.sender_key)
            except PairError:
                return self._drop(DropReason.BAD_SIGNATURE, address, packet.request_id)
        if not to_anyone:  # (a probe teaches nothing: its replay is harmless)
            if not wire.verify_request(packet, key, self.key):
                return self._drop(DropReason.BAD_SIGNATURE, address, packet.request_id)
            if derived:
                self._pairs.remember(packet.sender_key, key)  # only keys that proved themselves
            self._seen.add(seen)
            self._seen_order.append(seen)
            if len(self._seen_order) > self._replay_window:
                self._seen.discard(self._seen_order.popleft())
        contact = Contact(packet.sender_key, host, port)
        request_digest = wire.digest(packet.covered + packet.tag)
        request = cast(Request, packet.message)
        return IncomingRequest(
            packet.request_id, contact, request, request_digest, packet.size, to_anyone, key
        )

    def _match(self, request_id: bytes, key: bytes, address: Address) -> _Pending | Dropped:
        pending = self._pending.get(request_id)
        if pending is None:
            return self._drop(DropReason.UNKNOWN_REQUEST, address, request_id)
        if pending.contact.address != address or pending.contact.key not in (key, ANY_KEY):
            return self._drop(DropReason.WRONG_SENDER, address, request_id)
        return pending

    def _reply(self, packet: wire.Packet, pending: _Pending) -> Event:
        address = pending.contact.address
        if not isinstance(packet.message, pending.answer):
            return self._drop(DropReason.WRONG_KIND, address, packet.request_id)
        # Cached when we asked, unless evicted since or this answers a probe: deriving is then
        # bounded by our own requests, and the key is kept only if the tag verifies.
        key = self._pairs.lookup(packet.sender_key)
        derived = key is None
        if key is None:
            try:
                key = self._pairs.derive(packet.sender_key)
            except PairError:
                return self._drop(DropReason.BAD_SIGNATURE, address, packet.request_id)
        if not wire.verify_reply(packet, key, self.key, pending.digest):
            return self._drop(DropReason.BAD_SIGNATURE, address, packet.request_id)
        if derived:
            self._pairs.remember(packet.sender_key, key)
        del self._pending[packet.request_id]
        contact = pending.contact
        if contact.key == ANY_KEY:  # a probe: the Pong's tag tells whose address this is
            contact = Contact(packet.sender_key, contact.host, contact.port)
        return IncomingReply(packet.request_id, contact, cast(Reply, packet.message))

    def _admit(self, host: str, now: float) -> bool:
        """Charge one request to the bucket of ``host`` (of its /64 for IPv6: one machine
        holds a whole /64). The least recently seen source is forgotten when ``tracked_ips``
        are tracked (it comes back with a full burst, which is bounded)."""
        source = subnet(host) if ":" in host else host
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = TokenBucket(
                self._limits.requests_per_ip_second, self._limits.requests_per_ip_burst, now
            )
            self._buckets[source] = bucket
            if len(self._buckets) > self._limits.tracked_ips:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(now)
