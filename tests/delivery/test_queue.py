"""Submission, the outbound queue and inbound acceptance, with the network replaced by fakes
(the real transfer and DHT are covered in their own suites and the three-node tests)."""

from __future__ import annotations

import asyncio
import email
import os
from dataclasses import dataclass, field

from crypto.address import address_for, key_of
from crypto.envelope import open_envelope, seal
from crypto.keys import Identity, PublicIdentity
from dht.node import node_id_of
from dht.records import AddressRecord
from mailnode.delivery.headers import authentication_results
from mailnode.delivery.inbound import InboundService
from mailnode.delivery.outbound import OutboundQueue, RetryPolicy, remembering
from mailnode.delivery.submit import SubmissionService
from mailnode.store.sqlite import QueuedMessage, SqlStore
from mailnode.transfer import InboundMessage, Outcome, TransferError, Verdict

SERVER_ID = "00112233aabbccdd.mailnode.invalid"


def msg(author: str) -> bytes:
    return f"From: <{author}>\r\nTo: b\r\nSubject: queued\r\n\r\nbody\r\n".encode()



@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeNet:
    """Resolves every address; each send answers with the next scripted outcome."""

    node: Identity = field(default_factory=Identity.generate)
    script: list[Outcome | Exception] = field(default_factory=list)
    sent: list[QueuedMessage] = field(default_factory=list)
    envelopes: list[bytes] = field(default_factory=list)
    known: bool = True

    async def resolve(self, user_key: bytes) -> AddressRecord | None:
        if not self.known:
            return None
        return AddressRecord(user_key, self.node.verify_key, (("127.0.0.1", 9),), 1, 2**40,
                             b"\0" * 64)

    async def send(self, record: AddressRecord, item: QueuedMessage, sealed: bytes) -> Outcome:
        self.sent.append(item)
        self.envelopes.append(sealed)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


async def _queue_one(store: SqlStore, clock: Clock, net: FakeNet,
                     policy: RetryPolicy) -> tuple[OutboundQueue, Identity, int]:
    alice = await store.create_user("alice", "password1", Identity.generate())
    carol = Identity.generate()
    queue = OutboundQueue(store, net.resolve, net.send, policy, clock=clock)
    service = SubmissionService(store, queue.wake, clock=clock, server_id=SERVER_ID)
    await service.submit(alice, [address_for(carol.verify_key)], msg(alice.address))
    return queue, carol, alice.id


async def test_retries_with_exponential_backoff_then_delivers(store: SqlStore) -> None:
    clock, net = Clock(), FakeNet()
    store.clock = clock
    net.script = [TransferError("refused"), Outcome(Verdict.TEMPORARY, "busy"),
                  Outcome(Verdict.ACCEPTED, "stored")]
    queue, carol, _ = await _queue_one(store, clock, net, RetryPolicy(10, 100, 10_000))
    await queue.run_once()
    assert len(net.sent) == 1 and await store.queue_length() == 1
    clock.now += 9
    await queue.run_once()
    assert len(net.sent) == 1  # not due before the 10 s backoff
    clock.now += 1
    await queue.run_once()
    assert len(net.sent) == 2
    clock.now += 19
    await queue.run_once()
    assert len(net.sent) == 2  # second backoff is 20 s
    clock.now += 1
    await queue.run_once()
    assert len(net.sent) == 3 and await store.queue_length() == 0
    assert {i.message_id for i in net.sent} == {net.sent[0].message_id}  # same id: idempotent
    assert open_envelope(carol, net.envelopes[-1]).payload.startswith(b"From: <")


async def test_unknown_record_retries_and_expiry_returns_a_dsn(store: SqlStore) -> None:
    clock, net = Clock(), FakeNet(known=False)
    store.clock = clock
    queue, _, alice_id = await _queue_one(store, clock, net, RetryPolicy(10, 20, 100))
    for _ in range(20):
        await queue.run_once()
        clock.now += 20
    assert await store.queue_length() == 0
    inbox = await store.get_mailbox(alice_id, "INBOX")
    assert inbox is not None and inbox.messages == 1
    metas = await store.list_messages(inbox.id)
    dsn = email.message_from_bytes(
        (await store.fetch_bodies(inbox.id, [metas[0].uid]))[metas[0].uid])
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = [p.get_content_type() for p in dsn.walk()]
    assert "message/delivery-status" in parts and "text/rfc822-headers" in parts
    assert b"Subject: queued" in dsn.as_bytes()


def _statuses(body: bytes) -> list[str]:
    """The per-recipient ``Action:`` fields of a DSN, read with the email package."""
    dsn = email.message_from_bytes(body)
    assert dsn.get_content_type() == "multipart/report"
    [status] = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
    payload = status.get_payload()  # the stdlib parses its blocks into header sets
    assert isinstance(payload, list)
    return [str(block.get("Action")) for block in payload
            if isinstance(block, email.message.Message) and block.get("Action")]


async def test_a_long_wait_is_told_once_then_the_failure(store: SqlStore) -> None:
    clock, net = Clock(), FakeNet(known=False)
    store.clock = clock
    queue, _, alice_id = await _queue_one(
        store, clock, net, RetryPolicy(10, 20, 200, delay_notice_after=50))
    inbox = await store.get_mailbox(alice_id, "INBOX")
    assert inbox is not None
    seen: list[list[str]] = []
    for _ in range(15):
        await queue.run_once()
        clock.now += 20
        metas = await store.list_messages(inbox.id)
        bodies = await store.fetch_bodies(inbox.id, [m.uid for m in metas])
        seen = [_statuses(bodies[m.uid]) for m in metas]
    assert seen == [["delayed"], ["failed"]]  # one "still trying", then the final word
    delayed = (await store.fetch_bodies(inbox.id, [1]))[1]
    assert b"Will-Retry-Until:" in delayed and b"Subject: queued" in delayed


async def test_the_last_known_record_is_used_when_the_dht_has_none(store: SqlStore) -> None:
    """The recipient's node was off longer than its record lives: the DHT forgot it, but its
    last signed record still says where it is (and its TLS pin still holds)."""
    clock = Clock()
    store.clock = clock
    carol, node = Identity.generate(), Identity.generate()
    record = AddressRecord.create(carol, node.verify_key, [("127.0.0.1", 9)], seq=7,
                                  expires=int(clock.now) + 60)
    dht: dict[bytes, AddressRecord] = {carol.verify_key: record}
    sent: list[AddressRecord] = []
    script = [Outcome(Verdict.TEMPORARY, "node is off"), Outcome(Verdict.ACCEPTED, "stored")]

    async def lookup(user_key: bytes) -> AddressRecord | None:
        return dht.get(user_key)

    async def send(rec: AddressRecord, item: QueuedMessage, sealed: bytes) -> Outcome:
        sent.append(rec)
        return script.pop(0)

    alice = await store.create_user("alice", "password1", Identity.generate())
    queue = OutboundQueue(store, remembering(lookup, store, clock=clock), send,
                          RetryPolicy(10, 20, 10_000), clock=clock)
    await SubmissionService(store, queue.wake, clock=clock, server_id=SERVER_ID).submit(
        alice, [address_for(carol.verify_key)], msg(alice.address))
    await queue.run_once()
    dht.clear()  # expired and forgotten by the network
    clock.now += 3600
    await queue.run_once()
    assert sent == [record, record] and await store.queue_length() == 0
    # A forged or foreign record under carol's key is never used.
    await store.remember_record(b"\1" * 32, record.encode(), 99, record.node_key)
    assert await remembering(lookup, store)(b"\1" * 32) is None


async def test_a_node_that_comes_back_gets_its_mail_at_once(store: SqlStore) -> None:
    """Mail waiting out a long backoff for a node is sent as soon as that node shows up
    (connects to us), not when the backoff ends."""
    clock = Clock()
    store.clock = clock
    carol, node = Identity.generate(), Identity.generate()
    record = AddressRecord.create(carol, node.verify_key, [("127.0.0.1", 9)], seq=1,
                                  expires=int(clock.now) + 86400)
    script = [Outcome(Verdict.TEMPORARY, "node is off"), Outcome(Verdict.ACCEPTED, "stored")]

    async def lookup(user_key: bytes) -> AddressRecord | None:
        return record

    async def send(rec: AddressRecord, item: QueuedMessage, sealed: bytes) -> Outcome:
        return script.pop(0)

    alice = await store.create_user("alice", "password1", Identity.generate())
    queue = OutboundQueue(store, remembering(lookup, store), send,
                          RetryPolicy(3600, 3600, 10 * 86400), clock=clock)
    await SubmissionService(store, queue.wake, clock=clock, server_id=SERVER_ID).submit(
        alice, [address_for(carol.verify_key)], msg(alice.address))
    await queue.run_once()
    assert await store.due_outbound(int(clock.now) + 60) == []  # backing off for an hour
    assert await store.retry_node_now(Identity.generate().verify_key, int(clock.now)) == 0
    queue._wake.clear()  # (set by the submission)
    queue.peer_is_up(node.verify_key)
    await asyncio.wait_for(queue._wake.wait(), 5)  # rescheduled, and the queue woken
    await queue.run_once()
    assert script == [] and await store.queue_length() == 0


async def test_a_node_seen_again_in_the_dht_gets_its_mail_at_once(store: SqlStore) -> None:
    clock = Clock()
    store.clock = clock
    carol, node = Identity.generate(), Identity.generate()
    record = AddressRecord.create(carol, node.verify_key, [("127.0.0.1", 9)], seq=1,
                                  expires=int(clock.now) + 86400)

    async def lookup(user_key: bytes) -> AddressRecord | None:
        return record

    async def send(rec: AddressRecord, item: QueuedMessage, sealed: bytes) -> Outcome:
        return Outcome(Verdict.TEMPORARY, "node is off")

    alice = await store.create_user("alice", "password1", Identity.generate())
    queue = OutboundQueue(store, remembering(lookup, store), send,
                          RetryPolicy(3600, 3600, 10 * 86400), clock=clock)
    await SubmissionService(store, queue.wake, clock=clock, server_id=SERVER_ID).submit(
        alice, [address_for(carol.verify_key)], msg(alice.address))
    await queue.run_once()
    assert await store.due_outbound(int(clock.now)) == []  # an hour's backoff
    queue._wake.clear()  # (set by the submission)
    contacts: set[bytes] = {b"\7" * 20}
    looked = asyncio.Event()

    def contact_ids() -> set[bytes]:
        looked.set()
        return set(contacts)
    watcher = asyncio.create_task(queue.watch_contacts(contact_ids, every=0.01))
    try:
        await asyncio.wait_for(looked.wait(), 5)  # it knows who was there before
        contacts.add(node_id_of(node.verify_key))  # carol's node rejoined the DHT
        await asyncio.wait_for(queue._wake.wait(), 5)
        assert len(await store.due_outbound(int(clock.now))) == 1
    finally:
        watcher.cancel()


async def test_permanent_refusal_returns_a_dsn_at_once(store: SqlStore) -> None:
    clock, net = Clock(), FakeNet(script=[Outcome(Verdict.PERMANENT, "no such user")])
    store.clock = clock
    queue, _, alice_id = await _queue_one(store, clock, net, RetryPolicy(10, 20, 10_000))
    await queue.run_once()
    assert await store.queue_length() == 0
    inbox = await store.get_mailbox(alice_id, "INBOX")
    assert inbox is not None and inbox.messages == 1


async def test_inbound_opens_verifies_and_files_once(store: SqlStore) -> None:
    bob = await store.create_user("bob", "password1", Identity.generate())
    alice = Identity.generate()
    inbound = InboundService(store, server_id=SERVER_ID)
    mid = os.urandom(16)
    body_in = msg(address_for(alice.verify_key))
    sealed = seal(alice, PublicIdentity(key_of(bob.address)), mid, 1, body_in)
    transfer = InboundMessage(os.urandom(32), mid, key_of(bob.address), sealed)
    assert (await inbound.accept(transfer)).verdict is Verdict.ACCEPTED
    assert (await inbound.accept(transfer)).verdict is Verdict.ACCEPTED  # retry: no duplicate
    inbox = await store.get_mailbox(bob.id, "INBOX")
    assert inbox is not None and inbox.messages == 1
    uid = (await store.list_messages(inbox.id))[0].uid
    body = (await store.fetch_bodies(inbox.id, [uid]))[uid]
    assert body.endswith(body_in)
    assert body.startswith(b"Received: ")
    assert authentication_results(SERVER_ID, address_for(alice.verify_key),
                                  "signed by the sender's key") + body_in in body


async def test_inbound_refuses_strangers_and_forgeries(store: SqlStore) -> None:
    bob = await store.create_user("bob", "password1", Identity.generate())
    inbound = InboundService(store, server_id=SERVER_ID)
    stranger = Identity.generate()
    mid = os.urandom(16)
    sealed = seal(Identity.generate(), stranger.public, mid, 1, msg("x"))
    outcome = await inbound.accept(InboundMessage(b"\1" * 32, mid, stranger.verify_key, sealed))
    assert outcome.verdict is Verdict.PERMANENT
    tampered = bytearray(seal(Identity.generate(), PublicIdentity(key_of(bob.address)), mid, 1,
                              msg("x")))
    tampered[-5] ^= 1
    outcome = await inbound.accept(InboundMessage(b"\1" * 32, mid, key_of(bob.address),
                                                  bytes(tampered)))
    assert outcome.verdict is Verdict.PERMANENT
    inbox = await store.get_mailbox(bob.id, "INBOX")
    assert inbox is not None and inbox.messages == 0


async def test_a_crashing_attempt_is_retried_not_lost(store: SqlStore) -> None:
    clock, net = Clock(), FakeNet(script=[RuntimeError("bug"), Outcome(Verdict.ACCEPTED, "ok")])
    store.clock = clock
    queue, _, _ = await _queue_one(store, clock, net, RetryPolicy(10, 100, 10_000))
    await queue.run_once()
    assert await store.queue_length() == 1  # kept for the next attempt
    clock.now += 10
    await queue.run_once()
    assert await store.queue_length() == 0


async def test_offline_node_retries_soon_without_growing_the_backoff(store: SqlStore) -> None:
    clock, net = Clock(), FakeNet(known=False)
    store.clock = clock
    online = [False]
    alice = await store.create_user("alice", "password1", Identity.generate())
    queue = OutboundQueue(store, net.resolve, net.send, RetryPolicy(600, 3600, 10_000),
                          clock=clock, has_peers=lambda: online[0])
    await SubmissionService(store, queue.wake, clock=clock, server_id=SERVER_ID).submit(
        alice, [address_for(Identity.generate().verify_key)], msg(alice.address))
    for _ in range(10):  # ten passes while not in the DHT: 5 s apart, none counted
        await queue.run_once()
        clock.now += 5
    [item] = await store.due_outbound(now=int(clock.now))
    assert item.attempts == 0
    online[0], net.known = True, True
    net.script = [Outcome(Verdict.ACCEPTED, "stored")]
    await queue.run_once()  # connected: delivered at the next pass, not 600 s later
    assert await store.queue_length() == 0


async def test_inbound_refuses_a_from_header_that_is_not_the_signer(store: SqlStore) -> None:
    bob = await store.create_user("bob", "password1", Identity.generate())
    mallory, boss = Identity.generate(), Identity.generate()
    inbound = InboundService(store, server_id=SERVER_ID)
    mid = os.urandom(16)
    forged = msg(address_for(boss.verify_key))  # validly signed by mallory, "From" the boss
    sealed = seal(mallory, PublicIdentity(key_of(bob.address)), mid, 1, forged)
    outcome = await inbound.accept(InboundMessage(b"\1" * 32, mid, key_of(bob.address), sealed))
    assert outcome.verdict is Verdict.PERMANENT and "From" in outcome.reason
    inbox = await store.get_mailbox(bob.id, "INBOX")
    assert inbox is not None and inbox.messages == 0


async def test_a_silent_node_does_not_hold_up_mail_for_others(store: SqlStore) -> None:
    """Each recipient's copy is its own attempt: while one hangs (a node that accepts the
    connection and then says nothing), mail queued afterwards for another node goes."""
    clock = Clock()
    store.clock = clock
    slow, fast = Identity.generate(), Identity.generate()
    hanging = asyncio.Event()
    delivered: list[str] = []

    async def resolve(user_key: bytes) -> AddressRecord | None:
        return AddressRecord(user_key, Identity.generate().verify_key, (("127.0.0.1", 9),), 1,
                             2**40, b"\0" * 64)

    async def send(record: AddressRecord, item: QueuedMessage, sealed: bytes) -> Outcome:
        if item.recipient == address_for(slow.verify_key):
            hanging.set()
            await asyncio.Event().wait()  # never answers
        delivered.append(item.recipient)
        return Outcome(Verdict.ACCEPTED, "stored")

    alice = await store.create_user("alice", "password1", Identity.generate())
    queue = OutboundQueue(store, resolve, send, RetryPolicy(10, 100, 10_000), clock=clock)
    service = SubmissionService(store, queue.wake, clock=clock, server_id=SERVER_ID)
    await service.submit(alice, [address_for(slow.verify_key)], msg(alice.address))
    running = asyncio.create_task(queue.run())
    try:
        await asyncio.wait_for(hanging.wait(), 10)
        await service.submit(alice, [address_for(fast.verify_key)], msg(alice.address))
        async with asyncio.timeout(10):
            while address_for(fast.verify_key) not in delivered:
                await asyncio.sleep(0.01)
        assert await store.queue_length() == 1  # the silent node's copy still waits
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_found_record_is_reused_briefly(store: SqlStore) -> None:
    """A stream of mail to one correspondent costs one DHT lookup per 30 s, not one per
    message (peers rate-limit lookups)."""
    clock, asked = Clock(), []
    record = AddressRecord.create(Identity.generate(), b"\2" * 32, [("127.0.0.1", 9)], 1, 2**40)

    async def lookup(user_key: bytes) -> AddressRecord | None:
        asked.append(user_key)
        return record

    resolve = remembering(lookup, store, clock=clock)
    for _ in range(5):
        assert await resolve(record.user_key) == record
    assert len(asked) == 1
    clock.now += 30
    assert await resolve(record.user_key) == record
    assert len(asked) == 2


async def test_queued_copies_say_how_big_they_are(store: SqlStore) -> None:
    """The queue limits how many big copies it holds in memory at once: it must know sizes
    before loading them."""
    clock, net = Clock(), FakeNet()
    store.clock = clock
    await _queue_one(store, clock, net, RetryPolicy(10, 100, 10_000))
    [item] = await store.due_outbound(int(clock.now))
    content = await store.outbound_content(item.id)
    assert content is not None and content.content is not None
    assert item.size == len(content.content) > 0
