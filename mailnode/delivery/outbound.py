"""The outbound queue: finds each recipient's node in the DHT and hands the sealed envelope
over, retrying with exponential backoff for as long as ``mailnode.toml`` says.

State lives only in SQLite, so a restart (or ``kill -9``) resumes where the queue stood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from crypto.address import key_of
from crypto.envelope import seal
from crypto.keys import Identity, PublicIdentity
from dht.node import node_id_of
from dht.records import AddressRecord, RecordError
from mailnode.delivery.dsn import delivery_delayed, delivery_failure
from mailnode.logsafe import clean
from mailnode.store.sqlite import LocalCopy, QueuedMessage, SqlStore
from mailnode.transfer import Outcome, TransferError, Verdict
from mailnode.transfer.pool import ConnectionPool

log = logging.getLogger(__name__)

BIG = 1 << 20
BIG_AT_ONCE = 4
"""Copies above BIG bytes sent at once (with ``concurrency`` 16 and 25 MB messages, memory
would otherwise reach 400 MB)."""

POLL = 5.0
"""Longest sleep of the queue between two looks at what is due."""

OFFLINE_RETRY = 5.0
"""Seconds between attempts while this node has no DHT peer at all."""

Resolver = Callable[[bytes], Awaitable[AddressRecord | None]]
Sender = Callable[[AddressRecord, QueuedMessage, bytes], Awaitable[Outcome]]
"""Hands one sealed envelope (the third argument) to the node the record names."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff from ``initial`` to ``maximum``; a DSN after ``give_up_after``."""

    initial: float = 60.0
    maximum: float = 3600.0
    give_up_after: float = 5 * 86400.0
    delay_notice_after: float = 4 * 3600.0
    """When the sender is told (once) that a copy is still waiting."""

    def expired(self, created_at: float, now: float) -> bool:
        """Whether a message queued at ``created_at`` is due back to its sender."""
        return now - created_at >= self.give_up_after

    def delay(self, attempts: int) -> float:
        """Backoff before attempt ``attempts + 1`` (attempts already made)."""
        return float(min(self.maximum, self.initial * 2 ** min(attempts, 30)))


CONNECT_TIMEOUT = 5.0
"""Seconds to reach one endpoint: a machine that is off drops packets, and the next endpoint
(or a relay) should be tried within seconds, not after a minute."""


class TransferSender:
    """Sends over the transfer protocol: to the recipient's node at each of its endpoints in
    turn; when none answers (or the node takes no connections), to one of the relays its
    record lists, which holds the sealed envelope until the node is back. Connections are
    kept for the next message to the same node (``aclose`` at shutdown)."""

    def __init__(self, identity: Identity, timeout: float) -> None:
        self.pool = ConnectionPool(identity, timeout=timeout, connect_timeout=CONNECT_TIMEOUT)

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def __call__(self, record: AddressRecord, item: QueuedMessage,
                       sealed: bytes) -> Outcome:
        last: Exception | str = "its node takes no connections and lists no relay"
        if record.inbound:
            for host, port in record.endpoints:
                try:
                    return await self.pool.send(host, port, record.node_key, item.message_id,
                                                record.user_key, sealed)
                except TransferError as exc:
                    last = exc
        for relay in record.relays:
            for host, port in relay.endpoints:
                try:
                    outcome = await self.pool.send(host, port, relay.node_key,
                                                   item.message_id, record.user_key, sealed,
                                                   record=record.encode())
                except TransferError as exc:
                    last = exc
                    continue
                if outcome.verdict is Verdict.ACCEPTED:
                    return Outcome(Verdict.ACCEPTED, f"relay {relay.node_key[:8].hex()} holds "
                                   f"it for the recipient's node ({outcome.reason})")
                # A relay that is full or no longer a friend: another may take it; the
                # message itself is fine, so this never bounces it.
                last = f"relay {relay.node_key[:8].hex()}: {outcome.reason}"
                break
        raise TransferError(f"not delivered: {last}")


RECORD_FRESH_FOR = 30.0
"""Seconds a record found in the DHT is reused without asking again: a stream of mail to one
correspondent costs one lookup, not one per message (peers rate-limit our requests)."""


def remembering(lookup: Resolver, store: SqlStore, clock: Callable[[], float] = time.monotonic,
                fresh_for: float = RECORD_FRESH_FOR) -> Resolver:
    """``lookup`` (the DHT), falling back to the newest record seen for that correspondent.

    A node that was off for longer than its record lives is still where it was; its old,
    still correctly signed record is worth a try (the TLS pin to its node key still holds),
    so the queue keeps delivering when the DHT has nothing. A record just found is reused
    for ``fresh_for`` seconds (its node moving meanwhile costs one failed attempt).
    """
    seen: dict[bytes, int] = {}
    recent: dict[bytes, tuple[float, AddressRecord]] = {}

    async def resolve(user_key: bytes) -> AddressRecord | None:
        hit = recent.get(user_key)
        if hit is not None and clock() - hit[0] < fresh_for:
            return hit[1]
        try:
            record = await lookup(user_key)
        except (OSError, TimeoutError):
            record = None
        if record is not None:
            if len(recent) >= 10_000:  # bounded: forget the oldest
                del recent[next(iter(recent))]
            recent.pop(user_key, None)
            recent[user_key] = (clock(), record)
            if seen.get(user_key) != record.seq:
                await store.remember_record(user_key, record.encode(), record.seq,
                                            record.node_key)
                seen[user_key] = record.seq
            return record
        raw = await store.last_record(user_key)
        if raw is None:
            return None
        try:
            old = AddressRecord.decode(raw)
            old.verify(old.expires - 1)  # the signature; expiry is what we look past
        except RecordError:
            return None
        return old if old.user_key == user_key else None

    return resolve


async def sealed_envelope(store: SqlStore, item: QueuedMessage) -> bytes | None:
    """The envelope for one recipient, sealed now from the shared payload (None: no longer
    queued).

    Sealing at send time keeps one stored copy per message however many recipients it has,
    and only the copies being sent (the queue's ``concurrency``) are in memory at once.
    """
    content = await store.outbound_content(item.id)
    if content is None:
        return None
    if content.sealed is not None:
        return content.sealed
    assert content.content is not None
    identity = await store.identity(item.user_id)
    return await asyncio.to_thread(seal, identity, PublicIdentity(key_of(item.recipient)),
                                   item.message_id, item.created_at, content.content)


class OutboundQueue:
    """Works the queue until cancelled; ``wake()`` after new mail is queued."""

    def __init__(self, store: SqlStore, resolve: Resolver, send: Sender, policy: RetryPolicy,
                 clock: Callable[[], float] = time.time, concurrency: int = 16,
                 has_peers: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.has_peers = has_peers
        self.resolve = resolve
        self.send = send
        self.policy = policy
        self.clock = clock
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # Big messages are held in memory while sealed and sent: only a few at once, so
        # ``concurrency`` maximum-size messages never add up on a small machine.
        self._big = asyncio.Semaphore(BIG_AT_ONCE)
        self._concurrency = concurrency
        self._inflight: set[int] = set()  # queue ids being attempted now

    def wake(self) -> None:
        self._wake.set()

    def peer_is_up(self, node_key: bytes) -> None:
        """A node just reached us (it connected and authenticated): whatever waits for its
        users is sent now, not after the backoff it had reached while the node was away."""
        task = asyncio.get_running_loop().create_task(self._peer_is_up(node_key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch_contacts(self, contact_ids: Callable[[], set[bytes]],
                             every: float = 2.0) -> None:
        """Treat a correspondent's node appearing among the DHT contacts as it coming back
        (it rejoined, even if it has no mail for us): its mail is sent at once."""
        seen = contact_ids()
        while True:
            await asyncio.sleep(every)
            now_seen = contact_ids()
            new, seen = now_seen - seen, now_seen
            if not new:
                continue
            try:
                keys = await self.store.known_node_keys()
            except Exception:  # a hint only: the backoff still delivers
                log.exception("could not read known node keys")
                continue
            for key in keys:
                if node_id_of(key) in new:
                    self.peer_is_up(key)

    async def _peer_is_up(self, node_key: bytes) -> None:
        try:
            if await self.store.retry_node_now(node_key, int(self.clock())):
                self.wake()
        except Exception:  # a hint only: the backoff still delivers
            log.exception("could not reschedule mail for a returning node")

    async def run(self) -> None:
        # A restart resets every wait: whatever was queued is tried at once, then backs off
        # from where it was.
        await self.store.retry_now(None, int(self.clock()))
        try:
            await self._loop()
        finally:  # a cancelled attempt is safe: no ACK came, so it is tried again later
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.start_due()
                next_at = await self.store.next_outbound_at()
            except Exception:  # e.g. a full disk: keep the node up and try again soon
                log.exception("outbound queue pass failed; retrying")
                next_at = int(self.clock() + self.policy.initial)
            # Looked at again within POLL seconds whatever: `mailnode queue retry` changes
            # the queue from another process.
            timeout = POLL if next_at is None else min(POLL, max(0.05, next_at - self.clock()))
            if self._inflight and next_at is not None and next_at <= self.clock():
                timeout = POLL  # what is due is being attempted; each attempt's end wakes us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def run_once(self) -> None:
        """Attempt every envelope that is due now (each once), and wait for the attempts."""
        tried: set[int] = set()
        while started := await self.start_due(skip=tried):
            await asyncio.gather(*started)

    async def start_due(self, skip: set[int] | None = None) -> list[asyncio.Task[None]]:
        """Start attempts for due envelopes not already being attempted, up to
        ``concurrency`` at once; does not wait for them, so a slow or silent node never holds
        up mail for the others (each recipient's copy is its own attempt). Each attempt that
        ends wakes the loop to start the next."""
        free = self._concurrency - len(self._inflight)
        if free <= 0:
            return []
        due = await self.store.due_outbound(int(self.clock()), limit=free,
                                            exclude=self._inflight | (skip or set()))
        started = []
        for item in due:
            if item.id in self._inflight:
                continue
            if skip is not None:
                skip.add(item.id)
            self._inflight.add(item.id)
            task = asyncio.get_running_loop().create_task(self._attempt_once(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def _attempt_once(self, item: QueuedMessage) -> None:
        try:
            await self._attempt(item)
        finally:
            self._inflight.discard(item.id)
            self._wake.set()  # its next attempt time (or the next due copy) is looked at now

    async def _attempt(self, item: QueuedMessage) -> None:
        # At most ``concurrency`` attempts exist (start_due starts no more).
        async with self._big if item.size > BIG else contextlib.nullcontext():
            mid = item.message_id.hex()
            try:
                record = await self.resolve(key_of(item.recipient))
                if (record is None and not self.has_peers()
                        and not self.policy.expired(item.created_at, self.clock())):
                    # We are not in the DHT yet (just started, or offline): that says nothing
                    # about the recipient, so wait briefly and do not let the backoff grow.
                    delay = min(self.policy.initial, OFFLINE_RETRY)
                    reason = "not connected to the DHT yet"
                    await self.store.outbound_retry(
                        item.id, int(self.clock() + delay), reason, count_attempt=False,
                        notice=await self._delay_notice(item, reason, self.clock()))
                    return
                if record is None:
                    outcome = Outcome(Verdict.TEMPORARY, "recipient's node not found in the DHT")
                else:
                    sealed = await sealed_envelope(self.store, item)
                    if sealed is None:
                        return  # no longer queued (sent or expired meanwhile)
                    outcome = await self.send(record, item, sealed)
            except (TransferError, OSError) as exc:
                outcome = Outcome(Verdict.TEMPORARY, f"transfer failed: {exc}")
            except Exception as exc:  # a bug must not stop the queue: retry later
                log.exception("outbound id=%s attempt crashed", mid)
                outcome = Outcome(Verdict.TEMPORARY, f"internal error: {type(exc).__name__}")
            await self._settle(item, outcome)

    async def _settle(self, item: QueuedMessage, outcome: Outcome) -> None:
        mid = item.message_id.hex()
        now = self.clock()
        if outcome.verdict is Verdict.ACCEPTED:
            log.info("outbound id=%s delivered (%s)", mid, clean(outcome.reason))
            await self.store.outbound_done(item.id)
            return
        if outcome.verdict is Verdict.PERMANENT or self.policy.expired(item.created_at, now):
            reason = outcome.reason if outcome.verdict is Verdict.PERMANENT else (
                f"gave up after retrying: {outcome.reason}")
            log.warning("outbound id=%s failed permanently: %s", mid, clean(reason))
            content = await self.store.outbound_content(item.id)
            if content is None:
                return
            dsn = LocalCopy(item.user_id, delivery_failure(
                item.sender, item.recipient, reason, content.headers, now, item.attempts + 1,
                "5.0.0" if outcome.verdict is Verdict.PERMANENT else "5.4.7"))
            await self.store.outbound_done(item.id, dsn)
            return
        delay = self.policy.delay(item.attempts)
        log.info("outbound id=%s deferred %.0fs: %s", mid, delay, clean(outcome.reason))
        await self.store.outbound_retry(item.id, int(now + delay), outcome.reason,
                                        notice=await self._delay_notice(item, outcome.reason,
                                                                        now))

    async def _delay_notice(self, item: QueuedMessage, reason: str,
                            now: float) -> LocalCopy | None:
        """The "still trying" DSN, once per copy, when it has waited long enough."""
        if item.delay_notified or now - item.created_at < self.policy.delay_notice_after:
            return None
        content = await self.store.outbound_content(item.id)
        if content is None:
            return None
        return LocalCopy(item.user_id, delivery_delayed(
            item.sender, item.recipient, reason, content.headers, now, item.attempts + 1,
            item.created_at + self.policy.give_up_after))
