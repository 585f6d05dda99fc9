"""Ed25519 identities; the X25519 sealing key is derived so one seed is all a user keeps."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey


class KeyError_(ValueError):
    """A key of the wrong size or shape."""


@dataclass(frozen=True)
class PublicIdentity:
    """What others know of an identity: its Ed25519 verify key (32 bytes)."""

    verify_key: bytes

    def __post_init__(self) -> None:
        if len(self.verify_key) != 32:
            raise KeyError_("an Ed25519 public key is 32 bytes")

    @property
    def box_public_key(self) -> PublicKey:
        """X25519 key for sealing, derived from the verify key (never published separately)."""
        return VerifyKey(self.verify_key).to_curve25519_public_key()


@dataclass(frozen=True)
class Identity:
    """A secret Ed25519 seed; signs as the identity and opens what was sealed to it."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise KeyError_("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @functools.cached_property
    def signing_key(self) -> SigningKey:
        """Derived once per Identity (a key-pair derivation per signature was measurable)."""
        return SigningKey(self.seed)

    @functools.cached_property
    def verify_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(self.verify_key)

    @property
    def box_private_key(self) -> PrivateKey:
        return self.signing_key.to_curve25519_private_key()
