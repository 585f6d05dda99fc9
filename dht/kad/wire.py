"""The DHT datagram format: strict, sans-IO, authenticated (S/Kademlia), with no amplification.

Every datagram, request or reply, is::

    version u8 (=2) | kind u8 | request id (8 random) | sender key (32) | body | tag (16)

The sender's node id is never sent: it is derived from the key
(:func:`dht.kad.contact.node_id_for`), so a peer can only claim the id of a key it holds.

Authentication (version 2): the tag is a MAC (keyed BLAKE2b, :mod:`crypto.pairing`) under the
key the sender and the recipient share, derived from static-static X25519 of their two Ed25519
keys. Version 1 signed every datagram with Ed25519; two signatures and two checks per round trip
were most of a lookup's CPU with hundreds of nodes per core. A MAC costs ~1 µs; the shared key
costs about two signature checks once per peer and is cached (:class:`crypto.pairing.PairKeys`).

- a request's tag covers the sender's key, then the recipient's key, then the datagram before
  the tag; a reply's covers the sender's key, the recipient's key, the SHA-256 of the whole
  request datagram it answers (:func:`digest`) and the reply before the tag. Each kind has its
  own MAC context, so a request's tag is no reply's.

Why that keeps every property the signatures gave:

- *An id cannot be claimed without its key.* Only a holder of one of the two secret keys can
  compute the shared key (Diffie-Hellman), and the recipient knows it did not make the datagram,
  so a valid tag means the sender holds the key in the header: a contact learned from a request,
  and an answer, are bound to their key. Keys outside the prime-order subgroup are refused, so
  one secret cannot stand for several keys (ids).
- *No reflection.* The sender's key comes first in what is MACed: a datagram we sent, sent back
  to us (or relabelled with the other end's key), is checked with the keys in the other order
  and fails; our own key as sender is dropped before any check.
- *A captured request cannot be replayed to another node*: the shared key and the recipient key
  in the tag belong to one pair. Replays to the same node are dropped by request id
  (:class:`dht.kad.rpc.RpcEngine`'s replay window), as before.
- *A reply binds to the exact request it answers*: its tag covers the request's digest, which
  covers the request id, both keys, the target or key and any stored value.
- *Tampering* with any byte (header and padding included) changes what the tag covers.
- *Bounded work for strangers*: deriving a key for an unknown sender costs about two signature
  checks; the engine charges the per-IP bucket, then the overall bucket, then (only when the key
  is not cached) a derivation bucket, before deriving, and keeps only keys whose tag verified.

What a MAC does not give, unlike a signature: a third party cannot check it (nobody needs to:
records, which are passed on, stay signed by their owner), and whoever steals a node's secret
key can pose as anyone to that node (it is that node's identity: it is lost anyway).

A probe (a Ping to :data:`ANY_KEY`, to an address whose key is unknown) carries an all-zero tag:
no key is shared yet. Its receiver learns nothing from it and answers a Pong MACed with the key it
shares with the key in the probe's header, which proves the answerer's key to the prober; the
Pong is no larger than the probe.

Bodies (all integers big-endian; padding bytes must be zero; nothing may trail)::

    Ping       (nothing)
    FindNode   target (20) | zero padding to FIND_NODE_SIZE
    FindValue  key (20) | zero padding to FIND_VALUE_SIZE
    Store      key (20) | value length u16 | value (0..MAX_RECORD_SIZE)
    Pong       (nothing)
    Nodes      count u8 (0..MAX_REPLY_CONTACTS) | contacts
    Value      value length u16 | value (0..MAX_RECORD_SIZE) | count u8 | contacts
    Stored     accepted u8 (0 or 1)
    contact    key (32) | family u8 (4 or 6) | IPv4 (4) or IPv6 (16) address | port u16 (1..65535)

No amplification: each request kind has a fixed minimum size (padding) such that the largest
reply to it is at most :data:`AMPLIFICATION` times the request, so a spoofed source gets back at
most three times what the spoofer sent (QUIC's bound). Sizes: Ping/Pong 58 bytes; FindNode 360
and Nodes <= 1,079 (fits a 1,200-byte datagram); Stored 59. FindValue is the exception to
"one small datagram": a Value reply may carry a record of up to ``MAX_RECORD_SIZE`` (6,424) bytes
plus k contacts (<= 7,505 bytes), so FindValue is padded to 2,502 bytes; Store carries its value.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from dataclasses import dataclass

from crypto import pairing
from crypto.keys import Identity
from crypto.pairing import TAG_SIZE, PairError, PairKeys
from dht.kad.contact import ID_SIZE, KEY_SIZE, Contact
from dht.kad.messages import (
    MAX_REPLY_CONTACTS,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Reply,
    Request,
    Store,
    Stored,
    Value,
)
from dht.records import MAX_RECORD_SIZE

VERSION = 2
REQUEST_ID_SIZE = 8
AMPLIFICATION = 3
"""A reply is at most this many times the size of the request it answers."""

_HEADER = struct.Struct(f">BB{REQUEST_ID_SIZE}s{KEY_SIZE}s")
OVERHEAD = _HEADER.size + TAG_SIZE
"""Bytes every datagram spends on header and tag (58)."""

PAIR_CONTEXT = b"dht-pair-v2"
"""What the keys two nodes share (:mod:`crypto.pairing`) are for: DHT datagrams only."""
_REQUEST_CONTEXT = b"dht-request-v2"
_REPLY_CONTEXT = b"dht-reply-v2"
_NO_TAG = bytes(TAG_SIZE)

KIND_PING, KIND_FIND_NODE, KIND_FIND_VALUE, KIND_STORE = 0x01, 0x02, 0x03, 0x04
KIND_PONG, KIND_NODES, KIND_VALUE, KIND_STORED = 0x81, 0x82, 0x83, 0x84
KIND_PROBE = 0x05
"""A Ping to :data:`ANY_KEY`: the header says so; it carries no tag (no key is shared yet)."""
ANY_KEY = bytes(KEY_SIZE)
"""The recipient key of a Ping to an address whose key is unknown (a bootstrap peer given by
address): whoever answers there proves its key by the Pong's tag."""
_REQUEST_KINDS: dict[type, int] = {
    Ping: KIND_PING,
    FindNode: KIND_FIND_NODE,
    FindValue: KIND_FIND_VALUE,
    Store: KIND_STORE,
}
_REPLY_KINDS: dict[type, int] = {
    Pong: KIND_PONG,
    Nodes: KIND_NODES,
    Value: KIND_VALUE,
    Stored: KIND_STORED,
}
ANSWERS: dict[type, type] = {Ping: Pong, FindNode: Nodes, FindValue: Value, Store: Stored}
"""The one reply type each request type gets."""

MAX_CONTACT_SIZE = KEY_SIZE + 1 + 16 + 2
MAX_CONTACTS_SIZE = 1 + MAX_REPLY_CONTACTS * MAX_CONTACT_SIZE
MAX_NODES_SIZE = OVERHEAD + MAX_CONTACTS_SIZE
MAX_VALUE_SIZE = OVERHEAD + 2 + MAX_RECORD_SIZE + MAX_CONTACTS_SIZE


def _padded(largest_reply: int) -> int:
    return -(-largest_reply // AMPLIFICATION)


PING_SIZE = OVERHEAD
FIND_NODE_SIZE = max(OVERHEAD + ID_SIZE, _padded(MAX_NODES_SIZE))
FIND_VALUE_SIZE = max(OVERHEAD + ID_SIZE, _padded(MAX_VALUE_SIZE))
MAX_STORE_SIZE = OVERHEAD + ID_SIZE + 2 + MAX_RECORD_SIZE
MAX_DATAGRAM_SIZE = max(MAX_VALUE_SIZE, MAX_STORE_SIZE, FIND_VALUE_SIZE)
"""The largest datagram this format allows; anything longer is malformed before any work."""


class DecodeError(ValueError):
    """The bytes are not a well-formed datagram of this version; the only error decode raises."""


class EncodeError(ValueError):
    """The message cannot be sent (a value too large, a contact that is not an IP literal)."""


class UnusableKey(EncodeError):
    """The recipient's key is not a valid public key: no key can be shared with it, and no
    node can answer for it (a peer may name such a contact; asking it fails at once)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded but not yet verified datagram; :func:`verify_request`/`verify_reply` check it.

    Kept apart from verification so the caller can rate-limit or match a reply to a pending
    request (cheap) before paying for a key derivation.
    """

    kind: int
    request_id: bytes
    sender_key: bytes
    message: Request | Reply
    covered: bytes  # the datagram before the tag
    tag: bytes
    size: int

    @property
    def is_request(self) -> bool:
        return self.kind < 0x80


def digest(datagram: bytes) -> bytes:
    """What a reply's tag binds it to: the whole request datagram."""
    return hashlib.sha256(datagram).digest()


def pair_keys(identity: Identity, size: int = 256) -> PairKeys:
    """The cache of keys ``identity`` shares with peers for datagrams (``size`` kept)."""
    return PairKeys(identity, PAIR_CONTEXT, size)


# -- encoding -------------------------------------------------------------------------------


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _packed_ip(host: str) -> bytes:
    """Family byte and address, one encoding per address: IPv4-mapped IPv6 is sent as IPv4.

    inet_pton, not :mod:`ipaddress` (several times slower, and it accepts "%scope" suffixes
    that mean nothing to another host).
    """
    try:
        return b"\4" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        raise EncodeError("a contact's host must be an IP address literal") from None
    if packed.startswith(_MAPPED_PREFIX):
        return b"\4" + packed[12:]
    if "." in socket.inet_ntop(socket.AF_INET6, packed):
        raise EncodeError("an IPv4-compatible IPv6 address is not a contact")
    return b"\6" + packed


def _contact(contact: Contact) -> bytes:
    if not 1 <= contact.port <= 0xFFFF:
        raise EncodeError("a contact's port must be 1..65535")
    return contact.key + _packed_ip(contact.host) + contact.port.to_bytes(2, "big")


_ENCODED: dict[tuple[bytes, str, int], bytes] = {}
_ENCODED_MAX = 4096
"""Contacts encoded lately (per process): the same contacts go out in answer after answer.
Keyed by a tuple, whose hash is computed in C from the parts' cached hashes."""


def _contacts(contacts: tuple[Contact, ...]) -> bytes:
    if len(contacts) > MAX_REPLY_CONTACTS:
        raise EncodeError(f"at most {MAX_REPLY_CONTACTS} contacts in a reply")
    parts = [bytes([len(contacts)])]
    known = _ENCODED
    for contact in contacts:
        at = (contact.key, contact.host, contact.port)
        packed = known.get(at)
        if packed is None:
            packed = _contact(contact)
            if len(known) >= _ENCODED_MAX:
                known.clear()
            known[at] = packed
        parts.append(packed)
    return b"".join(parts)


def _value(value: bytes) -> bytes:
    if len(value) > MAX_RECORD_SIZE:
        raise EncodeError(f"a value is at most {MAX_RECORD_SIZE} bytes")
    return len(value).to_bytes(2, "big") + value


def _id(value: bytes) -> bytes:
    if len(value) != ID_SIZE:
        raise EncodeError(f"a target or key is {ID_SIZE} bytes")
    return value


def _request_body(request: Request) -> bytes:
    if isinstance(request, Ping):
        return b""
    if isinstance(request, FindNode):
        return _id(request.target).ljust(FIND_NODE_SIZE - OVERHEAD, b"\0")
    if isinstance(request, FindValue):
        return _id(request.key).ljust(FIND_VALUE_SIZE - OVERHEAD, b"\0")
    return _id(request.key) + _value(request.value)


def _reply_body(reply: Reply) -> bytes:
    if isinstance(reply, Pong):
        return b""
    if isinstance(reply, Nodes):
        return _contacts(reply.contacts)
    if isinstance(reply, Value):
        return _value(reply.value) + _contacts(reply.contacts)
    return b"\1" if reply.accepted else b"\0"


def _check_id(request_id: bytes) -> None:
    if len(request_id) != REQUEST_ID_SIZE:
        raise EncodeError(f"a request id is {REQUEST_ID_SIZE} bytes")


def encode_request(
    pairs: PairKeys, recipient_key: bytes, request_id: bytes, request: Request
) -> bytes:
    """``request`` to the holder of ``recipient_key``, MACed with the key ``pairs`` shares
    with it (a probe, to :data:`ANY_KEY`, gets the all-zero tag)."""
    _check_id(request_id)
    kind = _REQUEST_KINDS[type(request)]
    if recipient_key == ANY_KEY:
        if kind != KIND_PING:
            raise EncodeError("only a Ping may go to an address whose key is unknown")
        kind = KIND_PROBE
    head = _HEADER.pack(VERSION, kind, request_id, pairs.own_key)
    covered = head + _request_body(request)
    if kind == KIND_PROBE:
        return covered + _NO_TAG
    key = _shared(pairs, recipient_key)
    return covered + pairing.mac(key, _REQUEST_CONTEXT, pairs.own_key, recipient_key, covered)


def encode_reply(
    pairs: PairKeys,
    recipient_key: bytes,
    request_id: bytes,
    request_digest: bytes,
    reply: Reply,
    *,
    shared: bytes | None = None,
) -> bytes:
    """``reply`` to the request whose :func:`digest` is ``request_digest``, sent to the holder of
    ``recipient_key`` and MACed with the key ``pairs`` shares with it (``shared``, when the
    caller already holds it)."""
    _check_id(request_id)
    head = _HEADER.pack(VERSION, _REPLY_KINDS[type(reply)], request_id, pairs.own_key)
    covered = head + _reply_body(reply)
    key = shared if shared is not None else _shared(pairs, recipient_key)
    tag = pairing.mac(key, _REPLY_CONTEXT, pairs.own_key, recipient_key, request_digest, covered)
    return covered + tag


def _shared(pairs: PairKeys, peer_key: bytes) -> bytes:
    try:
        return pairs.shared(peer_key)
    except PairError:
        raise UnusableKey("the recipient's key is not a usable public key") from None


def reply_budget(request_size: int) -> int:
    """The most we may send in answer to a request datagram of ``request_size`` bytes."""
    return AMPLIFICATION * request_size


# -- decoding -------------------------------------------------------------------------------


_V4_CONTACT = KEY_SIZE + 1 + 4 + 2
_V6_CONTACT = KEY_SIZE + 1 + 16 + 2
_DECODED: dict[bytes, Contact] = {}
_DECODED_MAX = 4096
"""Contacts decoded lately, by their bytes (per process, shared by the nodes in it: a Contact
is immutable, and its bytes say everything it holds)."""


class _Reader:
    """Bounds-checked reads; every short read is a DecodeError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise DecodeError("datagram too short")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def value(self) -> bytes:
        size = self.u16()
        if size > MAX_RECORD_SIZE:
            raise DecodeError(f"value of {size} bytes exceeds {MAX_RECORD_SIZE}")
        return self.take(size)

    def contact(self) -> Contact:
        key = self.take(KEY_SIZE)
        family = self.byte()
        if family == 4:
            host = socket.inet_ntop(socket.AF_INET, self.take(4))
        elif family == 6:
            # inet_ntop writes the RFC 5952 form, as ipaddress does (15x slower), except that
            # it writes IPv4-mapped and -compatible addresses dotted: those are not contacts.
            host = socket.inet_ntop(socket.AF_INET6, self.take(16))
            if "." in host:
                raise DecodeError("an IPv4 contact is sent as IPv4")
        else:
            raise DecodeError("unknown address family")
        port = self.u16()
        if port == 0:
            raise DecodeError("contact port 0")
        return Contact(key, host, port)

    def contacts(self) -> tuple[Contact, ...]:
        count = self.byte()
        if count > MAX_REPLY_CONTACTS:
            raise DecodeError(f"{count} contacts exceed {MAX_REPLY_CONTACTS}")
        found: list[Contact] = []
        data, known = self._data, _DECODED
        for _ in range(count):
            # The same contacts come back in answer after answer: the bytes of one we decoded
            # before name the same (immutable) Contact, without parsing or hashing its key.
            start = self._pos
            family = data[start + KEY_SIZE] if start + KEY_SIZE < len(data) else 0
            raw = data[start : start + (_V4_CONTACT if family == 4 else _V6_CONTACT)]
            contact = known.get(raw)
            if contact is None:
                contact = self.contact()
                if len(known) >= _DECODED_MAX:
                    known.clear()  # bounded; strangers' junk only costs the speed-up
                known[data[start : self._pos]] = contact
            else:
                self._pos = start + len(raw)
            found.append(contact)
        return tuple(found)


    def padding(self) -> None:
        if any(self._data[self._pos :]):
            raise DecodeError("non-zero padding")
        self._pos = len(self._data)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError("trailing bytes")


def _body(kind: int, reader: _Reader, size: int) -> Request | Reply:
    message: Request | Reply
    if kind in (KIND_PING, KIND_PROBE):
        message = Ping()
    elif kind == KIND_FIND_NODE:
        if size != FIND_NODE_SIZE:
            raise DecodeError("FIND_NODE is not padded to its size")
        message = FindNode(reader.take(ID_SIZE))
        reader.padding()
    elif kind == KIND_FIND_VALUE:
        if size != FIND_VALUE_SIZE:
            raise DecodeError("FIND_VALUE is not padded to its size")
        message = FindValue(reader.take(ID_SIZE))
        reader.padding()
    elif kind == KIND_STORE:
        message = Store(reader.take(ID_SIZE), reader.value())
    elif kind == KIND_PONG:
        message = Pong()
    elif kind == KIND_NODES:
        message = Nodes(reader.contacts())
    elif kind == KIND_VALUE:
        value = reader.value()
        message = Value(value, reader.contacts())
    elif kind == KIND_STORED:
        flag = reader.byte()
        if flag > 1:
            raise DecodeError("STORED flag is not 0 or 1")
        message = Stored(flag == 1)
    else:
        raise DecodeError(f"unknown message kind {kind:#04x}")
    reader.end()
    return message


def peek(datagram: bytes) -> tuple[int, bytes, bytes]:
    """(kind, request id, sender key) from the header alone, so a reply can be matched to a
    pending request before its body is parsed; raises only :class:`DecodeError`."""
    size = len(datagram)
    if size > MAX_DATAGRAM_SIZE:
        raise DecodeError("datagram too long")
    if size < OVERHEAD:
        raise DecodeError("datagram too short")
    version, kind, request_id, sender_key = _HEADER.unpack_from(datagram)
    if version != VERSION:
        raise DecodeError(f"unknown version {version}")
    return kind, request_id, sender_key


def decode(datagram: bytes) -> Packet:
    """Parse ``datagram`` strictly; raises only :class:`DecodeError`. Does not verify."""
    kind, request_id, sender_key = peek(datagram)
    size = len(datagram)
    covered = bytes(datagram[:-TAG_SIZE])
    reader = _Reader(covered)
    reader.take(_HEADER.size)
    message = _body(kind, reader, size)
    return Packet(kind, request_id, sender_key, message, covered, bytes(datagram[-TAG_SIZE:]), size)


def verify_request(packet: Packet, key: bytes | None, own_key: bytes) -> bool:
    """Whether the request was MACed with ``key`` (the one its sender's key shares with our
    ``own_key``) and addressed to ``own_key``; a probe instead must carry the all-zero tag (its
    ``key`` is not used and may be None)."""
    if packet.kind == KIND_PROBE:
        return packet.tag == _NO_TAG
    if key is None:
        return False
    return pairing.check(
        key, _REQUEST_CONTEXT, packet.tag, packet.sender_key, own_key, packet.covered
    )


def verify_reply(packet: Packet, key: bytes, own_key: bytes, request_digest: bytes) -> bool:
    """Whether the reply was MACed with ``key`` (the one its sender's key shares with our
    ``own_key``), to us, for the request with this digest."""
    return pairing.check(
        key, _REPLY_CONTEXT, packet.tag, packet.sender_key, own_key, request_digest,
        packet.covered,
    )
