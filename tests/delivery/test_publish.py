"""Each local user's record is published at once and renewed, with a higher seq, before it
expires."""

from __future__ import annotations

from dataclasses import dataclass, field

from crypto.address import key_of
from crypto.keys import Identity
from dht.records import AddressRecord
from mailnode.config import Config
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
