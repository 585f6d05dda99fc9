"""Bounds on what strangers can make a DHT node hold or do: the numbers and small pure helpers.

Kademlia trusts whoever sends a datagram: any source address and any node id. One UDP socket
could fill a routing table (and the saved peer list) with invented ids, one client could fill the
record store, and one ping could make a node send a STORE per held record. The limits here bound
each of these per source address, per subnet and per unit of time; :mod:`dht.kad.routing`,
:mod:`dht.kad.rpc`, :mod:`dht.kad.peer`, :mod:`dht.storage` and :mod:`dht.handover` enforce them.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

Address = tuple[str, int]

_LOG_LIMIT = 200
# Longest a published record may stay valid. Publishers renew far more often (hourly), so this
# only bounds how long junk that nobody renews can occupy other nodes' stores.
MAX_RECORD_TTL = 7 * 86400


@dataclass(frozen=True)
class DhtLimits:
    """Per-address, per-subnet and per-second caps. The defaults are meant for the open internet.

    Contacts (routing table): one node id per ip:port, so one socket is one contact. Beyond
    that a single IP may hold ``contacts_per_ip`` entries (several nodes behind one NAT are
    normal) and a /24 or /64 ``contacts_per_subnet`` (a VPS provider's /24 holds strangers), at
    most a few per k-bucket so no one address can crowd a neighbourhood. Configured bootstrap
    peers (and later friends) are exempt. Tests that run many nodes on 127.0.0.1 must raise them.

    Records (store): ``records_per_ip`` and ``records_per_subnet`` count what each sender stored
    here (a personal node publishes a handful of users; 1,000 per IP leaves room for republishing
    peers while one client can take at most 1% of the default 100,000-record store).

    Requests: each source IP may send ``requests_per_ip_second`` (bursts of
    ``requests_per_ip_burst``) before the rest is dropped unanswered, which bounds the CPU one
    address can take and what a spoofed source (a reflection victim) receives from us: an answer
    is up to ~40 times the size of its request. The last ``tracked_ips`` sources are tracked.

    Hand-over of records to new close contacts: at most ``handover_stores_per_second`` STOREs
    (bursts of ``handover_burst``), ``handover_per_contact`` records to any one contact, at most
    ``handover_pending`` contacts waiting, and ``handover_scan_step`` held records examined per
    step, so no datagram and no step costs more than a bounded amount of work.
    """

    contacts_per_ip_bucket: int = 2
    contacts_per_ip: int = 8
    contacts_per_subnet_bucket: int = 4
    contacts_per_subnet: int = 16
    records_per_ip: int = 1_000
    records_per_subnet: int = 4_000
    requests_per_ip_second: float = 50.0
    requests_per_ip_burst: int = 200
    tracked_ips: int = 4096
    handover_stores_per_second: float = 20.0
    handover_burst: int = 20
    handover_per_contact: int = 500
    handover_pending: int = 64
    handover_scan_step: int = 100
    handover_step_interval: float = 0.05


DEFAULT_LIMITS = DhtLimits()


@functools.lru_cache(maxsize=4096)
def subnet(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) that ``ip`` is in; one address holds many of either.

    An IPv4-mapped IPv6 address counts as its IPv4 address; anything that is not an IP address
    is its own subnet.
    """
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def cap_addresses(
    addresses: Iterable[Address], *, per_ip: int, per_subnet: int, total: int
) -> list[Address]:
    """The first ``total`` distinct addresses, at most ``per_ip`` per IP and ``per_subnet`` per
    subnet; order is kept, so whatever the caller lists first (e.g. bootstrap peers) wins."""
    kept: list[Address] = []
    seen: set[Address] = set()
    ips: Counter[str] = Counter()
    subnets: Counter[str] = Counter()
    for host, port in addresses:
        address = (host, port)
        if len(kept) >= total:
            break
        if address in seen or ips[host] >= per_ip or subnets[subnet(host)] >= per_subnet:
            continue
        seen.add(address)
        ips[host] += 1
        subnets[subnet(host)] += 1
        kept.append(address)
    return kept


class TokenBucket:
    """``rate`` actions per second with bursts of ``burst``; time is passed in (monotonic).
    Slotted: a node keeps one per recent source address (thousands)."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = now

    def _fill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = max(self._updated, now)

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._fill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def delay(self, now: float) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._fill(now)
        return max(0.0, (1.0 - self._tokens) / self._rate)


def shown(value: object, limit: int = _LOG_LIMIT) -> str:
    """``value`` (from the network) as a printable, single-line, bounded string for a log line.

    dht cannot use mailnode's helper (import direction), and a peer's method name or an error
    text quoting its bytes could otherwise forge log lines.
    """
    if isinstance(value, bytes):
        text = value[: limit * 4].decode("utf-8", "backslashreplace")
    else:
        text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
