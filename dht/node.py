"""A DHT node: joins the Kademlia network, publishes address records and looks them up.

:class:`DhtNode` is the only public face; it wraps a :class:`kademlia.network.Server` subclass
whose storing, fetching and republishing are fixed as described in :mod:`dht.protocol`, and it
owns every task and timer it starts so :meth:`DhtNode.stop` really stops it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.utils import digest

from dht.kad.contact import node_id_for
from dht.limits import DEFAULT_LIMITS, DhtLimits
from dht.protocol import DhtProtocol, RoutingTable, ValueGatherCrawl
from dht.records import AddressRecord, RecordError, dht_key
from dht.storage import RecordStore, validated
from dht.tasks import TaskSet

log = logging.getLogger(__name__)

Address = tuple[str, int]


class _Server(Server):  # type: ignore[misc]  # kademlia is untyped
    """kademlia's server with validated, counted stores and a gathering, validating lookup."""

    protocol: DhtProtocol
    storage: RecordStore

    def __init__(
        self,
        *,
        ksize: int,
        alpha: int,
        node_id: bytes,
        storage: RecordStore,
        tasks: TaskSet,
        rpc_timeout: float,
        limits: DhtLimits,
        protected: set[Address],
    ) -> None:
        super().__init__(ksize=ksize, alpha=alpha, node_id=node_id, storage=storage)
        self.storage = storage  # the library's `storage or ForgetfulStorage()` drops an empty one
        self._tasks = tasks
        self._rpc_timeout = rpc_timeout
        self._limits = limits
        self._protected = protected

    def _create_protocol(self) -> DhtProtocol:
        return DhtProtocol(
            self.node,
            self.storage,
            self.ksize,
            tasks=self._tasks,
            rpc_timeout=self._rpc_timeout,
            limits=self._limits,
            protected=self._protected,
        )

    @property
    def router(self) -> RoutingTable:
        router: RoutingTable = self.protocol.router
        return router

    async def listen(self, port: int, interface: str = "127.0.0.1") -> None:
        """Bind the UDP socket; unlike the library, schedules nothing (DhtNode owns the timers)."""
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            self._create_protocol, local_addr=(interface, port)
        )

    async def bootstrap_node(self, addr: Address) -> Node | None:
        """Ping one bootstrap address; None if it is down, unreachable or answers nonsense."""
        try:
            ok, node_id = await self.protocol.ping(addr, self.node.id)
        except (OSError, ValueError) as exc:  # e.g. an unresolvable or malformed address
            log.warning("cannot reach bootstrap peer %s:%s: %s", addr[0], addr[1], exc)
            return None
        if not ok or not isinstance(node_id, bytes) or len(node_id) != 20:
            return None
        return Node(node_id, addr[0], addr[1])

    async def _closest_nodes(self, dkey: bytes) -> list[Node]:
        node = Node(dkey)
        nearest = self.router.find_neighbors(node)
        if not nearest:
            return []
        found = await NodeSpiderCrawl(self.protocol, node, nearest, self.ksize, self.alpha).find()
        return [n for n in found if n.id != self.node.id]

    async def set_digest(self, dkey: bytes, value: bytes) -> int:
        """Store ``value`` at the k closest peers; returns how many accepted it.

        The library returned ``any()`` over (ok, answer) tuples, which is always true.
        """
        nodes = await self._closest_nodes(dkey)
        answers = await asyncio.gather(*(self.protocol.call_store(n, dkey, value) for n in nodes))
        acks = sum(1 for ok, accepted in answers if ok and accepted is True)
        # A node without peers (a first run, a private node) retries every few seconds:
        # that is DhtNode's one line "no DHT peers known", not one line per attempt.
        log.log(logging.INFO if nodes else logging.DEBUG,
                "stored record %s at %d of %d close peers", dkey.hex(), acks, len(nodes))
        return acks

    async def find_record(self, dkey: bytes) -> AddressRecord | None:
        """The valid record with the highest seq among ours and every reachable close node's.

        Close nodes that answered without it (or with an older one) are sent the winner, as
        the paper's caching step does, so the network heals after churn.
        """
        candidates: list[bytes] = []
        if (local := self.storage.get(dkey)) is not None:
            candidates.append(local)
        crawl: ValueGatherCrawl | None = None
        node = Node(dkey)
        nearest = self.router.find_neighbors(node)
        if nearest:
            crawl = ValueGatherCrawl(self.protocol, node, nearest, self.ksize, self.alpha)
            await crawl.find()
            candidates.extend(crawl.values.values())
        now = self.storage.now()
        best: tuple[int, bytes, AddressRecord] | None = None
        for value in candidates:
            try:
                record = validated(dkey, value, now)
            except RecordError as exc:
                log.info("discarding a record for %s: %s", dkey.hex(), exc)
                continue
            if best is None or (record.seq, value) > best[:2]:
                best = (record.seq, value, record)
        if best is None:
            return None
        if crawl is not None:
            for peer in crawl.nearest:
                if peer.id != self.node.id and crawl.values.get(peer.id) != best[1]:
                    self._tasks.spawn(self.protocol.call_store(peer, dkey, best[1]))
        return best[2]

    async def get(self, key: object) -> bytes | None:
        """The library's ``get``, fixed: every close node is asked and the best record wins."""
        record = await self.find_record(digest(key))
        return None if record is None else record.encode()

    async def refresh(self, republish_after: float) -> None:
        """Refresh lonely buckets and our own neighbourhood, then republish held records.

        Replaces the library's ``_refresh_table``; records are pushed under their own key (the
        stores they reach re-validate them) and only if nobody re-stored them recently.
        """
        ids = [self.node.id, *self.protocol.get_refresh_ids()]
        for node_id in ids:
            await self._closest_nodes(node_id)
        for dkey, value in self.storage.iter_older_than(republish_after):
            self.storage.touch(dkey)
            await self.set_digest(dkey, value)


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address (not a name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def node_id_of(seed: bytes) -> bytes:
    """The DHT id of the node whose ``node_id_seed`` (its public key) is ``seed``."""
    return node_id_for(seed)


def _node_id(seed: bytes | None) -> bytes:
    return os.urandom(20) if seed is None else node_id_of(seed)


class DhtNode:
    """A member of the mailnode DHT serving signed address records.

    ``node_id_seed`` makes the Kademlia id stable across restarts (e.g. the node's public key);
    ``clock`` gives unix seconds and decides expiry. Intervals are in seconds: the routing table
    and held records are refreshed every ``refresh_interval``, a held record is republished when
    nobody stored it for ``republish_interval``, and bootstrapping is retried every
    ``bootstrap_interval`` while no peer is known.

    ``limits`` caps what strangers can make the node hold or send (see :class:`DhtLimits`).
    ``protected_peers`` (host, port) are exempt from the per-address caps on contacts and listed
    first by :meth:`peers`: the configured bootstrap peers, and the hook for friends' nodes.
    """

    def __init__(
        self,
        node_id_seed: bytes | None = None,
        *,
        clock: Callable[[], float] = time.time,
        ksize: int = 20,
        alpha: int = 3,
        rpc_timeout: float = 5.0,
        refresh_interval: float = 3600.0,
        republish_interval: float = 3600.0,
        bootstrap_interval: float = 30.0,
        max_records: int = 100_000,
        limits: DhtLimits = DEFAULT_LIMITS,
        protected_peers: Sequence[Address] = (),
    ) -> None:
        self._tasks = TaskSet()
        self._storage = RecordStore(clock, max_records, limits)
        self._protected_names = {(host, port) for host, port in protected_peers}
        # their IP addresses: given, or as resolved at each bootstrap
        self._protected: set[Address] = {a for a in self._protected_names if is_ip(a[0])}
        self._server = _Server(
            ksize=ksize,
            alpha=alpha,
            node_id=_node_id(node_id_seed),
            storage=self._storage,
            tasks=self._tasks,
            rpc_timeout=rpc_timeout,
            limits=limits,
            protected=self._protected,
        )
        self._refresh_interval = refresh_interval
        self._republish_interval = republish_interval
        self._bootstrap_interval = bootstrap_interval
        self._bootstrap_peers: list[Address] = []
        self._alone: bool | None = None  # unknown until the first check
        self._started = False

    @property
    def node_id(self) -> bytes:
        node_id: bytes = self._server.node.id
        return node_id

    @property
    def port(self) -> int:
        """The bound UDP port (useful after starting on port 0)."""
        if self._server.transport is None:
            raise RuntimeError("the DHT node is not started")
        port: int = self._server.transport.get_extra_info("sockname")[1]
        return port

    @property
    def storage(self) -> RecordStore:
        """The records this node holds for the network (read-only use, e.g. diagnostics)."""
        return self._storage

    async def start(self, host: str, port: int, bootstrap: Sequence[Address] = ()) -> None:
        """Listen on ``host:port`` (port 0 picks one) and join via ``bootstrap`` if given.

        Unreachable bootstrap peers are not an error: they are retried while no peer is known.
        """
        if self._started:
            raise RuntimeError("the DHT node is already started")
        self._started = True
        await self._server.listen(port, host)
        log.info("DHT node %s listening on %s:%d", self.node_id.hex(), host, self.port)
        self._tasks.spawn(self._every(self._refresh_interval, self._refresh))
        self._tasks.spawn(self._every(self._bootstrap_interval, self._retry_bootstrap))
        if bootstrap:
            await self.bootstrap(bootstrap)

    async def bootstrap(self, peers: Sequence[Address]) -> int:
        """Join through ``peers`` (remembered for later retries); returns the peer count."""
        self._require_started()
        for peer in peers:
            address = (peer[0], peer[1])
            if address not in self._bootstrap_peers:
                self._bootstrap_peers.append(address)
        addresses = await self._resolve(peers)
        if addresses:
            await self._server.bootstrap(addresses)
        log.info("DHT bootstrap done: %d peers known", self.peer_count())
        return self.peer_count()

    async def publish(self, record: AddressRecord) -> int:
        """Keep ``record`` here and store it at the k closest peers; returns how many accepted.

        Raises RecordError if the record is invalid, expired, or older than the one held here.
        """
        self._require_started()
        key = dht_key(record.user_key)
        self._storage.offer(key, record.encode())
        return await self._server.set_digest(key, record.encode())

    async def lookup(self, user_key: bytes) -> AddressRecord | None:
        """The newest valid record for ``user_key`` found here or at the close nodes, if any."""
        self._require_started()
        return await self._server.find_record(dht_key(user_key))

    def held(self, user_key: bytes) -> AddressRecord | None:
        """The valid record for ``user_key`` this node already holds, without asking anyone.

        Enough to know an address is published (e.g. to accept a recipient); delivery still
        uses :meth:`lookup` for the newest record.
        """
        return self._storage.record(dht_key(user_key))

    def peer_count(self) -> int:
        return len(self.peers())

    def contact_ids(self) -> set[bytes]:
        """Ids of the nodes in the routing table (a node seen again shows up here)."""
        if self._server.protocol is None:
            return set()
        return {bytes(n.id) for n in self._server.router.all_nodes()}

    def contact_address(self, node_id: bytes) -> Address | None:
        """Where the routing table last saw the node with ``node_id`` (None: not a contact)."""
        if self._server.protocol is None:
            return None
        for n in self._server.router.all_nodes():
            if bytes(n.id) == node_id:
                return (n.ip, n.port)
        return None

    def protect(self, peers: Sequence[Address]) -> None:
        """Exempt ``peers`` from the contact caps and list them first (friends' nodes, added
        while running)."""
        for host, port in peers:
            self._protected_names.add((host, port))
            if is_ip(host):
                self._protected.add((host, port))

    def peers(self) -> list[Address]:
        """Addresses of the nodes in the routing table, protected peers first (so a saved,
        capped list keeps them)."""
        if self._server.protocol is None:
            return []
        addresses = [(n.ip, n.port) for n in self._server.router.all_nodes()]
        return sorted(addresses, key=lambda a: a not in self._protected)

    def stop(self) -> None:
        """Close the socket and cancel every task and pending call this node started."""
        self._tasks.cancel_all()
        if self._server.protocol is not None:
            self._server.protocol.shutdown()
        self._server.stop()

    async def aclose(self) -> None:
        """:meth:`stop`, then wait until the cancelled tasks have finished."""
        pending = self._tasks.cancel_all()
        self.stop()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _resolve(self, peers: Sequence[Address]) -> list[Address]:
        """IP addresses for ``peers``: kademlia's routing only works with IPs, not host names.

        Names are resolved off the event loop, again on every retry (dynamic DNS).
        """
        loop = asyncio.get_running_loop()
        family = self._server.transport.get_extra_info("socket").family
        addresses: list[Address] = []
        for host, port in peers:
            if is_ip(host):
                resolved = [(host, port)]
            else:
                try:
                    infos = await loop.getaddrinfo(
                        host, port, family=family, type=socket.SOCK_DGRAM
                    )
                except OSError as exc:
                    log.warning("cannot resolve bootstrap peer %s:%s: %s", host, port, exc)
                    continue
                resolved = [(str(info[4][0]), int(info[4][1])) for info in infos[:1]]
            if (host, port) in self._protected_names:
                self._protected.update(resolved)
            addresses.extend(resolved)
        return addresses

    def _require_started(self) -> None:
        if self._server.protocol is None or self._tasks.closed:
            raise RuntimeError("the DHT node is not running")

    async def _every(self, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception:
                log.exception("DHT maintenance failed")

    async def _refresh(self) -> None:
        self._storage.cull()
        await self._server.refresh(self._republish_interval)

    async def _retry_bootstrap(self) -> None:
        self._note_peers()
        if self.peer_count() == 0 and self._bootstrap_peers:
            log.debug("no DHT peers known; retrying bootstrap")
            await self.bootstrap(self._bootstrap_peers)
            self._note_peers()

    def _note_peers(self) -> None:
        """One INFO line when the node finds itself alone and one when it has peers again."""
        alone = self.peer_count() == 0
        if alone == self._alone:
            return
        if alone:
            how = (f"retrying its bootstrap peers every {self._bootstrap_interval:.0f} s"
                   if self._bootstrap_peers else "no bootstrap peers configured")
            log.info("no DHT peers known: this node is on its own until a peer reaches it "
                     "(%s)", how)
        elif self._alone is not None:
            log.info("joined the DHT: %d peers known", self.peer_count())
        self._alone = alone
