"""Memory-hard password hashes (scrypt, stdlib) in a self-describing string."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections import OrderedDict

# n=2**14, r=8 uses 16 MiB and ~50 ms: costly for a guesser, affordable on a Raspberry Pi.
_N, _R, _P = 2**14, 8, 1


def _encode(salt: bytes, digest: bytes) -> str:
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Return ``scrypt$n$r$p$salt$hash``; slow on purpose, run it off the event loop."""
    salt = salt if salt is not None else os.urandom(16)
    return _encode(salt, hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P,
                                        dklen=32))


DUMMY_HASH = _encode(b"\0" * 16, b"\0" * 32)
"""A well-formed hash with today's cost parameters that no password is expected to match:
checking an unknown login against it costs what a real check does. Made of fixed bytes, not by
hashing: an scrypt at import cost every process importing the store 16 MiB and ~50 ms."""


def verify_password(stored: str, password: str) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` string."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, want = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        got = hashlib.scrypt(password.encode(), salt=salt, n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError, OverflowError):
        # ValueError: bad base64/int/parameters; TypeError/OverflowError: n, r, p or the
        # digest length outside what scrypt accepts (negative or huge numbers).
        return False
    return hmac.compare_digest(got, want)


class RecentlyVerified:
    """Passwords that just passed the slow check, recognised again for a while at HMAC speed.

    Mail clients log in over and over (several connections each, polling every minute), and
    every scrypt check costs ~50 ms of CPU here and far more on a Raspberry Pi, all on one
    thread: a busy user's reconnects queued behind each other. The exact password that just
    succeeded against the exact stored hash is remembered as an HMAC under a random key made
    per process, so a changed password (a new stored hash) never matches, failures are never
    remembered (guessers always pay the slow check), and nothing here is usable without the
    key, which never leaves memory. Someone who can read the node's memory could test guesses
    against it fast, but could as well read passwords as they arrive.
    """

    def __init__(self, ttl: float = 900.0, size: int = 4096) -> None:
        self.ttl = ttl
        self.size = size
        self._key = os.urandom(32)
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # tag -> when it expires

    def _tag(self, stored: str, password: str) -> bytes:
        return hmac.new(self._key, stored.encode() + b"\0" + password.encode(),
                        hashlib.sha256).digest()

    def check(self, stored: str, password: str, now: float) -> bool:
        tag = self._tag(stored, password)
        expires = self._seen.get(tag)
        if expires is None:
            return False
        if expires <= now:
            del self._seen[tag]
            return False
        return True

    def remember(self, stored: str, password: str, now: float) -> None:
        tag = self._tag(stored, password)
        self._seen[tag] = now + self.ttl
        self._seen.move_to_end(tag)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
