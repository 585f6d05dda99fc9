"""The DHT on a real UDP socket: a thin asyncio adapter over :class:`dht.kad.rpc.RpcEngine`.

Shaped like aioquic's: this module only moves datagrams between the socket and the engine,
turns engine events into resolved futures or handler calls, and keeps one timer armed at the
engine's next deadline. It starts no tasks; the timer and the waiting futures are all it owns,
and :meth:`UdpEndpoint.close` cancels the one and resolves the others.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from dht.kad import wire
from dht.kad.contact import Contact
from dht.kad.messages import Ping, Pong, Reply, Request
from dht.kad.rpc import ANY_KEY, Dropped, IncomingReply, IncomingRequest, RpcBusy, RpcEngine
from dht.limits import shown

log = logging.getLogger(__name__)

Handler = Callable[[Contact, Request, float], Reply | None]
"""Answers an authenticated request from ``contact`` at time ``now`` (None: no answer)."""


READ_BATCH = 64
"""Datagrams read per wake-up of the socket. asyncio's datagram transport reads one per loop
iteration, so a node sharing a busy loop drained its socket at one datagram per iteration:
with a few hundred nodes in a process (the benchmark) an iteration took ~0.2 s, replies
queued past the RPC timeout, the timeouts evicted live contacts and the re-adds cost pings,
which queued more. Reading what is waiting (bounded, so one flooded socket cannot starve the
loop) keeps a reply's wait to one iteration."""


class UdpEndpoint:
    """One DHT socket: ``query`` peers, answer them through ``handler``; ``engine`` (built by
    the caller, with the node's identity, limits and timeout) makes every decision."""

    def __init__(self, engine: RpcEngine, handler: Handler) -> None:
        self.engine = engine
        self._handler = handler
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[bytes, asyncio.Future[Reply | None]] = {}
        self._learned: dict[bytes, Contact | None] = {}  # probes: who answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._ipv6 = False

    async def start(self, host: str, port: int) -> None:
        """Bind ``host:port`` (an IPv4 or IPv6 literal; port 0 picks one)."""
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
            self._loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._ipv6 = family == socket.AF_INET6

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        if self._sock is None:
            raise RuntimeError("not started")
        sockname = self._sock.getsockname()
        return (str(sockname[0]), int(sockname[1]))

    async def query(self, contact: Contact, request: Request) -> Reply | None:
        """Ask ``contact``; its authenticated reply, or None on timeout, overload or close.

        A contact whose host is not an IP literal raises :class:`dht.kad.wire.EncodeError`
        (contacts from the wire always are; one from configuration must be resolved first);
        one whose key is no valid public key fails at once (None), as nobody can answer it.
        """
        if self._sock is None or self._loop is None:
            return None
        try:
            request_id, datagram = self.engine.request(contact, request, self._loop.time())
        except RpcBusy:
            log.warning("dht: too many requests in flight; query to %s dropped", contact.host)
            return None
        except wire.UnusableKey:
            return None
        future: asyncio.Future[Reply | None] = self._loop.create_future()
        self._waiting[request_id] = future
        self._send(datagram, contact.address)
        self._arm()
        try:
            return await future
        finally:
            if self._waiting.pop(request_id, None) is not None:  # cancelled while waiting
                self.engine.cancel(request_id)

    async def probe(self, address: tuple[str, int]) -> Contact | None:
        """Who answers at ``address`` (an IP literal): a Ping to :data:`ANY_KEY` whose signed
        Pong proves the answerer's key; None on timeout. How a bootstrap peer known only by
        its address becomes a contact."""
        if self._sock is None or self._loop is None:
            return None
        try:
            request_id, datagram = self.engine.request(
                Contact(ANY_KEY, address[0], address[1]), Ping(), self._loop.time()
            )
        except RpcBusy:
            return None
        future: asyncio.Future[Reply | None] = self._loop.create_future()
        self._waiting[request_id] = future
        self._learned[request_id] = None
        self._send(datagram, address)
        self._arm()
        try:
            await future
            return self._learned.get(request_id)
        finally:
            self._learned.pop(request_id, None)
            if self._waiting.pop(request_id, None) is not None:
                self.engine.cancel(request_id)

    async def close(self) -> None:
        """Stop the timer, end every waiting query with None, and close the socket."""
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the timer, end every waiting query with None, and close the socket (at once:
        :meth:`close` is the same, for callers that await)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self._waiting.clear()
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        for _ in range(READ_BATCH):
            if self._sock is None:
                return
            try:
                data, address = self._sock.recvfrom(wire.MAX_DATAGRAM_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors (port unreachable): that query times out
                log.debug("dht udp error: %s", shown(exc))
                continue
            self._received(data, (str(address[0]), int(address[1])))

    def _send(self, datagram: bytes, address: tuple[str, int]) -> None:
        assert self._sock is not None
        host, port = address
        if self._ipv6 and ":" not in host:
            host = "::ffff:" + host  # an IPv4 peer seen from a dual-stack IPv6 socket
        try:
            self._sock.sendto(datagram, (host, port))
        except OSError as exc:  # a full send buffer or an unreachable address: UDP loses it
            log.debug("dht udp send to %s failed: %s", shown(host), shown(exc))

    def _received(self, data: bytes, address: tuple[str, int]) -> None:
        assert self._loop is not None
        now = self._loop.time()
        event = self.engine.receive(data, address, now)
        if isinstance(event, IncomingRequest):
            self._answer(event, now)
        elif isinstance(event, IncomingReply):
            future = self._waiting.pop(event.request_id, None)
            if event.request_id in self._learned:
                self._learned[event.request_id] = event.contact
            if future is not None and not future.done():
                future.set_result(event.reply)
            self._arm()
        elif isinstance(event, Dropped):
            log.debug(
                "dht: dropped a datagram from %s: %s", shown(event.address[0]), event.reason.value
            )

    def _answer(self, event: IncomingRequest, now: float) -> None:
        try:
            if event.to_anyone:  # a probe of our address: prove our key, learn nothing
                self._send(self.engine.respond(event, Pong()), event.contact.address)
                return
            reply = self._handler(event.contact, event.request, now)
            if reply is None:
                return
            datagram = self.engine.respond(event, reply)
        except wire.EncodeError as exc:
            log.error("dht: cannot answer %s: %s", type(event.request).__name__, exc)
            return
        self._send(datagram, event.contact.address)

    def _arm(self) -> None:
        """Keep one timer at the engine's next deadline."""
        assert self._loop is not None
        deadline = self.engine.next_deadline()
        if deadline == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        assert self._loop is not None
        self._timer = None
        self._timer_at = None
        for request_id in self.engine.expire(self._loop.time()):
            future = self._waiting.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(None)
        self._arm()
