"""Three nodes in one process over real TLS and real SQLite files: two friends (one of them
the relay) and a stranger sending mail while the recipient's node is away.

The DHT is left out (records are built by hand): what is tested is the friends' layer on the
transfer protocol, i.e. invites, HOLD, PULL, push, and exactly-once filing.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crypto.address import address_for
from crypto.envelope import seal
from crypto.keys import Identity, PublicIdentity
from dht.records import AddressRecord, Relay
from mailnode.delivery.headers import authserv_id
from mailnode.delivery.inbound import InboundService
from mailnode.delivery.outbound import TransferSender
from mailnode.friends.service import FriendsService
from mailnode.store.database import Database
from mailnode.store.friends import FriendStore
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import QueuedMessage, SqlStore
from mailnode.transfer import InboundMessage, Outcome, TransferServer, Verdict
from tests.e2e.nodes import free_port

SECRET = b"k" * 16


@dataclass
class Node:
    name: str
    identity: Identity
    db: Database
    store: SqlStore
    friends_store: FriendStore
    friends: FriendsService
    port: int
    server: TransferServer | None = None

    async def start(self) -> None:
        inbound = InboundService(self.store, server_id=authserv_id(self.identity.verify_key))

        async def accept(message: InboundMessage) -> Outcome:
            if message.record is not None:
                return await self.friends.hold(message)
            return await inbound.accept(message)

        self.friends.accept = inbound.accept
        self.server = TransferServer(self.identity, accept, max_message_size=1 << 20,
                                     timeout=10.0, friendship=self.friends)
        await self.server.start("127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def inbox_count(self, user_id: int) -> int:
        mailbox = await self.store.get_mailbox(user_id, "INBOX")
        assert mailbox is not None
        return len(await self.store.list_messages(mailbox.id))


async def refuse(message: InboundMessage) -> Outcome:
    return Outcome(Verdict.TEMPORARY, "not started")  # Node.start sets the real one


class Senders:
    """Stranger's nodes' senders (each with its connection pool), closed after the test."""

    def __init__(self) -> None:
        self.made: list[TransferSender] = []

    def make(self) -> TransferSender:
        self.made.append(TransferSender(Identity.generate(), timeout=10.0))
        return self.made[-1]


@pytest.fixture
async def senders() -> AsyncIterator[Senders]:
    made = Senders()
    yield made
    for sender in made.made:
        await sender.aclose()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    for name in ("alice", "bob"):
        db = Database.open(tmp_path / f"{name}.db")
        identity = Identity.generate()
        port = free_port()
        friends_store = FriendStore(db)
        store = SqlStore(db, ChangeNotifier())
        service = FriendsService(friends_store, identity, name, accept=refuse,
                                 endpoints=lambda p=port: [("127.0.0.1", p)],  # type: ignore[misc]
                                 inbound=True,
                                 max_message_size=1 << 20, timeout=10.0)
        made[name] = Node(name, identity, db, store, friends_store, service, port)
        await made[name].start()
    yield made
    for node in made.values():
        await node.stop()
        await node.friends.aclose()
        node.db.close()


async def befriend(alice: Node, bob: Node) -> None:
    """alice invites, bob accepts (what `invite` and `friend add` do)."""
    now = int(time.time())
    await alice.friends_store.create_invite(SECRET, 1 << 20, 14, now, now + 3600)
    friend = await bob.friends_store.add_pending(alice.identity.verify_key, "alice",
                                                 (("127.0.0.1", alice.port),), SECRET,
                                                 now + 3600, 1 << 20, 14, now)
    answer = await bob.friends.redeem_with(friend)
    assert not isinstance(answer, Outcome), answer


SENDER = Identity.generate()


def sealed_for(recipient: Identity, message_id: bytes, sender: Identity = SENDER) -> bytes:
    body = (f"From: <{address_for(sender.verify_key)}>\r\nTo: <{address_for(recipient.verify_key)}>"
            "\r\nSubject: while you were away\r\n\r\nhello\r\n").encode()
    return seal(sender, PublicIdentity(recipient.verify_key), message_id, int(time.time()), body)


def queued(message_id: bytes, recipient: Identity) -> QueuedMessage:
    return QueuedMessage(1, message_id, 1, "sender@x", address_for(recipient.verify_key),
                         int(time.time()), 0)


async def test_invite_makes_both_nodes_friends(nodes: dict[str, Node]) -> None:
    alice, bob = nodes["alice"], nodes["bob"]
    await befriend(alice, bob)
    [b_side] = await alice.friends_store.list_friends()
    [a_side] = await bob.friends_store.list_friends()
    assert b_side.node_key == bob.identity.verify_key and not b_side.pending
    assert a_side.node_key == alice.identity.verify_key and not a_side.pending
    assert b_side.endpoints == (("127.0.0.1", bob.port),)
    # Each holds for the other, so each lists the other as a relay for its users.
    assert [r.node_key for r in await bob.friends.relays()] == [alice.identity.verify_key]
    assert [r.node_key for r in await alice.friends.relays()] == [bob.identity.verify_key]
    # Single use: the token's secret does not befriend a third node (eve's, here bob's
    # service speaking with another key).
    other = await bob.friends_store.add_pending(alice.identity.verify_key, "alice",
                                                (("127.0.0.1", alice.port),), SECRET, 0, 0, 0,
                                                0)
    bob.friends.identity = Identity.generate()
    refused = await bob.friends.redeem_with(other)
    assert isinstance(refused, Outcome) and "used" in refused.reason
    assert len(await alice.friends_store.list_friends()) == 1


async def test_mail_for_an_offline_node_goes_to_its_relay_and_back(
        nodes: dict[str, Node], senders: Senders) -> None:
    alice, bob = nodes["alice"], nodes["bob"]
    await befriend(alice, bob)
    user = await bob.store.create_user("bob", "password-bob-1", Identity.generate())
    bob_identity = await bob.store.identity(user.id)
    record = AddressRecord.create(bob_identity, bob.identity.verify_key,
                                  [("127.0.0.1", bob.port)], seq=1,
                                  expires=int(time.time()) + 3600,
                                  relays=await bob.friends.relays())
    send = senders.make()  # a stranger's node

    await bob.stop()  # bob's machine sleeps
    first = os.urandom(16)
    outcome = await send(record, queued(first, bob_identity), sealed_for(bob_identity, first))
    assert outcome.verdict is Verdict.ACCEPTED and "relay" in outcome.reason
    [held] = await alice.friends_store.list_friends()
    assert held.held_count == 1

    # Back: bob's node pulls from its relay and files the message once.
    await bob.start()
    [relay] = await bob.friends_store.list_friends()
    assert await bob.friends.pull(relay) == 1
    assert await bob.inbox_count(user.id) == 1
    assert (await alice.friends_store.list_friends())[0].held_count == 0
    # The sender's retry (say its ACK from the relay was lost) arrives directly: filed once.
    again = await send(record, queued(first, bob_identity), sealed_for(bob_identity, first))
    assert again.verdict is Verdict.ACCEPTED and "already stored" in again.reason
    assert await bob.inbox_count(user.id) == 1

    # Away again; this time the relay pushes when it sees bob's node again.
    await bob.stop()
    second = os.urandom(16)
    assert (await send(record, queued(second, bob_identity),
                       sealed_for(bob_identity, second))).verdict is Verdict.ACCEPTED
    await bob.start()
    [b_side] = await alice.friends_store.list_friends()
    assert await alice.friends.push(b_side) == 1
    assert await bob.inbox_count(user.id) == 2
    assert await alice.friends_store.next_held(bob.identity.verify_key, 0) is None


async def test_a_relay_holds_only_for_friends_that_list_it(
        nodes: dict[str, Node], senders: Senders) -> None:
    alice = nodes["alice"]
    stranger = Identity.generate()
    user_identity = Identity.generate()
    # Not a friend of alice: refused, and the sender keeps it queued (TransferError).
    alice_relay = Relay(alice.identity.verify_key, (("127.0.0.1", alice.port),))
    record = AddressRecord.create(user_identity, stranger.verify_key, [("127.0.0.1", 9)],
                                  seq=1, expires=int(time.time()) + 60, relays=(alice_relay,))
    send = senders.make()
    mid = os.urandom(16)
    with pytest.raises(OSError, match="not a friend"):
        await send(record, queued(mid, user_identity), sealed_for(user_identity, mid))
    assert await alice.friends_store.holding_for() == []


async def test_the_relay_store_says_full_at_once(
        nodes: dict[str, Node], senders: Senders) -> None:
    alice, bob = nodes["alice"], nodes["bob"]
    now = int(time.time())
    # 1,000 bytes, of which one address (the sender's) may fill half.
    await alice.friends_store.create_invite(SECRET, 1000, 14, now, now + 3600)
    friend = await bob.friends_store.add_pending(alice.identity.verify_key, "alice",
                                                 (("127.0.0.1", alice.port),), SECRET,
                                                 now + 3600, 1 << 20, 14, now)
    await bob.friends.redeem_with(friend)
    user_identity = Identity.generate()
    record = AddressRecord.create(user_identity, bob.identity.verify_key,
                                  [("127.0.0.1", bob.port)], seq=1, expires=now + 3600,
                                  relays=await bob.friends.relays(), inbound=True)
    await bob.stop()
    send = senders.make()
    mid = os.urandom(16)
    sealed = sealed_for(user_identity, mid)
    assert 250 < len(sealed) < 500
    assert (await send(record, queued(mid, user_identity), sealed)).verdict is Verdict.ACCEPTED
    mid2 = os.urandom(16)
    with pytest.raises(OSError, match="full"):
        await send(record, queued(mid2, user_identity), sealed_for(user_identity, mid2))


async def test_a_friend_dials_back_to_say_whether_we_are_reachable(
        nodes: dict[str, Node]) -> None:
    alice, bob = nodes["alice"], nodes["bob"]
    await befriend(alice, bob)
    [a_side] = await bob.friends_store.list_friends()
    reached = await bob.friends.ask_dial_back(a_side, (("127.0.0.1", bob.port),))
    assert reached.verdict is Verdict.ACCEPTED and str(bob.port) in reached.reason
    alice.friends.clock = lambda: 1e12  # past the per-friend pacing
    closed = free_port()  # nothing listens there
    missed = await bob.friends.ask_dial_back(a_side, (("127.0.0.1", closed),))
    assert missed.verdict is Verdict.TEMPORARY and f"127.0.0.1:{closed} failed" in missed.reason
    # Asked again at once: paced, so nobody uses a friend as a port scanner.
    again = await bob.friends.ask_dial_back(a_side, (("127.0.0.1", bob.port),))
    assert again.verdict is Verdict.TEMPORARY and "too often" in again.reason
    # A stranger gets nothing dialled.
    bob.friends.identity = Identity.generate()
    refused = await bob.friends.ask_dial_back(a_side, (("127.0.0.1", bob.port),))
    assert refused.verdict is Verdict.PERMANENT and "only for friends" in refused.reason
