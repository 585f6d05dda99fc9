"""Files a running node keeps in its data dir: status for ``mailnode status``, known peers."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dht.limits import DEFAULT_LIMITS, cap_addresses

if TYPE_CHECKING:
    from dht.node import DhtNode

STATUS_NAME = "status.json"
PEERS_NAME = "peers.json"
MAX_SAVED_PEERS = 64


@dataclass(frozen=True)
class Listening:
    """Where the running node can be reached (ports resolved when 0 was configured)."""

    host: str
    p2p_host: str
    smtp_port: int
    imap_port: int
    p2p_port: int
    node_key: str
    smtps_port: int = 0
    """Implicit-TLS ports; 0 when off."""
    imaps_port: int = 0


def _capped(peers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """At most MAX_SAVED_PEERS, and no more per IP and per subnet than the routing table allows:
    one address that flooded the table must not own the list we rejoin through."""
    return cap_addresses(peers, per_ip=DEFAULT_LIMITS.contacts_per_ip,
                         per_subnet=DEFAULT_LIMITS.contacts_per_subnet, total=MAX_SAVED_PEERS)


def load_peers(data_dir: Path) -> list[tuple[str, int]]:
    """Peers known at the last run: a restart rejoins through them even if every configured
    bootstrap node is down (friends' nodes bootstrap each other). Capped again, as a list
    saved by an older version may have been filled by one address."""
    try:
        raw = json.loads((data_dir / PEERS_NAME).read_text())
        return _capped([(str(host), int(port)) for host, port in raw])
    except (OSError, ValueError, TypeError):
        return []


def save_peers(data_dir: Path, peers: list[tuple[str, int]]) -> None:
    """Save ``peers`` (listed most important first: the DHT lists bootstrap peers first)."""
    if not peers:
        return  # keep the last good list rather than forget it during an outage
    tmp = data_dir / (PEERS_NAME + ".tmp")
    tmp.write_text(json.dumps(_capped(peers)))
    tmp.replace(data_dir / PEERS_NAME)


def write_status(data_dir: Path, listening: Listening, dht: DhtNode, published: int,
                 endpoints: list[tuple[str, int]] | None = None) -> None:
    """A small status file for ``mailnode status`` (the CLI cannot ask the DHT itself)."""
    tmp = data_dir / (STATUS_NAME + ".tmp")
    tmp.write_text(json.dumps({
        "pid": os.getpid(), "updated": time.time(), "host": listening.host,
        "p2p_host": listening.p2p_host,
        "smtp_port": listening.smtp_port, "imap_port": listening.imap_port,
        "smtps_port": listening.smtps_port, "imaps_port": listening.imaps_port,
        "p2p_port": listening.p2p_port, "node_key": listening.node_key,
        "dht_peers": dht.peer_count(), "records_published": published,
        "endpoints": [list(e) for e in endpoints or []],
        "peers": [list(p) for p in dht.peers()[:64]],
    }))
    tmp.replace(data_dir / STATUS_NAME)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The running node's status file, or None when no node is running there (a file left
    by a killed node names a dead pid)."""
    try:
        status: dict[str, Any] = json.loads((data_dir / STATUS_NAME).read_text())
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status
