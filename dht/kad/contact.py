"""Who a peer is: an id bound to its key (S/Kademlia), and where it answers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ID_SIZE = 20
KEY_SIZE = 32
_NODE_ID_LABEL = b"mailnode-dht-node-id-v1\0"


def node_id_for(key: bytes) -> bytes:
    """The only id the holder of Ed25519 verify key ``key`` may use.

    Ids are derived, never chosen, so an attacker cannot place itself next to a target key
    without grinding keys, and a reply is accepted only when signed by the key behind the id.
    """
    if len(key) != KEY_SIZE:
        raise ValueError("a node key is 32 bytes")
    return hashlib.sha1(_NODE_ID_LABEL + key).digest()


def distance(a: bytes, b: bytes) -> int:
    """The XOR metric between two ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


@dataclass(frozen=True, slots=True)
class Contact:
    """A peer as the routing table and lookups know it.

    ``key`` is its Ed25519 verify key and ``node_id`` is always ``node_id_for(key)``;
    ``host`` is an IP address literal (names are resolved before they get here).
    """

    key: bytes
    host: str
    port: int
    node_id: bytes = b""

    def __post_init__(self) -> None:
        derived = node_id_for(self.key)
        if self.node_id and self.node_id != derived:
            raise ValueError("node id does not match the key")
        object.__setattr__(self, "node_id", derived)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)
