"""Address records: the signed statement "mail for this user key is accepted at these endpoints".

A record is only ever trusted after :meth:`AddressRecord.verify`: the DHT carries bytes from
strangers, so the signature by the user's own key (not the storing or answering node) is what
makes a record authoritative, the sequence number orders a user's records, and the expiry lets
abandoned records die. No clock reads here: ``now`` is always an argument.

Wire format, version 1 (all integers big-endian)::

    version u8 = 1
    user_key 32 bytes          Ed25519 verify key of the user
    node_key 32 bytes          Ed25519 transport key of the accepting node
    seq u64
    expires u64                unix seconds
    endpoint count u8          1..MAX_ENDPOINTS
      host length u8, host     1..MAX_HOST_LENGTH printable ASCII bytes, no spaces
      port u16                 1..65535
    signature 64 bytes         over everything before it, context b"dht-record-v1"

There is exactly one encoding of a record (decode rejects trailing bytes, so
``decode(b).encode() == b``), which lets stores compare records byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from crypto.keys import Identity
from crypto.signing import SIGNATURE_SIZE, SignatureError, sign, verify

VERSION = 1
SIGNING_CONTEXT = b"dht-record-v1"
KEY_SIZE = 32
DHT_KEY_SIZE = 20
MAX_ENDPOINTS = 8
MAX_HOST_LENGTH = 253  # the longest DNS name
MAX_U64 = 2**64 - 1
_FIXED = struct.Struct(">B32s32sQQB")
_PORT = struct.Struct(">H")
# Largest possible encoding; far below the 8 KB that fits in one kademlia UDP datagram.
MAX_RECORD_SIZE = _FIXED.size + MAX_ENDPOINTS * (1 + MAX_HOST_LENGTH + _PORT.size) + SIGNATURE_SIZE
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


@dataclass(frozen=True)
class AddressRecord:
    """Where mail for ``user_key`` is accepted; signed by ``user_key``.

    Construction checks the shape of every field (so :meth:`encode` cannot fail); whether the
    signature is right and the record current is :meth:`verify`'s job.
    """

    user_key: bytes
    node_key: bytes
    endpoints: tuple[Endpoint, ...]
    seq: int
    expires: int
    signature: bytes

    def __post_init__(self) -> None:
        for name in ("user_key", "node_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_SIZE:
                raise RecordError(f"{name} must be {KEY_SIZE} bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise RecordError(f"signature must be {SIGNATURE_SIZE} bytes")
        for name in ("seq", "expires"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_U64:
                raise RecordError(f"{name} must be an integer in 0..2**64-1")
        if not isinstance(self.endpoints, tuple):
            raise RecordError("endpoints must be a tuple of (host, port)")
        if not 1 <= len(self.endpoints) <= MAX_ENDPOINTS:
            raise RecordError(f"a record has 1..{MAX_ENDPOINTS} endpoints")
        for endpoint in self.endpoints:
            if not isinstance(endpoint, tuple) or len(endpoint) != 2:
                raise RecordError("each endpoint is a (host, port) tuple")
            _check_host(endpoint[0])
            _check_port(endpoint[1])
        if len(set(self.endpoints)) != len(self.endpoints):
            raise RecordError("duplicate endpoints")

    @classmethod
    def create(
        cls,
        user: Identity,
        node_key: bytes,
        endpoints: Sequence[Endpoint],
        seq: int,
        expires: int,
    ) -> AddressRecord:
        """A record for ``user``'s own key, signed by ``user``."""
        unsigned = cls(
            user_key=user.verify_key,
            node_key=node_key,
            endpoints=tuple((host, port) for host, port in endpoints),
            seq=seq,
            expires=expires,
            signature=bytes(SIGNATURE_SIZE),
        )
        return dataclasses.replace(
            unsigned, signature=sign(user, SIGNING_CONTEXT, unsigned.signed_part())
        )

    def signed_part(self) -> bytes:
        """The canonical encoding of every field but the signature: what the user signs."""
        parts = [
            _FIXED.pack(
                VERSION, self.user_key, self.node_key, self.seq, self.expires, len(self.endpoints)
            )
        ]
        for host, port in self.endpoints:
            raw = host.encode("ascii")
            parts += [bytes([len(raw)]), raw, _PORT.pack(port)]
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
        if data[0] != VERSION:
            raise RecordError(f"unknown record version {data[0]}")
        if len(data) < _FIXED.size:
            raise RecordError("record truncated in its fixed header")
        _, user_key, node_key, seq, expires, count = _FIXED.unpack_from(data)
        if not 1 <= count <= MAX_ENDPOINTS:
            raise RecordError(f"endpoint count {count} is not in 1..{MAX_ENDPOINTS}")
        pos = _FIXED.size
        endpoints: list[Endpoint] = []
        for _ in range(count):
            if pos >= len(data):
                raise RecordError("record truncated in its endpoints")
            length = data[pos]
            pos += 1
            if pos + length + _PORT.size > len(data):
                raise RecordError("record truncated in its endpoints")
            try:
                host = data[pos : pos + length].decode("ascii")
            except UnicodeDecodeError:
                raise RecordError("endpoint host is not ASCII") from None
            pos += length
            (port,) = _PORT.unpack_from(data, pos)
            pos += _PORT.size
            endpoints.append((host, port))
        if len(data) - pos < SIGNATURE_SIZE:
            raise RecordError("record truncated in its signature")
        if len(data) - pos > SIGNATURE_SIZE:
            raise RecordError("trailing bytes after the signature")
        return cls(user_key, node_key, tuple(endpoints), seq, expires, data[pos:])

    def verify(self, now: float) -> None:
        """Raise RecordError unless the user's key signed this record and it has not expired."""
        try:
            verify(self.user_key, SIGNING_CONTEXT, self.signed_part(), self.signature)
        except SignatureError:
            raise RecordError("record signature does not verify for its user key") from None
        if now >= self.expires:
            raise RecordError(f"record expired at {self.expires}")

    def is_expired(self, now: float) -> bool:
        return now >= self.expires
