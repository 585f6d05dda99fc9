"""The composition root: builds every service from the config and runs them on one loop."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from crypto.envelope import OVERHEAD
from dht.node import DhtNode
from mailnode.addressing import endpoints
from mailnode.auth import Authenticator
from mailnode.client_tls import ensure_certificate, listener_context
from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME, Config, is_loopback, load
from mailnode.delivery.headers import authserv_id
from mailnode.delivery.inbound import InboundService
from mailnode.delivery.outbound import OutboundQueue, RetryPolicy, TransferSender, remembering
from mailnode.delivery.publish import Publisher
from mailnode.delivery.submit import SubmissionService, free_bytes
from mailnode.friends.service import FriendsService, node_name
from mailnode.guard import LoginPenalty
from mailnode.imap.server import ImapServer
from mailnode.keys import load_node_key
from mailnode.runstate import STATUS_NAME, Listening, load_peers, save_peers, write_status
from mailnode.smtp.server import SubmissionServer
from mailnode.store.database import Database, upgrade_apart
from mailnode.store.friends import FriendStore
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from mailnode.transfer import InboundMessage, Outcome, TransferServer

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS = ((_M_ARENA_MAX, 2), (_M_MMAP_THRESHOLD, 512 * 1024),
                   (_M_TRIM_THRESHOLD, 1024 * 1024))
"""Two arenas (the GIL lets about one thread allocate at a time, and glibc would make up to
eight per core); blocks from 512 KiB mapped on their own and unmapped when freed (above
asyncio's 256 KiB receive buffers, which stay in the heap); free heap tops returned beyond
1 MiB. Fixed values also stop glibc's dynamic threshold: after one 16 MiB scrypt buffer was
freed, it served such blocks from the heap and kept up to 32 MiB of freed memory resident per
arena (a node held 16 MiB after its first login, for good)."""


_TUNABLE_NAMES = {_M_TRIM_THRESHOLD: "trim_threshold", _M_MMAP_THRESHOLD: "mmap_threshold",
                  _M_ARENA_MAX: "arena_max"}


def malloc_tunables() -> str:
    """MALLOC_SETTINGS as a ``GLIBC_TUNABLES`` value, for a process that should allocate as
    a node does from its start (benchmarks run their sides under it)."""
    return ":".join(f"glibc.malloc.{_TUNABLE_NAMES[param]}={value}"
                    for param, value in MALLOC_SETTINGS)


def bound_malloc() -> bool:
    """Apply MALLOC_SETTINGS when the C library is glibc; False elsewhere (musl, macOS)."""
    try:
        libc_name = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):  # no such name here
        return False
    if not libc_name or not libc_name.startswith("glibc"):
        return False
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = [libc.mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS]
    libc.malloc_trim(0)  # what the imports left free at the heap's top and in its middle
    return all(applied)


SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
Every database job ends with its thread taking the GIL back (SQLite releases it around each
statement) and then the event loop taking it to hear the result; with the loop busy, each
wait could last the whole interval. Under imaptest's 10-client load, three alternated runs
each: 1,695-1,805 commands/s with the default, 1,821-1,883 with 1 ms (0.5 ms: no better)."""


def raise_file_limit(config: Config) -> None:
    """Let the process hold every connection the limits allow (Linux's default soft limit
    of 1024 descriptors is below two listeners' worth), up to the hard limit."""
    want = 2 * config.max_connections + config.max_peer_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning("only %d file descriptors allowed (the limits need %d): lower "
                        "max_connections or raise the hard limit (ulimit -Hn)", new, want)


async def serve(data_dir: Path, stop: asyncio.Event,
                on_ready: Callable[[Listening], None] | None = None) -> None:
    """Run the node until ``stop`` is set; every listener and task is closed on the way out."""
    config = load(data_dir / CONFIG_NAME)
    raise_file_limit(config)
    bound_malloc()  # before the threads below make their arenas
    sys.setswitchinterval(SWITCH_INTERVAL)
    node_identity = load_node_key(data_dir / NODE_KEY_NAME)
    # An older database is upgraded by a child process, so the node never imports
    # SQLAlchemy and alembic; Database.open then finds it current.
    await asyncio.to_thread(upgrade_apart, data_dir / DB_NAME)
    db = await asyncio.to_thread(Database.open, data_dir / DB_NAME)
    notifier = ChangeNotifier()
    store = SqlStore(db, notifier,
                     user_quota=config.user_quota_mb * 1024 * 1024 or None)
    host = config.host
    async with AsyncExitStack() as stack:
        stack.callback(db.close)

        # While it knows no peer the DHT retries its bootstrap peers every few seconds, so
        # nodes started together (or a bootstrap node that comes up late) find each other.
        dht = DhtNode(node_identity, bootstrap_interval=5.0,
                      protected_peers=config.bootstrap_peers())  # exempt from contact caps
        await dht.start(config.p2p_bind, config.p2p_port)
        stack.push_async_callback(dht.aclose)
        # Friends' nodes are anchors: joined through first, and exempt from the contact caps.
        friend_store = FriendStore(db)
        anchors = [e for f in await friend_store.list_friends() for e in f.endpoints]
        dht.protect(anchors)
        # Names are fine (the DHT resolves them); joining runs beside the listeners starting,
        # so an unreachable bootstrap peer never delays SMTP and IMAP.
        bootstrap = list(dict.fromkeys([*config.bootstrap_peers(), *anchors,
                                        *load_peers(data_dir)]))
        joining = asyncio.create_task(_join(dht, bootstrap), name="dht-bootstrap")

        server_id = authserv_id(node_identity.verify_key)
        inbound = InboundService(store, server_id=server_id)
        policy = RetryPolicy(config.retry_initial, config.retry_max, config.give_up_after,
                             config.delay_notice_after)
        sender = TransferSender(node_identity, config.transfer_timeout)
        stack.push_async_callback(sender.aclose)
        queue = OutboundQueue(store, remembering(dht.lookup, store),
                              sender, policy,
                              has_peers=lambda: dht.peer_count() > 0)
        bootstrap_ips = config.bootstrap_peers()

        def current_endpoints() -> list[tuple[str, int]]:
            return endpoints(config, dht.port, [*dht.peers(), *bootstrap_ips])

        friends = FriendsService(friend_store, node_identity, node_name(config.node_name),
                                 accept=inbound.accept, endpoints=current_endpoints,
                                 inbound=config.accept_inbound,
                                 max_message_size=config.max_message_size + OVERHEAD,
                                 timeout=config.transfer_timeout, dht=dht)
        stack.push_async_callback(friends.aclose)

        async def accept(message: InboundMessage) -> Outcome:
            # A HOLD carries the recipient's record: mail we keep for a friend's user.
            if message.record is not None:
                return await friends.hold(message)
            return await inbound.accept(message)

        def peer_is_up(node_key: bytes) -> None:
            queue.peer_is_up(node_key)
            friends.peer_is_up(node_key)

        transfer = TransferServer(node_identity, accept,
                                  max_message_size=config.max_message_size + OVERHEAD,
                                  max_connections=config.max_peer_connections,
                                  max_connections_per_source=config.max_connections_per_source,
                                  max_sessions_per_peer=config.max_sessions_per_user,
                                  timeout=config.transfer_timeout,
                                  login_timeout=config.login_timeout,
                                  messages_per_minute=config.max_inbound_per_minute,
                                  on_peer=peer_is_up, friendship=friends)
        await transfer.start(config.p2p_bind, dht.port)
        stack.push_async_callback(transfer.stop)

        submission = SubmissionService(store, queue.wake,
                                       messages_per_minute=config.max_messages_per_minute,
                                       server_id=server_id,
                                       max_queue_size=config.max_queue_size,
                                       disk_free=lambda: free_bytes(data_dir),
                                       min_disk_free=2 * config.max_message_size)
        ensure_certificate(data_dir, config.host, time.time())  # kept if tls_cert is set
        client_tls = listener_context(config, data_dir)  # follows replaced certificate files
        require_tls = not is_loopback(config.host)
        # One penalty for both protocols: a guesser cannot double its budget by switching.
        auth = Authenticator(store, LoginPenalty(base_delay=config.failed_login_delay,
                                                 lockout_after=config.login_lockout_after,
                                                 lockout=config.login_lockout))
        smtp = SubmissionServer(submission, max_message_size=config.max_message_size,
                                max_connections=config.max_connections,
                                max_connections_per_source=config.max_connections_per_source,
                                max_sessions_per_user=config.max_sessions_per_user,
                                login_timeout=config.login_timeout,
                                tls_context=client_tls, require_tls=require_tls, auth=auth)
        stack.push_async_callback(smtp.stop)
        await smtp.start(host, config.smtp_port)
        if config.smtps_port:
            await smtp.start(host, config.smtps_port, implicit_tls=True)

        imap = ImapServer(store, notifier, max_literal=config.max_message_size,
                          max_connections=config.max_connections,
                          max_connections_per_source=config.max_connections_per_source,
                          max_sessions_per_user=config.max_sessions_per_user,
                          login_timeout=config.login_timeout,
                          tls_context=client_tls, require_tls=require_tls, auth=auth)
        stack.push_async_callback(imap.stop)
        await imap.start(host, config.imap_port)
        if config.imaps_port:
            await imap.start(host, config.imaps_port, implicit_tls=True)

        assert imap.port is not None
        listening = Listening(host, config.p2p_bind, smtp.port, imap.port, dht.port,
                              node_identity.verify_key.hex(), config.smtps_port,
                              config.imaps_port)
        publisher = Publisher(store, dht, node_identity, config, current_endpoints,
                              relays=friends.relays)

        async def report_status() -> None:
            while True:
                try:
                    await asyncio.to_thread(write_status, data_dir, listening, dht,
                                            len(publisher.published),
                                            list(publisher.endpoints))
                    await asyncio.to_thread(save_peers, data_dir, dht.peers())
                except OSError as exc:  # status is informative; never stop the node for it
                    log.warning("cannot write the status files: %s", exc)
                await asyncio.sleep(2.0)

        tasks = [joining, *(asyncio.create_task(coro, name=name) for name, coro in (
            ("queue", queue.run()), ("publisher", publisher.run()),
            ("returning-nodes", queue.watch_contacts(dht.contact_ids)),
            ("friends", friends.run()),
            ("status", report_status())))]
        stopping = asyncio.create_task(stop.wait())
        try:
            if on_ready is not None:
                on_ready(listening)
            running: set[asyncio.Task[object]] = set(tasks)
            while not stopping.done():
                done, running = await asyncio.wait({stopping, *running},
                                                   return_when=asyncio.FIRST_COMPLETED)
                running.discard(stopping)
                for task in done - {stopping}:
                    if task.exception() is not None:  # a service died: stop, do not limp on
                        raise task.exception()  # type: ignore[misc]
        finally:
            for task in (*tasks, stopping):
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
            (data_dir / STATUS_NAME).unlink(missing_ok=True)
        log.info("node stopping")


async def _join(dht: DhtNode, peers: list[tuple[str, int]]) -> None:
    """First bootstrap; failures are retried by the DHT itself while it knows no peer."""
    try:
        await dht.bootstrap(peers)
    except Exception:
        log.exception("joining the DHT failed; retrying in the background")
