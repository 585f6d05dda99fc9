"""What DHT peers say to each other, as values: :mod:`dht.kad.wire` turns them into datagrams.

Four requests, each with one kind of reply. A reply to FIND_VALUE carries the closer contacts
even when it has the value, so a lookup can go on past the first holder (a liar near the key
must not be able to end a lookup with a stale or forged record).
"""

from __future__ import annotations

from dataclasses import dataclass

from dht.kad.contact import Contact

MAX_REPLY_CONTACTS = 20
"""Contacts in one reply (k): bounds the answer to a small request (no amplification)."""


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class FindNode:
    target: bytes


@dataclass(frozen=True, slots=True)
class FindValue:
    key: bytes


@dataclass(frozen=True, slots=True)
class Store:
    key: bytes
    value: bytes


Request = Ping | FindNode | FindValue | Store


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Nodes:
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class Value:
    value: bytes
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class Stored:
    accepted: bool


Reply = Pong | Nodes | Value | Stored
