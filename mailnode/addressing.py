"""Which transfer endpoints this node publishes in its users' DHT records.

The old rule published ``gethostbyname(hostname)`` when bound to every interface, which is
127.0.1.1 on Debian and Ubuntu: peers on other machines then dialled themselves. The address to
publish is the one others can reach us at, so it is derived from where they are: for each known
peer, the local address the kernel routes to it from (no packet is sent to learn it). A node
with no peer yet publishes the address of its default route. Loopback is only ever published to
peers that are themselves on this machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

from dht.node import is_ip
from mailnode.config import Config, is_loopback, parse_hostport

Endpoint = tuple[str, int]
Route = Callable[[str], str | None]
"""The local address that packets to a peer's IP leave from (None: no route)."""

_ANY = {"", "0.0.0.0", "::"}
_FAMILIES = {"": (socket.AF_INET, socket.AF_INET6), "0.0.0.0": (socket.AF_INET,),
             "::": (socket.AF_INET6,)}


def _family(host: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
# Documentation addresses (RFC 5737 / 3849): connecting a UDP socket only asks the routing
# table, so these stand for "anywhere beyond this machine" without sending anything.
_ELSEWHERE = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def route_from(peer_ip: str) -> str | None:
    """The kernel's source address for packets to ``peer_ip`` (a UDP connect sends nothing)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(peer_ip).version == 6 else \
            socket.AF_INET
    except ValueError:
        return None
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_ip, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


def advertised(config: Config, port: int) -> Endpoint | None:
    """The endpoint the owner configured with ``advertise_host`` (``HOST`` or ``HOST:PORT``,
    e.g. a router's public address with a forwarded port), if any."""
    text = config.advertise_host.strip()
    if not text:
        return None
    if text.count(":") == 1 or text.startswith("["):
        return parse_hostport(text)
    return text.strip("[]"), port


def endpoints(config: Config, port: int, peers: Iterable[Endpoint],
              route: Route = route_from) -> list[Endpoint]:
    """What to publish, best first: the configured address if any; else the bound address
    when it is a specific one; else, bound to every interface, the address each known peer is
    routed to from (one per distinct address: LAN and public, IPv4 and IPv6), or that of the
    default route while no peer is known. Never a loopback address unless every peer is on
    this machine too, never an unspecified one."""
    configured = advertised(config, port)
    if configured is not None:
        return [configured]
    bind = config.p2p_bind
    if bind not in _ANY:
        return [(bind, port)]
    found: list[Endpoint] = []
    remote_peer = False
    for host, _ in peers:
        if not is_ip(host):
            continue
        remote_peer = remote_peer or not is_loopback(host)
        local = route(host)
        if local is None or local in _ANY or (local, port) in found:
            continue
        found.append((local, port))
    if remote_peer:  # loopback would send remote peers to themselves
        found = [e for e in found if not is_loopback(e[0])]
    # 0.0.0.0 listens on IPv4 only and :: on IPv6 only (asyncio sets IPV6_V6ONLY): an
    # address of the other family would be published but refuse every connection.
    families = _FAMILIES[bind]
    found = [e for e in found if _family(e[0]) in families]
    if not found:
        for family in families:
            local = route(_ELSEWHERE[family])
            if local is not None and local not in _ANY and not is_loopback(local):
                found.append((local, port))
    return found or [("127.0.0.1", port)]  # an isolated machine: only local peers exist


def unreachable(published: Iterable[Endpoint], peers: Iterable[Endpoint]) -> list[str]:
    """Warnings for ``mailnode status``: published endpoints that peers cannot use."""
    remote = [h for h, _ in peers if is_ip(h) and not is_loopback(h)]
    warnings = []
    for host, port in published:
        if remote and is_loopback(host):
            warnings.append(f"{host}:{port} is a loopback address, but peers are on other "
                            "machines: set p2p_host or advertise_host")
        elif host in _ANY:
            warnings.append(f"{host}:{port} is not an address peers can dial")
    return warnings
