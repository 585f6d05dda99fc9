"""Detached Ed25519 signatures with a context label, so a signature made for one
purpose (a DHT record, an envelope, a transfer handshake) is never valid for another."""

from __future__ import annotations

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from crypto.keys import Identity

SIGNATURE_SIZE = 64


class SignatureError(ValueError):
    """The signature does not verify for this key, context and data."""


def _framed(context: bytes, data: bytes) -> bytes:
    if b"\0" in context:
        raise ValueError("context labels may not contain NUL")
    return b"mailnode:" + context + b"\0" + data


def sign(identity: Identity, context: bytes, data: bytes) -> bytes:
    """Sign ``data`` for ``context``; returns the 64-byte signature."""
    return bytes(identity.signing_key.sign(_framed(context, data)).signature)


def verify(verify_key: bytes, context: bytes, data: bytes, signature: bytes) -> None:
    """Raise SignatureError unless ``signature`` is ``verify_key``'s over ``context``/``data``."""
    if len(verify_key) != 32 or len(signature) != SIGNATURE_SIZE:
        raise SignatureError("malformed key or signature")
    try:
        VerifyKey(verify_key).verify(_framed(context, data), signature)
    except BadSignatureError as exc:
        raise SignatureError("signature does not verify") from exc
