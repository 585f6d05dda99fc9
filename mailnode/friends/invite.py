"""The invite token: one line to paste into a chat (or scan as a QR code).

It carries what the accepting node needs to reach and trust the inviting one: the inviting
node's key (the TLS pin), its reachable endpoints, a name to show, an expiry and a one-time
secret. Anyone holding the token can redeem it once, so it is sent like a password.

Layout, base64url after the ``mn1:`` prefix::

    version u8 = 1 | node_key 32 | secret 16 | expires u32 | name (u8 length, ASCII) |
    endpoints (u8 count, then u8 length, host, u16 port each) | check 4 (BLAKE2b of the rest)

The check catches a token cut short or mistyped in a chat before any connection is tried.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from mailnode.transfer.frames import (
    SECRET_SIZE,
    Endpoint,
    ProtocolError,
    check_label,
    decode_endpoints,
    encode_endpoints,
)

PREFIX = "mn1:"
VERSION = 1
_HEAD = struct.Struct(f">B32s{SECRET_SIZE}sI")
_CHECK = 4


class TokenError(ValueError):
    """Not a usable invite token; the message says why."""


@dataclass(frozen=True)
class Invite:
    node_key: bytes
    secret: bytes
    expires: int
    name: str
    endpoints: tuple[Endpoint, ...]

    def encode(self) -> str:
        label = check_label(self.name).encode("ascii")
        body = (_HEAD.pack(VERSION, self.node_key, self.secret, self.expires)
                + bytes([len(label)]) + label + encode_endpoints(self.endpoints))
        raw = body + hashlib.blake2b(body, digest_size=_CHECK).digest()
        return PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Invite:
        text = "".join(token.split())  # chats wrap long lines
        if not text.startswith(PREFIX):
            raise TokenError(f"an invite token starts with {PREFIX!r}")
        text = text[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise TokenError("the token is damaged (not base64url)") from None
        body, check = raw[:-_CHECK], raw[-_CHECK:]
        if len(raw) < _HEAD.size + _CHECK or \
                hashlib.blake2b(body, digest_size=_CHECK).digest() != check:
            raise TokenError("the token is damaged or incomplete (copy all of it)")
        version, node_key, secret, expires = _HEAD.unpack_from(body)
        if version != VERSION:
            raise TokenError(f"token version {version} is not supported by this mailnode")
        pos = _HEAD.size
        try:
            length = body[pos]
            name = check_label(body[pos + 1 : pos + 1 + length].decode("ascii"))
            endpoints, end = decode_endpoints(body, pos + 1 + length)
        except (IndexError, UnicodeDecodeError, ValueError, ProtocolError) as exc:
            raise TokenError(f"the token is malformed: {exc}") from None
        if end != len(body):
            raise TokenError("the token is malformed: trailing bytes")
        if not endpoints:
            raise TokenError("the token names no address to reach the inviting node at")
        return cls(node_key, secret, expires, name, endpoints)
