"""Publishing where each local user's mail is accepted: their signed DHT records.

A record says where this node is dialled (none of it when ``accept_inbound`` is false: a node
behind NAT is never dialled and pulls its mail instead) and which friends' nodes hold mail for
its users while it is away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from crypto.keys import Identity
from dht.node import DhtNode
from dht.records import MAX_ENDPOINTS, MAX_RELAYS, AddressRecord, Relay
from mailnode.addressing import Endpoint
from mailnode.config import Config
from mailnode.logsafe import clean
from mailnode.store.sqlite import SqlStore

log = logging.getLogger(__name__)


class Publisher:
    """Keeps every local user's DHT record fresh: new users at once, all before expiry."""

    def __init__(self, store: SqlStore, dht: DhtNode, node: Identity, config: Config,
                 endpoints: Callable[[], list[Endpoint]],
                 clock: Callable[[], float] = time.time,
                 relays: Callable[[], Awaitable[tuple[Relay, ...]]] | None = None) -> None:
        self.store, self.dht, self.node, self.config = store, dht, node, config
        self.current_endpoints = endpoints
        """Where peers reach us now (``mailnode.addressing``); asked before every pass."""
        self.current_relays = relays
        """The friends' nodes holding mail for our users now; asked before every pass."""
        self.endpoints: tuple[Endpoint, ...] = ()
        self.relays: tuple[Relay, ...] = ()
        self._announced: tuple[tuple[Endpoint, ...], tuple[Relay, ...]] | None = None
        self.clock = clock
        self.published: dict[int, float] = {}

    async def publish_due(self) -> None:
        now = self.clock()
        inbound = self.config.accept_inbound
        endpoints = tuple(self.current_endpoints()[:MAX_ENDPOINTS]) if inbound else ()
        relays = await self._relays()
        if (endpoints, relays) != self._announced:
            # A new address (another network, a first peer elsewhere) or a friend that now
            # holds (or no longer holds) our mail: every record says the old one, so all are
            # published again now, not at their next renewal.
            if inbound:
                log.info("publishing transfer endpoint(s) %s",
                         clean(", ".join(f"{h}:{p}" for h, p in endpoints)))
            else:
                log.info("publishing no endpoint: accept_inbound is false, peers never dial us")
            if relays:
                log.info("publishing %d relay(s) %s", len(relays),
                         ", ".join(r.node_key.hex()[:16] for r in relays))
            elif self.relays:
                log.info("publishing no relay any more")
            self._announced = (endpoints, relays)
            self.endpoints, self.relays = endpoints, relays
            self.published.clear()
        for user in await self.store.list_users():
            last = self.published.get(user.id)
            if last is not None and now - last < self.config.republish_interval:
                continue
            identity = await self.store.identity(user.id)
            record = AddressRecord.create(identity, self.node.verify_key, self.endpoints,
                                          seq=int(now * 1000),
                                          expires=int(now + self.config.record_ttl),
                                          relays=self.relays, inbound=inbound)
            peers = await self.dht.publish(record)
            if peers == 0:  # kept locally only: try again at the next check, not in an hour
                log.debug("record of user=%s reached no peer yet", user.name)
                continue
            self.published[user.id] = now
            log.info("published record of user=%s to %d peer(s)", user.name, peers)

    async def _relays(self) -> tuple[Relay, ...]:
        """The current relays a record may carry: distinct, not this node, at most MAX_RELAYS."""
        if self.current_relays is None:
            return ()
        kept: dict[bytes, Relay] = {}
        for relay in await self.current_relays():
            if relay.node_key != self.node.verify_key:
                kept.setdefault(relay.node_key, relay)
        return tuple(kept.values())[:MAX_RELAYS]

    async def run(self, check_every: float = 5.0) -> None:
        while True:
            try:
                await self.publish_due()
            except Exception:
                log.exception("publishing records failed; will retry")
            await asyncio.sleep(check_every)
