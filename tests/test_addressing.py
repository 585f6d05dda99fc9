"""Which endpoints a node publishes: where its peers can reach it, never a loopback or
unspecified address to peers on other machines (Debian's 127.0.1.1 hostname entry made nodes
bound to 0.0.0.0 publish one, and peers dialled themselves)."""

from __future__ import annotations

from dataclasses import replace

from mailnode.addressing import endpoints, unreachable
from mailnode.config import Config

ANY = replace(Config(), p2p_host="0.0.0.0")


def routes(table: dict[str, str | None]) -> object:
    """A fake routing table: peer IP -> local source address."""
    return lambda peer: table.get(peer)


def test_configured_address_wins_with_or_without_a_port() -> None:
    assert endpoints(replace(ANY, advertise_host="mail.example.org"), 2700, []) == [
        ("mail.example.org", 2700)]
    assert endpoints(replace(ANY, advertise_host="203.0.113.5:4700"), 2700, []) == [
        ("203.0.113.5", 4700)]  # a port forwarded on the router
    assert endpoints(replace(ANY, advertise_host="[2001:db8::5]:4700"), 2700, []) == [
        ("2001:db8::5", 4700)]


def test_a_specific_bind_address_is_published_as_is() -> None:
    assert endpoints(replace(Config(), p2p_host="10.1.2.3"), 2700, [("10.1.2.9", 1)]) == [
        ("10.1.2.3", 2700)]


def test_bound_everywhere_publishes_the_address_peers_are_routed_from() -> None:
    route = routes({"10.0.0.2": "10.0.0.1", "198.51.100.4": "203.0.113.8",
                    "10.0.0.3": "10.0.0.1"})
    got = endpoints(ANY, 2700, [("10.0.0.2", 2700), ("198.51.100.4", 2700),
                                ("10.0.0.3", 2700), ("peer.example", 2700)],
                    route=route)  # type: ignore[arg-type]
    assert got == [("10.0.0.1", 2700), ("203.0.113.8", 2700)]  # LAN and public, once each


def test_never_loopback_for_peers_elsewhere_whatever_etc_hosts_says() -> None:
    route = routes({"10.0.0.2": "127.0.1.1", "192.0.2.1": "10.0.0.1"})
    got = endpoints(ANY, 2700, [("10.0.0.2", 2700)], route=route)  # type: ignore[arg-type]
    assert got == [("10.0.0.1", 2700)]  # the default route's address instead


def test_no_peer_yet_uses_the_default_route_and_local_peers_get_loopback() -> None:
    assert endpoints(ANY, 2700, [], route=routes(
        {"192.0.2.1": "192.168.1.20"})) == [("192.168.1.20", 2700)]  # type: ignore[arg-type]
    assert endpoints(ANY, 2700, [("127.0.0.1", 2701)], route=routes(
        {"127.0.0.1": "127.0.0.1"})) == [("127.0.0.1", 2700)]  # type: ignore[arg-type]


def test_status_warns_about_endpoints_peers_cannot_use() -> None:
    assert unreachable([("127.0.1.1", 2700)], [("10.0.0.2", 2700)]) != []
    assert unreachable([("127.0.0.1", 2700)], [("127.0.0.1", 2701)]) == []
    assert unreachable([("10.0.0.1", 2700)], [("10.0.0.2", 2700)]) == []


def test_only_addresses_of_the_listening_family_are_published() -> None:
    """0.0.0.0 listens on IPv4 only, :: on IPv6 only: an address of the other family would
    be published and refuse every connection (seen by `mailnode doctor`)."""
    route = routes({"192.0.2.1": "10.0.0.1", "2001:db8::1": "fd00::2",
                    "2001:db8::7": "fd00::2", "10.0.0.9": "10.0.0.1"})
    assert endpoints(ANY, 2700, [], route=route) == [("10.0.0.1", 2700)]  # type: ignore[arg-type]
    assert endpoints(ANY, 2700, [("2001:db8::7", 1), ("10.0.0.9", 1)],
                     route=route) == [("10.0.0.1", 2700)]  # type: ignore[arg-type]
    v6 = replace(Config(), p2p_host="::")
    assert endpoints(v6, 2700, [], route=route) == [("fd00::2", 2700)]  # type: ignore[arg-type]
    both = replace(Config(), host="", p2p_host="")
    assert endpoints(both, 2700, [], route=route) == [  # type: ignore[arg-type]
        ("10.0.0.1", 2700), ("fd00::2", 2700)]
