"""Address records: the signed statement "mail for this user key is accepted at these endpoints".

A record is only ever trusted after :meth:`AddressRecord.verify`: the DHT carries bytes from
strangers, so the signature by the user's own key (not the storing or answering node) is what
makes a record authoritative, the sequence number orders a user's records, and the expiry lets
abandoned records die. No clock reads here: ``now`` is always an argument.

Version 2 adds what a sender needs when the user's node is away or cannot be dialled at all:
the friends' nodes that agreed to hold sealed mail for the user (relays), and whether the node
accepts inbound connections. New records are always version 2; version 1 records (from nodes not
yet upgraded) still decode, verify and re-encode byte for byte, as a record without relays
whose node accepts connections.

Wire format (all integers big-endian)::

    version u8                 1 or 2
    user_key 32 bytes          Ed25519 verify key of the user
    node_key 32 bytes          Ed25519 transport key of the accepting node
    seq u64
    expires u64                unix seconds
    flags u8                   version 2 only: bit 0 set = no inbound connections (never
                               dial this node); every other bit must be 0
    endpoint count u8          1..MAX_ENDPOINTS (0..MAX_ENDPOINTS when bit 0 of flags is set)
      host length u8, host     1..MAX_HOST_LENGTH printable ASCII bytes, no spaces
      port u16                 1..65535
    relay count u8             version 2 only: 0..MAX_RELAYS
      node_key 32 bytes        the relay node's transport key: distinct, not the record's
      endpoint count u8        1..MAX_RELAY_ENDPOINTS, each encoded as above
    signature 64 bytes         over everything before it, context b"dht-record-v1" for
                               version 1 and b"dht-record-v2" for version 2

There is exactly one encoding of a record (decode rejects trailing bytes, so
``decode(b).encode() == b``), which lets stores compare records byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from crypto.keys import Identity
from crypto.signing import SIGNATURE_SIZE, SignatureError, sign, verify

VERSION = 2  # what new records are encoded as
SIGNING_CONTEXTS = {1: b"dht-record-v1", 2: b"dht-record-v2"}
SIGNING_CONTEXT = SIGNING_CONTEXTS[VERSION]
KEY_SIZE = 32
DHT_KEY_SIZE = 20
MAX_ENDPOINTS = 8
MAX_RELAYS = 4
MAX_RELAY_ENDPOINTS = 4
MAX_HOST_LENGTH = 253  # the longest DNS name
MAX_U64 = 2**64 - 1
FLAG_NO_INBOUND = 0x01
_HEAD = struct.Struct(">B32s32sQQ")
_PORT = struct.Struct(">H")
_MAX_ENDPOINT_SIZE = 1 + MAX_HOST_LENGTH + _PORT.size
# Largest possible encoding (a version 2 record); well within the DHT's 8 KB value limit
# (dht.storage.MAX_VALUE_SIZE), so it fits one kademlia UDP datagram.
MAX_RECORD_SIZE = (
    _HEAD.size
    + 2  # flags, endpoint count
    + MAX_ENDPOINTS * _MAX_ENDPOINT_SIZE
    + 1  # relay count
    + MAX_RELAYS * (KEY_SIZE + 1 + MAX_RELAY_ENDPOINTS * _MAX_ENDPOINT_SIZE)
    + SIGNATURE_SIZE
)
_DHT_KEY_LABEL = b"mailnode-dht-address-v1\0"

Endpoint = tuple[str, int]


class RecordError(ValueError):
    """A record that is malformed, wrongly signed, expired or otherwise not to be trusted."""


def dht_key(user_key: bytes) -> bytes:
    """The 20-byte Kademlia key under which ``user_key``'s address record lives.

    Domain-separated so these keys never collide with any other use of the DHT's key space.
    """
    if len(user_key) != KEY_SIZE:
        raise RecordError("a user key is 32 bytes")
    return hashlib.sha1(_DHT_KEY_LABEL + user_key).digest()


def _check_host(host: object) -> str:
    if not isinstance(host, str):
        raise RecordError("endpoint host must be a string")
    try:
        raw = host.encode("ascii")
    except UnicodeEncodeError:
        raise RecordError(f"endpoint host {host!r} is not ASCII") from None
    if not 1 <= len(raw) <= MAX_HOST_LENGTH:
        raise RecordError(f"endpoint host must be 1..{MAX_HOST_LENGTH} characters")
    if any(not 0x21 <= b <= 0x7E for b in raw):
        raise RecordError(f"endpoint host {host!r} contains spaces or control characters")
    return host


def _check_port(port: object) -> int:
    if type(port) is not int or not 1 <= port <= 65535:
        raise RecordError(f"endpoint port {port!r} is not in 1..65535")
    return port


def _check_key(value: object, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != KEY_SIZE:
        raise RecordError(f"{name} must be {KEY_SIZE} bytes")


def _check_endpoints(endpoints: object, least: int, most: int, whose: str) -> None:
    if not isinstance(endpoints, tuple):
        raise RecordError(f"{whose} endpoints must be a tuple of (host, port)")
    if not least <= len(endpoints) <= most:
        raise RecordError(f"{whose} has {least}..{most} endpoints")
    for endpoint in endpoints:
        if not isinstance(endpoint, tuple) or len(endpoint) != 2:
            raise RecordError("each endpoint is a (host, port) tuple")
        _check_host(endpoint[0])
        _check_port(endpoint[1])
    if len(set(endpoints)) != len(endpoints):
        raise RecordError(f"duplicate endpoints in {whose}")


def _encode_endpoints(endpoints: tuple[Endpoint, ...]) -> list[bytes]:
    parts = [bytes([len(endpoints)])]
    for host, port in endpoints:
        raw = host.encode("ascii")
        parts += [bytes([len(raw)]), raw, _PORT.pack(port)]
    return parts


@dataclass(frozen=True)
class Relay:
    """A friend's node that agreed to hold sealed mail for this user while its node is away."""

    node_key: bytes  # 32-byte Ed25519 transport key of the relay node
    endpoints: tuple[Endpoint, ...]  # 1..MAX_RELAY_ENDPOINTS transfer endpoints

    def __post_init__(self) -> None:
        _check_key(self.node_key, "relay node_key")
        _check_endpoints(self.endpoints, 1, MAX_RELAY_ENDPOINTS, "a relay")


@dataclass(frozen=True)
class AddressRecord:
    """Where mail for ``user_key`` is accepted; signed by ``user_key``.

    Construction checks the shape of every field (so :meth:`encode` cannot fail); whether the
    signature is right and the record current is :meth:`verify`'s job. ``version`` is how the
    record is encoded: 2 for every record made here, 1 for an old one decoded from the DHT
    (which has no relays and accepts inbound connections).
    """

    user_key: bytes
    node_key: bytes
    endpoints: tuple[Endpoint, ...]
    seq: int
    expires: int
    signature: bytes
    relays: tuple[Relay, ...] = ()
    inbound: bool = True  # False: never dial this node; its mail goes to its relays
    version: int = field(default=VERSION, kw_only=True)

    def __post_init__(self) -> None:
        _check_key(self.user_key, "user_key")
        _check_key(self.node_key, "node_key")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise RecordError(f"signature must be {SIGNATURE_SIZE} bytes")
        for name in ("seq", "expires"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_U64:
                raise RecordError(f"{name} must be an integer in 0..2**64-1")
        if self.version not in SIGNING_CONTEXTS:
            raise RecordError(f"unknown record version {self.version!r}")
        if type(self.inbound) is not bool:
            raise RecordError("inbound must be True or False")
        if not isinstance(self.relays, tuple) or not all(
            isinstance(r, Relay) for r in self.relays
        ):
            raise RecordError("relays must be a tuple of Relay")
        if self.version == 1 and (self.relays or not self.inbound):
            raise RecordError("a version 1 record has no relays and accepts inbound connections")
        # a node nobody may dial needs no endpoint; one that is dialled needs at least one
        _check_endpoints(self.endpoints, 1 if self.inbound else 0, MAX_ENDPOINTS, "a record")
        if len(self.relays) > MAX_RELAYS:
            raise RecordError(f"a record has 0..{MAX_RELAYS} relays")
        keys = {relay.node_key for relay in self.relays}
        if len(keys) != len(self.relays):
            raise RecordError("duplicate relays")
        if self.node_key in keys:
            raise RecordError("a node is not its own relay")

    @classmethod
    def create(
        cls,
        user: Identity,
        node_key: bytes,
        endpoints: Sequence[Endpoint],
        seq: int,
        expires: int,
        *,
        relays: Sequence[Relay] = (),
        inbound: bool = True,
    ) -> AddressRecord:
        """A (version 2) record for ``user``'s own key, signed by ``user``."""
        unsigned = cls(
            user_key=user.verify_key,
            node_key=node_key,
            endpoints=tuple((host, port) for host, port in endpoints),
            seq=seq,
            expires=expires,
            signature=bytes(SIGNATURE_SIZE),
            relays=tuple(relays),
            inbound=inbound,
        )
        return dataclasses.replace(
            unsigned, signature=sign(user, SIGNING_CONTEXT, unsigned.signed_part())
        )

    def signed_part(self) -> bytes:
        """The canonical encoding of every field but the signature: what the user signs."""
        parts = [_HEAD.pack(self.version, self.user_key, self.node_key, self.seq, self.expires)]
        if self.version >= 2:
            parts.append(bytes([0 if self.inbound else FLAG_NO_INBOUND]))
        parts += _encode_endpoints(self.endpoints)
        if self.version >= 2:
            parts.append(bytes([len(self.relays)]))
            for relay in self.relays:
                parts.append(relay.node_key)
                parts += _encode_endpoints(relay.endpoints)
        return b"".join(parts)

    def encode(self) -> bytes:
        """The canonical wire form (at most :data:`MAX_RECORD_SIZE` bytes)."""
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> AddressRecord:
        """Parse the wire form; raises RecordError saying what is wrong. Does not verify."""
        if not isinstance(data, bytes):
            raise RecordError("a record is bytes")
        if len(data) > MAX_RECORD_SIZE:
            raise RecordError(f"record of {len(data)} bytes exceeds {MAX_RECORD_SIZE}")
        if not data:
            raise RecordError("empty record")
        version = data[0]
        if version not in SIGNING_CONTEXTS:
            raise RecordError(f"unknown record version {version}")
        reader = _Reader(data)
        _, user_key, node_key, seq, expires = _HEAD.unpack(reader.take(_HEAD.size, "header"))
        inbound = True
        if version >= 2:
            flags = reader.byte("header")
            if flags & ~FLAG_NO_INBOUND:
                raise RecordError(f"unknown flag bits {flags:#04x}")
            inbound = not flags & FLAG_NO_INBOUND
        endpoints = reader.endpoints(1 if inbound else 0, MAX_ENDPOINTS, "endpoint")
        relays: list[Relay] = []
        if version >= 2:
            count = reader.byte("relays")
            if count > MAX_RELAYS:
                raise RecordError(f"relay count {count} is not in 0..{MAX_RELAYS}")
            for _ in range(count):
                relay_key = reader.take(KEY_SIZE, "relays")
                relay_endpoints = reader.endpoints(1, MAX_RELAY_ENDPOINTS, "relay endpoint")
                relays.append(Relay(relay_key, relay_endpoints))
        remaining = len(data) - reader.pos
        if remaining < SIGNATURE_SIZE:
            raise RecordError("record truncated in its signature")
        if remaining > SIGNATURE_SIZE:
            raise RecordError("trailing bytes after the signature")
        return cls(
            user_key, node_key, endpoints, seq, expires, data[reader.pos :],
            tuple(relays), inbound, version=version,
        )

    def verify(self, now: float) -> None:
        """Raise RecordError unless the user's key signed this record and it has not expired."""
        try:
            verify(
                self.user_key, SIGNING_CONTEXTS[self.version], self.signed_part(), self.signature
            )
        except SignatureError:
            raise RecordError("record signature does not verify for its user key") from None
        if now >= self.expires:
            raise RecordError(f"record expired at {self.expires}")

    def is_expired(self, now: float) -> bool:
        return now >= self.expires


class _Reader:
    """A cursor over a record's bytes whose every read is bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, part: str) -> bytes:
        if self.pos + size > len(self.data):
            raise RecordError(f"record truncated in its {part}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def byte(self, part: str) -> int:
        return self.take(1, part)[0]

    def endpoints(self, least: int, most: int, what: str) -> tuple[Endpoint, ...]:
        """A count byte and that many endpoints (shape only; the record checks the rest)."""
        count = self.byte(f"{what}s")
        if not least <= count <= most:
            raise RecordError(f"{what} count {count} is not in {least}..{most}")
        endpoints = []
        for _ in range(count):
            host = self.take(self.byte(f"{what}s"), f"{what}s")
            (port,) = _PORT.unpack(self.take(_PORT.size, f"{what}s"))
            try:
                endpoints.append((host.decode("ascii"), port))
            except UnicodeDecodeError:
                raise RecordError("endpoint host is not ASCII") from None
        return tuple(endpoints)
