"""The stored MIME structure of one message: plain frozen data, and its compact encoding.

Header values are ``str`` decoded from the raw bytes as UTF-8 with ``surrogateescape``, so
``value.encode("utf-8", "surrogateescape")`` gives the original bytes back (non-ASCII and
8-bit garbage pass through byte-exact). The encoding is JSON behind a version byte; JSON's
``\\udcxx`` escapes carry the surrogates, so the blob itself is ASCII.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSION = 1
Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Address:
    """One RFC 3501 ENVELOPE address. Group start: ``mailbox`` is the group name and
    ``host`` is None; group end: all four are None. A normal address always has a host
    (``""`` when the source had none), so it never reads as a group marker."""

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


@dataclass(frozen=True)
class Envelope:
    """The header fields RFC 3501 ENVELOPE shows, unfolded but otherwise as sent."""

    date: str | None = None
    subject: str | None = None
    in_reply_to: str | None = None
    message_id: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()


@dataclass(frozen=True)
class Part:
    """One MIME entity. ``raw[header_start:body_start]`` is its header block (with the blank
    line when there is one), ``raw[body_start:end]`` its body."""

    header_start: int
    body_start: int
    end: int
    content_type: tuple[str, str] = ("text", "plain")
    params: Params = ()
    disposition: tuple[str, Params] | None = None
    id: str | None = None
    description: str | None = None
    encoding: str | None = None
    md5: str | None = None
    language: str | None = None
    location: str | None = None
    lines: int = 0
    children: tuple[Part, ...] = ()
    message: Part | None = None
    envelope: Envelope | None = None


@dataclass(frozen=True)
class MessageStructure:
    """What :func:`mailnode.mime.analyse` computed; stored once per message."""

    root: Part

    def encode(self) -> bytes:
        """A compact, versioned blob (first byte: format version)."""
        return _VERSION_BYTE + _ENCODER.encode(_part_out(self.root)).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> MessageStructure:
        """The structure ``encode`` wrote; ``ValueError`` on anything else."""
        if not data or data[0] != VERSION:
            raise ValueError("unknown structure format")
        try:
            tree = json.loads(data[1:].decode("ascii"))
            return cls(_part_in(tree, 0))
        except ValueError:
            raise
        except (TypeError, IndexError, RecursionError, UnicodeError) as exc:
            raise ValueError(f"malformed structure: {type(exc).__name__}") from None


# --- encoding -------------------------------------------------------------------------------

_VERSION_BYTE = bytes([VERSION])
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, check_circular=False)
"""One encoder for every message (``json.dumps`` with options builds one per call). The tree
is built here from tuples and lists, so it cannot be circular."""


def _params_out(params: Params) -> list[list[str]]:
    return [[k, v] for k, v in params]


def _addrs_out(addrs: tuple[Address, ...]) -> list[list[str | None]]:
    return [[a.name, a.adl, a.mailbox, a.host] for a in addrs]


def _envelope_out(env: Envelope) -> list[Any]:
    return [env.date, env.subject, env.in_reply_to, env.message_id,
            *(_addrs_out(x) for x in (env.from_, env.sender, env.reply_to, env.to, env.cc,
                                      env.bcc))]


def _part_out(p: Part) -> list[Any]:
    return [p.header_start, p.body_start, p.end, p.content_type[0], p.content_type[1],
            _params_out(p.params),
            None if p.disposition is None else [p.disposition[0],
                                                _params_out(p.disposition[1])],
            p.id, p.description, p.encoding, p.md5, p.language, p.location, p.lines,
            [_part_out(c) for c in p.children],
            None if p.message is None else _part_out(p.message),
            None if p.envelope is None else _envelope_out(p.envelope)]


# --- decoding (strict: every type checked, so a bad blob never yields a half-valid tree) ---

MAX_DECODE_DEPTH = 64


def _str(x: object) -> str:
    if not isinstance(x, str):
        raise ValueError("expected a string")
    return x


def _opt(x: object) -> str | None:
    return None if x is None else _str(x)


def _int(x: object) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise ValueError("expected a non-negative integer")
    return x


def _list(x: object, n: int | None = None) -> list[Any]:
    if not isinstance(x, list) or (n is not None and len(x) != n):
        raise ValueError("expected a list")
    return x


def _params_in(x: object) -> Params:
    return tuple((_str(k), _str(v)) for k, v in (_list(i, 2) for i in _list(x)))


def _addrs_in(x: object) -> tuple[Address, ...]:
    out = []
    for item in _list(x):
        n, a, m, h = _list(item, 4)
        out.append(Address(_opt(n), _opt(a), _opt(m), _opt(h)))
    return tuple(out)


def _envelope_in(x: object) -> Envelope:
    v = _list(x, 10)
    return Envelope(_opt(v[0]), _opt(v[1]), _opt(v[2]), _opt(v[3]),
                    *(_addrs_in(a) for a in v[4:]))


def _part_in(x: object, depth: int) -> Part:
    if depth > MAX_DECODE_DEPTH:
        raise ValueError("structure nested too deeply")
    v = _list(x, 17)
    hs, bs, end = _int(v[0]), _int(v[1]), _int(v[2])
    if not hs <= bs <= end:
        raise ValueError("offsets out of order")
    disp = None
    if v[6] is not None:
        kind, dparams = _list(v[6], 2)
        disp = (_str(kind), _params_in(dparams))
    return Part(
        hs, bs, end, (_str(v[3]), _str(v[4])), _params_in(v[5]), disp,
        _opt(v[7]), _opt(v[8]), _opt(v[9]), _opt(v[10]), _opt(v[11]), _opt(v[12]), _int(v[13]),
        tuple(_part_in(c, depth + 1) for c in _list(v[14])),
        None if v[15] is None else _part_in(v[15], depth + 1),
        None if v[16] is None else _envelope_in(v[16]))
