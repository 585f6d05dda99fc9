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
  Only the four Kademlia RPCs can be called, nothing a peer sends reaches a log line unescaped,
  and an unanswered call or a stray response is a DEBUG line, not an ERROR or WARNING flood.

Against a hostile network (see :mod:`dht.limits`):

- The routing table holds one node id per ip:port and at most a few contacts per IP and per
  subnet, per bucket and overall; configured bootstrap peers are exempt. A contact that answered
  our requests is not displaced or moved by an unproven claim to its id or address, and a failed
  call only removes the contact if it was made to the address the table holds.
- :meth:`DhtProtocol.welcome_if_new` does constant work per datagram: records are handed to a
  new close contact by the paced :class:`~dht.handover.Handover`, and only once it has answered.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import umsgpack
from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable as _KademliaRoutingTable

from dht.handover import Handover
from dht.limits import DEFAULT_LIMITS, Address, DhtLimits, TokenBucket, shown, subnet
from dht.records import DHT_KEY_SIZE, RecordError
from dht.storage import RecordStore, validated
from dht.tasks import TaskSet

log = logging.getLogger(__name__)

_REQUEST, _RESPONSE = b"\x00", b"\x01"
_HEADER = 21  # type byte + 20-byte message id (rpcudp's framing)

RpcResult = tuple[bool, Any]
_RPCS = frozenset({"ping", "store", "find_node", "find_value"})


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == DHT_KEY_SIZE


def _is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(value)  # type: ignore[arg-type]  # anything may come in
    except ValueError:
        return False
    return True


def _node_list(value: object) -> list[tuple[bytes, str, int]]:
    """The well-formed ``(id, ip, port)`` triples of a peer's answer; the rest is dropped.

    The ip must be an IP address: it ends up in log lines and in the addresses we send to.
    """
    if not isinstance(value, list):
        return []
    nodes = []
    for item in value:
        if (
            isinstance(item, list | tuple)
            and len(item) == 3
            and _is_id(item[0])
            and isinstance(item[1], str)
            and _is_ip(item[1])
            and type(item[2]) is int
            and 0 < item[2] < 65536
        ):
            nodes.append((item[0], item[1], item[2]))
    return nodes


class RoutingTable(_KademliaRoutingTable):  # type: ignore[misc]  # kademlia is untyped
    """The library's table with an exact nearest-neighbour search, tracked pings and caps.

    ``protected`` is the set of addresses exempt from the per-address caps: the configured
    bootstrap peers now, friends' nodes later. It is shared with the owner, who may add to it.
    """

    def __init__(
        self,
        protocol: DhtProtocol,
        ksize: int,
        node: Node,
        tasks: TaskSet,
        limits: DhtLimits = DEFAULT_LIMITS,
        protected: set[Address] | None = None,
    ) -> None:
        self._tasks = tasks
        self._limits = limits
        self.protected: set[Address] = set() if protected is None else protected
        self._verified: set[bytes] = set()  # ids of contacts that answered one of our calls
        self._pinging: set[bytes] = set()  # bucket heads with a liveness ping in flight
        super().__init__(protocol, ksize, node)

    def find_neighbors(
        self, node: Node, k: int | None = None, exclude: Node | None = None
    ) -> list[Node]:
        """The k known nodes closest to ``node`` by XOR distance (fixes kademlia issue #28)."""
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        return self.nearest(node, k, exclude)

    def nearest(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[Node]:
        """:meth:`find_neighbors` without marking the bucket as used (for internal scans).

        A full scan: the table holds at most 160·k contacts, so exactness costs little.
        """
        k = k or self.ksize
        candidates = [
            n
            for bucket in self.buckets
            for n in bucket.get_nodes()
            if n.id != node.id and (exclude is None or not n.same_home_as(exclude))
        ]
        return heapq.nsmallest(k, candidates, key=node.distance_to)

    def _entries(self) -> Iterator[tuple[int, Node]]:
        """Every contact with its bucket index, replacement candidates included (they are
        promoted without another check when a contact leaves)."""
        for index, bucket in enumerate(self.buckets):
            for n in bucket.nodes.values():
                yield index, n
            for n in bucket.replacement_nodes.values():
                yield index, n

    def add_contact(self, node: Node, verified: bool = False) -> bool:
        """Add or refresh ``node``; False if refused. ``verified``: it answered our call.

        Refused: a second id at a known ip:port; a known id at a new address, unless only the
        new one has answered us; and a new contact whose IP or subnet already has its share of
        the table or of the bucket (unless its address is protected). A contact that answered
        us displaces an unproven one at the same address (which may have been spoofed).
        """
        if node.id == self.node.id:
            # Ourselves, seen at an address a peer knows us by: a contact of ours would make
            # us publish, save and dial that address as a peer's (seen with nodes on one
            # machine reached both on loopback and on a LAN address).
            return False
        address = (node.ip, node.port)
        index = self.get_bucket_for(node)
        net = subnet(node.ip)
        same_id: Node | None = None
        same_address: Node | None = None
        present = 0
        ip_table = ip_bucket = net_table = net_bucket = 0
        for i, entry in self._entries():
            present += 1
            if entry.id == node.id:
                same_id = entry
                continue
            if (entry.ip, entry.port) == address:
                same_address = entry
                continue
            if subnet(entry.ip) == net:
                net_table += 1
                net_bucket += i == index
                if entry.ip == node.ip:
                    ip_table += 1
                    ip_bucket += i == index
        if same_address is not None:
            if not verified or same_address.id in self._verified:
                return False
            self.remove_contact(same_address)
        moving = same_id is None or not same_id.same_home_as(node)
        if same_id is not None and moving and (same_id.id in self._verified or not verified):
            return False
        limits = self._limits
        if (
            moving
            and address not in self.protected
            and (
                ip_bucket >= limits.contacts_per_ip_bucket
                or ip_table >= limits.contacts_per_ip
                or net_bucket >= limits.contacts_per_subnet_bucket
                or net_table >= limits.contacts_per_subnet
            )
        ):
            return False
        if len(self._verified) > 2 * present + 64:  # forget ids that left the table silently
            self._verified &= {entry.id for _, entry in self._entries()}
        if verified:
            self._verified.add(node.id)
        self._insert(node)
        return True

    def _insert(self, node: Node) -> None:
        """The library's insertion; a full bucket's head gets one tracked ping at a time."""
        index = self.get_bucket_for(node)
        bucket = self.buckets[index]
        if bucket.add_node(node):
            return
        if bucket.has_in_range(self.node) or bucket.depth() % 5 != 0:
            self.split_bucket(index)
            self._insert(node)
            return
        head = bucket.head()
        if head.id not in self._pinging:
            self._pinging.add(head.id)
            self._tasks.spawn(self._ping_head(head))

    async def _ping_head(self, head: Node) -> None:
        try:
            await self.protocol.call_ping(head)
        finally:
            self._pinging.discard(head.id)

    def remove_contact(self, node: Node) -> None:
        """Remove ``node`` only if the table has it at that address.

        A peer can name a real contact's id at a dead address in its answers; our call there
        failing must not cost us the real contact.
        """
        bucket = self.buckets[self.get_bucket_for(node)]
        known = bucket.nodes.get(node.id) or bucket.replacement_nodes.get(node.id)
        if known is not None and known.same_home_as(node):
            bucket.remove_node(node)
            self._verified.discard(node.id)

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
        limits: DhtLimits = DEFAULT_LIMITS,
        protected: set[Address] | None = None,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self._wait_timeout = rpc_timeout
        self._tasks = tasks
        self._store: RecordStore = storage
        self.router = RoutingTable(self, ksize, source_node, tasks, limits, protected)
        self._limits = limits
        self._handover = Handover(limits, time.monotonic())
        self._handover_task: asyncio.Task[None] | None = None
        self._request_budgets: OrderedDict[str, TokenBucket] = OrderedDict()

    # transport: rpcudp parses in fire-and-forget tasks that crash on malformed datagrams

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        kind = data[:1]
        if len(data) <= _HEADER or kind not in (_REQUEST, _RESPONSE):
            log.debug("ignoring malformed datagram from %s", shown(addr))
            return
        try:
            message = umsgpack.unpackb(data[_HEADER:])
        except Exception:  # umsgpack raises many types on garbage
            log.debug("ignoring undecodable datagram from %s", shown(addr))
            return
        msg_id = data[1:_HEADER]
        if kind == _RESPONSE:
            self._accept_response(msg_id, message, addr)
        elif self._may_ask(addr[0], time.monotonic()):
            self._tasks.spawn(self._answer(msg_id, message, addr))
        else:
            log.debug("dropping a request from %s: over its rate", shown(addr))

    def _may_ask(self, ip: str, now: float) -> bool:
        """Spend one of ``ip``'s request tokens (the least recently seen IP is forgotten)."""
        budget = self._request_budgets.pop(ip, None)
        if budget is None:
            limits = self._limits
            budget = TokenBucket(limits.requests_per_ip_second, limits.requests_per_ip_burst, now)
            while len(self._request_budgets) >= limits.tracked_ips:
                self._request_budgets.popitem(last=False)
        self._request_budgets[ip] = budget
        return budget.take(now)

    async def _answer(self, msg_id: bytes, message: object, addr: tuple[str, int]) -> None:
        try:
            await self._accept_request(msg_id, message, addr)
        except Exception as exc:  # a peer's bad request must not surface as our failure
            log.debug("ignoring malformed request from %s: %s", shown(addr), shown(repr(exc)))

    async def _accept_request(self, msg_id: bytes, data: object, address: Address) -> None:
        """rpcudp's, restricted to the Kademlia RPCs and without logging what the peer sent."""
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[1], list)):
            log.debug("ignoring malformed request from %s", shown(address))
            return
        name, args = data
        if not isinstance(name, str) or name not in _RPCS:
            log.debug("ignoring call of unknown method %s from %s", shown(repr(name)), address)
            return
        response = getattr(self, f"rpc_{name}")(address, *args)
        if self.transport is not None:
            self.transport.sendto(_RESPONSE + msg_id + umsgpack.packb(response), address)

    def _accept_response(self, msg_id: bytes, data: object, address: Address) -> None:
        """rpcudp's, but a response nobody waits for (late, or a stranger's) is a DEBUG line."""
        entry = self._outstanding.pop(msg_id, None)
        if entry is None:
            log.debug("ignoring an unexpected response from %s", shown(address))
            return
        future, timeout = entry
        timeout.cancel()
        if not future.done():
            future.set_result((True, data))

    def _timeout(self, msg_id: bytes) -> None:
        """rpcudp logged every unanswered call as an ERROR; a peer going offline is normal."""
        entry = self._outstanding.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

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
            log.debug("ignoring request with a malformed node id from %s", shown(sender))
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
            self._store.offer(key, value, origin=sender[0])
        except RecordError as exc:
            log.debug("refused store from %s: %s", shown(sender), shown(exc))
            return False
        assert isinstance(key, bytes)  # offer() accepted it
        log.debug("stored record %s from %s", key.hex(), shown(sender))
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

    async def call_ping(self, node_to_ask: Node) -> RpcResult:
        """Ping ``node_to_ask``; an answer with another node id counts as no answer."""
        ok, answer = await self.ping((node_to_ask.ip, node_to_ask.port), self.source_node.id)
        result = (True, answer) if ok and answer == node_to_ask.id else (False, None)
        return self.handle_call_response(result, node_to_ask)

    def handle_call_response(self, result: RpcResult, node: Node) -> RpcResult:
        """As the library's (a contact that answers is welcome, one that does not is dropped),
        with the answer marking it verified and silence logged as what it is: ordinary."""
        if not result[0]:
            log.debug("no response from %s; dropping it from the routing table", node)
            self.router.remove_contact(node)
            self._handover.forget(node.id)
            return result
        self.welcome_if_new(node, verified=True)
        return result

    def welcome_if_new(self, node: Node, verified: bool = False) -> None:
        """Add ``node`` to the table (within its caps); a new contact is queued for hand-over.

        Per section 2.5 of the paper a new node is sent the records it should hold; the library
        did that here, for every held record, on any datagram from an unknown id. Now this is
        constant work: :class:`~dht.handover.Handover` paces the scan and the STOREs, and an
        unverified contact (it only sent us requests) is pinged before it gets anything.
        """
        is_new = self.router.is_new_node(node)
        if not self.router.add_contact(node, verified=verified):
            return
        if not is_new or self.router.is_new_node(node) or not self._store.has_records():
            return  # known, only a replacement candidate, or nothing to hand over
        log.debug("new DHT contact %s", node)
        if self._handover.offer(node, verified=verified):
            self._start_handover()

    def handover_pending(self) -> int:
        """How many contacts wait for records (diagnostics and tests)."""
        return len(self._handover)

    def _should_hold(self, contact: Node, key: bytes) -> bool:
        """Whether ``contact`` should be handed ``key`` by us (section 2.5 of the paper).

        It should if it is among the k closest to the key and we are closer than every other
        node we know (so only one node sends it). Unlike the library, closeness is measured to
        the key itself, not to digest(key), and a table with fewer than k other nodes counts
        everyone as close.
        """
        keynode = Node(key)
        neighbors = self.router.nearest(keynode, exclude=contact)
        if not neighbors:
            return True
        new_is_close = len(neighbors) < self.router.ksize or contact.distance_to(
            keynode
        ) < neighbors[-1].distance_to(keynode)
        our_distance = self.source_node.distance_to(keynode)
        return bool(new_is_close and our_distance < neighbors[0].distance_to(keynode))

    def _start_handover(self) -> None:
        if self._handover_task is None or self._handover_task.done():
            self._handover_task = self._tasks.spawn(self._hand_over())

    async def _hand_over(self) -> None:
        """Run hand-over steps until nothing is left that can proceed without an answer."""
        while True:
            step = self._handover.step(time.monotonic(), self._store.keys, self._should_hold)
            for contact in step.pings:
                self._tasks.spawn(self._verify(contact))
            for contact, key in step.stores:
                value = self._store.get(key)
                if value is not None:
                    self._tasks.spawn(self.call_store(contact, key, value))
            if step.delay is None:
                return
            await asyncio.sleep(step.delay)

    async def _verify(self, contact: Node) -> None:
        ok, _ = await self.call_ping(contact)
        self._handover.answered(contact.id, ok)
        if ok:
            self._start_handover()


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
