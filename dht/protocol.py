"""kademlia's UDP protocol, routing table and value crawl with their 2.2.3 defects fixed.

What changes against the library, and why:

- :class:`RoutingTable.find_neighbors` ranks every known node by XOR distance. The library's
  ``TableTraverser`` walks buckets in list order, skips the remaining left-hand buckets once the
  right-hand ones run out and stops at the first k nodes it meets (kademlia issue #28), so lookups
  could start from far nodes or from none at all.
- :meth:`DhtProtocol.welcome_if_new` measures closeness to the stored key itself. The library
  hashed the already-hashed key again, so it compared against an unrelated point and new close
  nodes rarely received the records they should hold.
- :meth:`DhtProtocol.rpc_store` only accepts valid, newer address records (see
  :mod:`dht.storage`); the library stored any value under any key from any peer.
- :meth:`DhtProtocol.rpc_find_value` re-validates before answering, and answers from peers are
  checked for shape before the crawl uses them, so a malformed reply cannot crash a lookup.
- :class:`ValueGatherCrawl` keeps crawling after the first value and collects values from every
  reachable close node; the library's ``ValueSpiderCrawl`` stopped at the first round that found
  any value, so one stale or forged answer could hide the newest record.
- Datagrams are parsed defensively and every task goes through a :class:`~dht.tasks.TaskSet`.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any

import umsgpack
from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable as _KademliaRoutingTable

from dht.records import DHT_KEY_SIZE, RecordError
from dht.storage import RecordStore, validated
from dht.tasks import TaskSet

log = logging.getLogger(__name__)

_REQUEST, _RESPONSE = b"\x00", b"\x01"
_HEADER = 21  # type byte + 20-byte message id (rpcudp's framing)

RpcResult = tuple[bool, Any]


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == DHT_KEY_SIZE


def _node_list(value: object) -> list[tuple[bytes, str, int]]:
    """The well-formed ``(id, ip, port)`` triples of a peer's answer; the rest is dropped."""
    if not isinstance(value, list):
        return []
    nodes = []
    for item in value:
        if (
            isinstance(item, list | tuple)
            and len(item) == 3
            and _is_id(item[0])
            and isinstance(item[1], str)
            and type(item[2]) is int
            and 0 < item[2] < 65536
        ):
            nodes.append((item[0], item[1], item[2]))
    return nodes


class RoutingTable(_KademliaRoutingTable):  # type: ignore[misc]  # kademlia is untyped
    """The library's table with an exact nearest-neighbour search and tracked pings."""

    def __init__(self, protocol: DhtProtocol, ksize: int, node: Node, tasks: TaskSet) -> None:
        self._tasks = tasks
        super().__init__(protocol, ksize, node)

    def find_neighbors(
        self, node: Node, k: int | None = None, exclude: Node | None = None
    ) -> list[Node]:
        """The k known nodes closest to ``node`` by XOR distance (fixes kademlia issue #28).

        A full scan: the table holds at most 160·k contacts, so exactness costs little.
        """
        k = k or self.ksize
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        candidates = [
            n
            for bucket in self.buckets
            for n in bucket.get_nodes()
            if n.id != node.id and (exclude is None or not n.same_home_as(exclude))
        ]
        return heapq.nsmallest(k, candidates, key=node.distance_to)

    def add_contact(self, node: Node) -> None:
        """As the library's, but the ping of a full bucket's head is a tracked task."""
        index = self.get_bucket_for(node)
        bucket = self.buckets[index]
        if bucket.add_node(node):
            return
        if bucket.has_in_range(self.node) or bucket.depth() % 5 != 0:
            self.split_bucket(index)
            self.add_contact(node)
        else:
            self._tasks.spawn(self.protocol.call_ping(bucket.head()))

    def all_nodes(self) -> list[Node]:
        return [n for bucket in self.buckets for n in bucket.get_nodes()]


class DhtProtocol(KademliaProtocol):  # type: ignore[misc]  # kademlia is untyped
    """kademlia's RPC handlers with record validation and defensive parsing.

    Beware rpcudp's ``__getattr__``: any unknown public attribute becomes a remote call stub, so
    private state uses leading underscores and no method is named after an RPC.
    """

    def __init__(
        self,
        source_node: Node,
        storage: RecordStore,
        ksize: int,
        *,
        tasks: TaskSet,
        rpc_timeout: float,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self._wait_timeout = rpc_timeout
        self._tasks = tasks
        self._store: RecordStore = storage
        self.router = RoutingTable(self, ksize, source_node, tasks)

    # transport: rpcudp parses in fire-and-forget tasks that crash on malformed datagrams

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        kind = data[:1]
        if len(data) <= _HEADER or kind not in (_REQUEST, _RESPONSE):
            log.debug("ignoring malformed datagram from %s", addr)
            return
        try:
            message = umsgpack.unpackb(data[_HEADER:])
        except Exception:  # umsgpack raises many types on garbage
            log.debug("ignoring undecodable datagram from %s", addr)
            return
        msg_id = data[1:_HEADER]
        if kind == _RESPONSE:
            self._accept_response(msg_id, message, addr)
        else:
            self._tasks.spawn(self._answer(msg_id, message, addr))

    async def _answer(self, msg_id: bytes, message: object, addr: tuple[str, int]) -> None:
        try:
            await self._accept_request(msg_id, message, addr)
        except Exception as exc:  # a peer's bad request must not surface as our failure
            log.info("ignoring malformed request from %s: %r", addr, exc)

    def shutdown(self) -> None:
        """Fail every outstanding call now instead of after its timeout."""
        for future, timeout in self._outstanding.values():
            timeout.cancel()
            if not future.done():
                future.set_result((False, None))
        self._outstanding.clear()

    # RPC handlers (called by peers)

    def _source(self, sender: tuple[str, int], nodeid: object) -> Node | None:
        if not _is_id(nodeid):
            log.info("ignoring request with a malformed node id from %s", sender)
            return None
        source = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(source)
        return source

    def rpc_ping(self, sender: tuple[str, int], nodeid: object) -> bytes:
        self._source(sender, nodeid)
        return bytes(self.source_node.id)

    def rpc_store(
        self, sender: tuple[str, int], nodeid: object, key: object, value: object
    ) -> bool:
        """Store only a valid record under its own key that is newer than what we hold."""
        if self._source(sender, nodeid) is None:
            return False
        try:
            self._store.offer(key, value)
        except RecordError as exc:
            log.info("refused store from %s:%s: %s", sender[0], sender[1], exc)
            return False
        assert isinstance(key, bytes)  # offer() accepted it
        log.debug("stored record %s from %s:%s", key.hex(), sender[0], sender[1])
        return True

    def rpc_find_node(
        self, sender: tuple[str, int], nodeid: object, key: object
    ) -> list[tuple[bytes, str, int]]:
        source = self._source(sender, nodeid)
        if source is None or not _is_id(key):
            return []
        neighbors = self.router.find_neighbors(Node(key), exclude=source)
        return [tuple(n) for n in neighbors]

    def rpc_find_value(
        self, sender: tuple[str, int], nodeid: object, key: object
    ) -> dict[str, object] | list[tuple[bytes, str, int]]:
        """The held record if it is still valid, plus neighbours so crawls can go on past us."""
        nodes = self.rpc_find_node(sender, nodeid, key)
        if not _is_id(key):
            return nodes
        assert isinstance(key, bytes)
        value = self._store.get(key)
        if value is None:
            return nodes
        try:
            validated(key, value, self._store.now())
        except RecordError as exc:
            log.warning("not serving held record %s: %s", key.hex(), exc)
            return nodes
        return {"value": value, "nodes": nodes}

    # calls to peers: check the shape of their answers before anything else uses them

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> RpcResult:
        ok, answer = await super().call_find_node(node_to_ask, node_to_find)
        return (True, _node_list(answer)) if ok else (False, None)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> RpcResult:
        ok, answer = await super().call_find_value(node_to_ask, node_to_find)
        if not ok:
            return (False, None)
        if isinstance(answer, dict):
            value = answer.get("value")
            nodes = _node_list(answer.get("nodes"))
            return (True, {"value": value, "nodes": nodes} if isinstance(value, bytes) else nodes)
        return (True, _node_list(answer))

    def welcome_if_new(self, node: Node) -> None:
        """Hand a newly seen node the records it should hold, then add it to the table.

        Per section 2.5 of the paper: send a record if the new node is among the k closest to its
        key and we are closer to the key than any other node we know (so one node sends it).
        Unlike the library, closeness is measured to the key itself, not to digest(key), and a
        table with fewer than k nodes counts everyone as close.
        """
        if not self.router.is_new_node(node):
            return
        log.debug("new DHT contact %s", node)
        for key, value in self._store:
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                new_distance = node.distance_to(keynode)
                new_is_close = (
                    len(neighbors) < self.router.ksize
                    or new_distance < neighbors[-1].distance_to(keynode)
                )
                our_distance = self.source_node.distance_to(keynode)
                if not (new_is_close and our_distance < neighbors[0].distance_to(keynode)):
                    continue
            self._tasks.spawn(self.call_store(node, key, value))
        self.router.add_contact(node)


class ValueGatherCrawl(NodeSpiderCrawl):  # type: ignore[misc]  # kademlia is untyped
    """Crawl towards a key like a node lookup, collecting every value the close nodes hold.

    After :meth:`find`, ``values`` maps responding peer ids to the raw value each returned
    (unverified: the caller validates), and ``nearest`` holds the k closest live nodes.
    """

    def __init__(
        self, protocol: DhtProtocol, node: Node, peers: list[Node], ksize: int, alpha: int
    ) -> None:
        super().__init__(protocol, node, peers, ksize, alpha)
        self.values: dict[bytes, bytes] = {}

    async def find(self) -> list[Node]:
        return list(await self._find(self.protocol.call_find_value))

    async def _nodes_found(self, responses: dict[bytes, RpcResult]) -> list[Node]:
        unreachable = []
        for peer_id, answer in responses.items():
            response = RPCFindResponse(answer)
            if not response.happened():
                unreachable.append(peer_id)
            elif response.has_value():
                self.values[peer_id] = response.get_value()
                self.nearest.push([Node(*n) for n in answer[1]["nodes"]])
            else:
                self.nearest.push(response.get_node_list())
        self.nearest.remove(unreachable)
        if self.nearest.have_contacted_all():
            return list(self.nearest)
        return await self.find()
