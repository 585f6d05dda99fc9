"""Sealed envelopes: sign-then-seal, so relays and the DHT learn neither content nor sender.

Wire format (version 1)::

    b"MNv" | version (1 byte) | SealedBox(recipient X25519,  inner)
    inner = sender_key (32) | signature (64) | message_id (16) | created (8, big-endian) | payload

The signature covers the recipient's key, the sender's key, the id, the time and the payload.
SealedBox uses a fresh ephemeral key, so a stolen *recipient* key decrypts mail but cannot forge
mail from anyone else to that recipient (KCI-safe): only the sender's Ed25519 key can sign.
Binding the recipient into the signature stops a recipient re-sealing a signed message to a
third party as if it had been sent to them. The version byte leaves room for a forward-secret
format (ephemeral prekeys) later.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nacl.bindings import crypto_box_SEALBYTES
from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from crypto.keys import Identity, PublicIdentity
from crypto.signing import SIGNATURE_SIZE, SignatureError, sign, verify

MAGIC = b"MNv"
VERSION = 1
MESSAGE_ID_SIZE = 16
_CONTEXT = b"envelope-v1"
_HEADER = struct.Struct(">32s64s16sQ")
OVERHEAD = len(MAGIC) + 1 + crypto_box_SEALBYTES + _HEADER.size


class EnvelopeError(ValueError):
    """An envelope that cannot be opened or whose sender cannot be verified."""


@dataclass(frozen=True)
class Opened:
    """A verified envelope: who signed it, its id, when, and the plaintext payload."""

    sender_key: bytes
    message_id: bytes
    created: int
    payload: bytes


def _signed_part(recipient_key: bytes, sender_key: bytes, message_id: bytes, created: int,
                 payload: bytes) -> bytes:
    return recipient_key + sender_key + message_id + created.to_bytes(8, "big") + payload


def seal(sender: Identity, recipient: PublicIdentity, message_id: bytes, created: int,
         payload: bytes) -> bytes:
    """Sign ``payload`` as ``sender`` and seal it so only ``recipient`` can open it."""
    if len(message_id) != MESSAGE_ID_SIZE:
        raise ValueError("message ids are 16 bytes")
    sender_key = sender.verify_key
    signature = sign(sender, _CONTEXT,
                     _signed_part(recipient.verify_key, sender_key, message_id, created, payload))
    inner = _HEADER.pack(sender_key, signature, message_id, created) + payload
    return MAGIC + bytes([VERSION]) + SealedBox(recipient.box_public_key).encrypt(inner)


def open_envelope(recipient: Identity, sealed: bytes) -> Opened:
    """Decrypt and verify; raises EnvelopeError on any tampering, truncation or wrong key."""
    if len(sealed) < OVERHEAD:
        raise EnvelopeError("envelope truncated")
    if sealed[: len(MAGIC)] != MAGIC:
        raise EnvelopeError("not a mailnode envelope")
    version = sealed[len(MAGIC)]
    if version != VERSION:
        raise EnvelopeError(f"unsupported envelope version {version}")
    try:
        inner = SealedBox(recipient.box_private_key).decrypt(sealed[len(MAGIC) + 1:])
    except CryptoError as exc:
        raise EnvelopeError("cannot decrypt: not sealed to this key, or damaged") from exc
    if len(inner) < _HEADER.size:
        raise EnvelopeError("envelope truncated")
    sender_key, signature, message_id, created = _HEADER.unpack_from(inner)
    payload = inner[_HEADER.size:]
    assert len(signature) == SIGNATURE_SIZE
    try:
        verify(sender_key, _CONTEXT,
               _signed_part(recipient.verify_key, sender_key, message_id, created, payload),
               signature)
    except SignatureError as exc:
        raise EnvelopeError("sender signature does not verify") from exc
    return Opened(sender_key, message_id, created, payload)
