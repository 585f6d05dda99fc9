"""Publishing where each local user's mail is accepted: their signed DHT records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from crypto.keys import Identity
from dht.node import DhtNode
from dht.records import MAX_ENDPOINTS, AddressRecord
from mailnode.addressing import Endpoint
from mailnode.config import Config
from mailnode.store.sqlite import SqlStore

log = logging.getLogger(__name__)


class Publisher:
    """Keeps every local user's DHT record fresh: new users at once, all before expiry."""

    def __init__(self, store: SqlStore, dht: DhtNode, node: Identity, config: Config,
                 endpoints: Callable[[], list[Endpoint]],
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.dht, self.node, self.config = store, dht, node, config
        self.current_endpoints = endpoints
        """Where peers reach us now (``mailnode.addressing``); asked before every pass."""
        self.endpoints: tuple[Endpoint, ...] = ()
        self.clock = clock
        self.published: dict[int, float] = {}

    async def publish_due(self) -> None:
        now = self.clock()
        endpoints = tuple(self.current_endpoints()[:MAX_ENDPOINTS])
        if endpoints != self.endpoints:
            # A new address (another network, a first peer elsewhere): every record says
            # the old one, so all are published again now, not at their next renewal.
            log.info("publishing transfer endpoint(s) %s",
                     ", ".join(f"{h}:{p}" for h, p in endpoints))
            self.endpoints = endpoints
            self.published.clear()
        for user in await self.store.list_users():
            last = self.published.get(user.id)
            if last is not None and now - last < self.config.republish_interval:
                continue
            identity = await self.store.identity(user.id)
            record = AddressRecord.create(identity, self.node.verify_key, self.endpoints,
                                          seq=int(now * 1000),
                                          expires=int(now + self.config.record_ttl))
            peers = await self.dht.publish(record)
            if peers == 0:  # kept locally only: try again at the next check, not in an hour
                log.debug("record of user=%s reached no peer yet", user.name)
                continue
            self.published[user.id] = now
            log.info("published record of user=%s to %d peer(s)", user.name, peers)

    async def run(self, check_every: float = 5.0) -> None:
        while True:
            try:
                await self.publish_due()
            except Exception:
                log.exception("publishing records failed; will retry")
            await asyncio.sleep(check_every)
