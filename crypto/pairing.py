"""Keys two identities share without a handshake (static-static X25519 from their Ed25519 keys),
and the MAC made with them.

Why: the DHT authenticates every datagram. An Ed25519 signature and its check cost ~60 µs each,
four per round trip, and with hundreds of nodes on one core that was most of a lookup's time. A
MAC under a key only the two ends can compute costs ~1 µs; the key costs one conversion of the
peer's key and one X25519 (~110 µs, about two signature checks) once per peer, then is cached.

What the shared key gives, and what the caller must add:

- only a holder of one of the two secret keys can compute it (Diffie-Hellman on Curve25519), so
  a valid MAC proves that the sender holds *its* key or *ours*;
- the peer's key must be a canonical point of the prime-order subgroup (libsodium's conversion
  checks it, small-order points included), so one secret cannot answer for several encodings of
  its public key (several node ids);
- it is derived with keyed BLAKE2b over a context label and both Ed25519 keys (in a fixed
  order), so it serves one purpose only and is bound to exactly this pair of identities;
- a MAC does not say which end made it: a caller puts the sender's key first in what it MACs,
  so a datagram cannot be reflected back to the key that made it. A peer who learns our secret
  can also pose as anyone to us (key-compromise impersonation): a node's key is its identity,
  and a stolen one is lost anyway.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections import OrderedDict

from nacl.bindings import crypto_scalarmult, crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError

from crypto.keys import Identity

TAG_SIZE = 16
KEY_SIZE = 32
CURVE_CACHE = 2048
"""Peers' keys converted to X25519 lately, per process. The conversion (with its check that
the point is in the prime-order subgroup) costs ~115 µs, more than the X25519 itself (~100
µs), and depends on the public key only: a node re-deriving for a peer its pair cache
evicted, or several nodes in one process (the simulations) meeting the same peer, convert
it once. About 0.5 MB when full; failures are not kept (strangers' junk keys are charged to
the caller's derivation rate instead)."""


class PairError(ValueError):
    """The peer's key is not one a shared key can be derived with."""


def _label(context: bytes) -> bytes:
    if b"\0" in context:
        raise ValueError("context labels may not contain NUL")
    return b"mailnode:" + context + b"\0"


def derive(identity: Identity, peer_key: bytes, context: bytes) -> bytes:
    """The key ``identity`` shares with the holder of Ed25519 key ``peer_key`` for ``context``.

    Raises :class:`PairError` for a key that is not a valid point of the prime-order subgroup.
    """
    return _derive(bytes(identity.box_private_key), identity.verify_key, peer_key, context)


@functools.lru_cache(maxsize=CURVE_CACHE)
def _curve_key(peer_key: bytes) -> bytes:
    """``peer_key`` as an X25519 key; raises :class:`PairError` (not cached)."""
    if len(peer_key) != 32:
        raise PairError("an Ed25519 public key is 32 bytes")
    try:
        return crypto_sign_ed25519_pk_to_curve25519(peer_key)
    except (CryptoError, RuntimeError, ValueError) as exc:
        raise PairError("not a usable Ed25519 public key") from exc


def _derive(secret: bytes, own_key: bytes, peer_key: bytes, context: bytes) -> bytes:
    curve_key = _curve_key(peer_key)
    try:
        shared = crypto_scalarmult(secret, curve_key)
    except (CryptoError, RuntimeError, ValueError) as exc:
        raise PairError("not a usable Ed25519 public key") from exc
    low, high = sorted((own_key, peer_key))
    return hashlib.blake2b(_label(context) + low + high, key=shared, digest_size=KEY_SIZE).digest()


def mac(key: bytes, context: bytes, *parts: bytes) -> bytes:
    """A TAG_SIZE-byte tag over ``parts`` (concatenated) under ``key``, for ``context`` only."""
    state = hashlib.blake2b(_label(context), key=key, digest_size=TAG_SIZE)
    for part in parts:
        state.update(part)
    return state.digest()


def check(key: bytes, context: bytes, tag: bytes, *parts: bytes) -> bool:
    """Whether ``tag`` is the MAC of ``parts`` under ``key`` for ``context`` (constant time)."""
    return hmac.compare_digest(mac(key, context, *parts), tag)


class PairKeys:
    """The keys ``identity`` shares with its peers for ``context``; the ``size`` most recently
    used are kept, so memory is bounded whatever keys strangers claim.

    :meth:`lookup` never derives, so a caller can charge a rate limit before :meth:`derive`
    (the expensive step) and :meth:`remember` only keys that proved useful.
    """

    def __init__(self, identity: Identity, context: bytes, size: int = 256) -> None:
        self.own_key = identity.verify_key
        self._secret = bytes(identity.box_private_key)
        self._context = context
        self._size = size
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self.derivations = 0

    def __len__(self) -> int:
        return len(self._cache)

    def lookup(self, peer_key: bytes) -> bytes | None:
        key = self._cache.get(peer_key)
        if key is not None:
            self._cache.move_to_end(peer_key)
        return key

    def derive(self, peer_key: bytes) -> bytes:
        """Derive (not cached); raises :class:`PairError`."""
        self.derivations += 1
        return _derive(self._secret, self.own_key, peer_key, self._context)

    def remember(self, peer_key: bytes, key: bytes) -> None:
        self._cache[peer_key] = key
        self._cache.move_to_end(peer_key)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)

    def shared(self, peer_key: bytes) -> bytes:
        """The cached key, or a new one derived and kept; raises :class:`PairError`."""
        key = self.lookup(peer_key)
        if key is None:
            key = self.derive(peer_key)
            self.remember(peer_key, key)
        return key
