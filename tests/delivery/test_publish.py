"""Each local user's record is published at once and renewed, with a higher seq, before it
expires."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crypto.address import key_of
from crypto.keys import Identity
from dht.records import MAX_RELAYS, AddressRecord, Relay
from mailnode.config import CONFIG_NAME, Config, ConfigError, load, render
from mailnode.delivery.publish import Publisher
from mailnode.store.sqlite import SqlStore


@dataclass
class FakeDht:
    records: list[AddressRecord] = field(default_factory=list)

    async def publish(self, record: AddressRecord) -> int:
        self.records.append(record)
        return 2


async def test_new_users_at_once_and_renewal_before_expiry(store: SqlStore) -> None:
    now = [1_800_000_000.0]
    config = Config(record_ttl=600.0, republish_interval=300.0)
    dht, node = FakeDht(), Identity.generate()
    where = [("127.0.0.1", 2700)]
    publisher = Publisher(store, dht, node, config, lambda: where,  # type: ignore[arg-type]
                          clock=lambda: now[0])
    alice = await store.create_user("alice", "password1", Identity.generate())
    await publisher.publish_due()
    [first] = dht.records
    first.verify(now[0])  # signed by alice's key
    assert first.user_key == key_of(alice.address) and first.node_key == node.verify_key
    assert first.endpoints == (("127.0.0.1", 2700),) and first.expires == now[0] + 600
    await publisher.publish_due()
    assert len(dht.records) == 1  # nothing due yet
    await store.create_user("bob", "password1", Identity.generate())
    await publisher.publish_due()
    assert len(dht.records) == 2  # a new user is published without waiting
    now[0] += 300
    await publisher.publish_due()
    renewed = [r for r in dht.records[2:] if r.user_key == first.user_key]
    assert len(renewed) == 1 and renewed[0].seq > first.seq
    assert renewed[0].expires > first.expires  # renewed while the old one is still valid
    before = len(dht.records)
    where[:] = [("10.0.0.7", 2700), ("192.0.2.9", 2700)]  # the node moved: all at once
    await publisher.publish_due()
    moved = dht.records[before:]
    assert len(moved) == 2 and {r.endpoints for r in moved} == {tuple(where)}


async def test_a_record_that_reached_no_peer_is_published_again_soon(store: SqlStore) -> None:
    class LonelyDht(FakeDht):
        peers = 0

        async def publish(self, record: AddressRecord) -> int:
            self.records.append(record)
            return self.peers

    dht = LonelyDht()
    publisher = Publisher(store, dht, Identity.generate(), Config(),  # type: ignore[arg-type]
                          lambda: [("127.0.0.1", 2700)], clock=lambda: 1_800_000_000.0)
    await store.create_user("alice", "password1", Identity.generate())
    await publisher.publish_due()
    await publisher.publish_due()
    assert len(dht.records) == 2  # tried again: nobody holds it yet
    dht.peers = 3
    await publisher.publish_due()
    await publisher.publish_due()
    assert len(dht.records) == 3  # reached peers: done until the republish interval


RELAY_A = Relay(bytes([0xA]) * 32, (("192.0.2.10", 2700),))
RELAY_B = Relay(bytes([0xB]) * 32, (("192.0.2.11", 2700), ("2001:db8::11", 2700)))


async def test_records_carry_relays_and_all_are_republished_when_they_change(
    store: SqlStore,
) -> None:
    now = [1_800_000_000.0]
    dht, node = FakeDht(), Identity.generate()
    relays: list[Relay] = []
    asked = [0]

    async def current_relays() -> tuple[Relay, ...]:
        asked[0] += 1
        return tuple(relays)

    publisher = Publisher(store, dht, node, Config(), lambda: [("127.0.0.1", 2700)],  # type: ignore[arg-type]
                          clock=lambda: now[0], relays=current_relays)
    for name in ("alice", "bob"):
        await store.create_user(name, "password1", Identity.generate())
    await publisher.publish_due()
    assert len(dht.records) == 2 and all(r.relays == () and r.inbound for r in dht.records)
    now[0] += 1
    await publisher.publish_due()
    assert len(dht.records) == 2 and asked[0] == 2  # asked every pass; nothing changed
    relays.append(RELAY_A)  # a friend agreed to hold our mail: every record says so at once
    now[0] += 1
    await publisher.publish_due()
    assert len(dht.records) == 4
    for record in dht.records[2:]:
        record.verify(now[0])
        assert record.relays == (RELAY_A,) and record.endpoints == (("127.0.0.1", 2700),)
        assert AddressRecord.decode(record.encode()) == record  # what peers will read
    relays[:] = [RELAY_B, RELAY_A]
    now[0] += 1
    await publisher.publish_due()
    assert [r.relays for r in dht.records[4:]] == [(RELAY_B, RELAY_A)] * 2
    relays.clear()  # the friendship ended: the relay is no longer listed
    now[0] += 1
    await publisher.publish_due()
    assert [r.relays for r in dht.records[6:]] == [()] * 2


async def test_relays_that_cannot_be_in_a_record_are_left_out(store: SqlStore) -> None:
    """Our own node, a duplicate and more than MAX_RELAYS would make every record invalid."""
    dht, node = FakeDht(), Identity.generate()
    many = [Relay(bytes([i]) * 32, (("192.0.2.1", 2700 + i),)) for i in range(1, 8)]

    async def current_relays() -> tuple[Relay, ...]:
        return (Relay(node.verify_key, (("127.0.0.1", 2700),)), many[0], many[0], *many)

    publisher = Publisher(store, dht, node, Config(), lambda: [("127.0.0.1", 2700)],  # type: ignore[arg-type]
                          clock=lambda: 1_800_000_000.0, relays=current_relays)
    await store.create_user("alice", "password1", Identity.generate())
    await publisher.publish_due()
    [record] = dht.records
    assert record.relays == tuple(many[:MAX_RELAYS])


async def test_a_node_that_accepts_no_inbound_connections_publishes_no_endpoint(
    store: SqlStore, tmp_path: Path
) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_text(render(Config()).replace("accept_inbound = true", "accept_inbound = false"))
    config = load(path)
    assert config.accept_inbound is False and Config().accept_inbound is True
    dht, node = FakeDht(), Identity.generate()

    async def current_relays() -> tuple[Relay, ...]:
        return (RELAY_A,)

    publisher = Publisher(store, dht, node, config, lambda: [("127.0.0.1", 2700)],  # type: ignore[arg-type]
                          clock=lambda: 1_800_000_000.0, relays=current_relays)
    await store.create_user("alice", "password1", Identity.generate())
    await publisher.publish_due()
    [record] = dht.records
    decoded = AddressRecord.decode(record.encode())
    assert decoded.inbound is False and decoded.endpoints == () and decoded.relays == (RELAY_A,)
    decoded.verify(1_800_000_000.0)
    path.write_text("[network]\naccept_inbound = 0\n")
    with pytest.raises(ConfigError, match="accept_inbound must be true or false"):
        load(path)
