"""SASL PLAIN (RFC 4616) decoding, shared by IMAP and SMTP so both accept the same logins."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass


class SaslError(ValueError):
    """Undecodable or malformed SASL data; the message is safe to show the client."""


@dataclass(frozen=True)
class PlainCredentials:
    """What SASL PLAIN carries; the repr leaves the password out."""

    authzid: str
    login: str
    password: str = ""

    def __repr__(self) -> str:  # never let a password reach a log line
        return f"PlainCredentials(authzid={self.authzid!r}, login={self.login!r})"

    def acts_as(self, *identities: str) -> bool:
        """Whether the authzid names the authenticated user: empty, or one of its names
        (mutt and mbsync repeat the login; some clients send the address)."""
        return self.authzid in ("", self.login, *identities)


def b64decode_strict(data: bytes | str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SaslError("invalid base64") from exc


def parse_plain(blob: bytes) -> PlainCredentials:
    """Split ``authzid NUL authcid NUL password`` (already base64-decoded)."""
    parts = blob.split(b"\0")
    if len(parts) != 3:
        raise SaslError("PLAIN data must be authzid NUL login NUL password")
    try:
        authzid, login, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError as exc:
        raise SaslError("PLAIN data is not UTF-8") from exc
    if not login:
        raise SaslError("empty login")
    return PlainCredentials(authzid, login, password)
