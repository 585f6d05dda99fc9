"""Self-certifying mail addresses: the local part encodes the user's public key.

``base32(verify_key || blake2b(verify_key)[:3])`` is 56 lowercase characters (under RFC 5321's
64), so a typo is caught by the checksum instead of silently naming another key.
The pseudo-domain is under ``.invalid`` (RFC 6761): if an address ever leaks to ordinary
internet mail it fails at once instead of reaching somebody else's domain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache

DOMAIN = "mailnode.invalid"
_CHECKSUM = 3


class AddressError(ValueError):
    """Not a mailnode address; the message says why."""


def _checksum(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=_CHECKSUM, person=b"mailnode-addr").digest()


def address_for(verify_key: bytes) -> str:
    """The canonical address of the identity with this Ed25519 verify key."""
    if len(verify_key) != 32:
        raise AddressError("an identity key is 32 bytes")
    local = base64.b32encode(verify_key + _checksum(verify_key)).decode("ascii").lower()
    return f"{local}@{DOMAIN}"


def key_of(address: str) -> bytes:
    """The verify key an address certifies; raises AddressError with the reason."""
    local, sep, domain = address.strip().strip("<>").rpartition("@")
    if not sep:
        raise AddressError(f"{address!r} has no @domain")
    if not address.isascii():
        raise AddressError(f"{address!r}: mailnode addresses are plain ASCII")
    if domain.lower() != DOMAIN:
        raise AddressError(f"{address!r} is not a mailnode address (domain must be {DOMAIN})")
    try:
        raw = base64.b32decode(local.upper(), casefold=False)
    except (ValueError, binascii.Error) as exc:
        raise AddressError(f"{address!r}: local part is not a mailnode key") from exc
    if len(raw) != 32 + _CHECKSUM:
        raise AddressError(f"{address!r}: local part has the wrong length for a mailnode key")
    key, check = raw[:32], raw[32:]
    if _checksum(key) != check:
        raise AddressError(f"{address!r}: checksum mismatch (mistyped address?)")
    return key


@lru_cache(maxsize=1024)
def normalise(address: str) -> str:
    """Canonical (lowercase) form of a valid address. Remembered: a node sees the same few
    addresses in every MAIL, RCPT and From, and the checksum is not free (invalid ones
    raise and are not remembered)."""
    return address_for(key_of(address))
