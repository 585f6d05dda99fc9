"""Friends, invites and held mail in a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailnode.store.database import Database
from mailnode.store.friends import FriendStore, HoldResult, Redemption

BOB = b"b" * 32
EVE = b"e" * 32
SECRET = b"s" * 16
NOW = 1_800_000_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FriendStore]:
    db = Database.open(tmp_path / "mailnode.db")
    yield FriendStore(db)
    db.close()


async def test_an_invite_is_redeemed_once_by_one_node(store: FriendStore) -> None:
    await store.create_invite(SECRET, 100, 14, NOW, NOW + 60)
    assert await store.redeem_invite(SECRET, BOB, "bob", (("10.0.0.2", 2700),), 50, 7,
                                     NOW + 1) == (100, 14)
    # The same node again (its first answer was lost): welcomed again, even after expiry.
    assert await store.redeem_invite(SECRET, BOB, "bob", (), 50, 7, NOW + 120) == (100, 14)
    assert await store.redeem_invite(SECRET, EVE, "eve", (), 0, 0, NOW + 2) is Redemption.USED
    assert await store.redeem_invite(b"x" * 16, EVE, "eve", (), 0, 0, NOW) is \
        Redemption.UNKNOWN
    [bob] = await store.list_friends()
    assert (bob.name, bob.pending, bob.hold_bytes, bob.their_hold_bytes) == ("bob", False,
                                                                             100, 50)
    assert bob.holds_for_us


async def test_an_expired_invite_is_refused(store: FriendStore) -> None:
    await store.create_invite(SECRET, 100, 14, NOW, NOW + 60)
    assert await store.redeem_invite(SECRET, BOB, "bob", (), 0, 0, NOW + 60) is \
        Redemption.EXPIRED
    assert await store.list_friends() == []


async def test_pending_until_welcomed_and_names_stay_unique(store: FriendStore) -> None:
    first = await store.add_pending(BOB, "pi", (("10.0.0.2", 2700),), SECRET, NOW + 60,
                                    1000, 3, NOW)
    second = await store.add_pending(EVE, "pi", (("10.0.0.3", 2700),), b"t" * 16, NOW + 60,
                                     1000, 3, NOW)
    assert first.pending and first.name == "pi" and second.name != "pi"
    await store.welcomed(BOB, 2000, 5, NOW + 1)
    bob = await store.friend(BOB)
    assert bob is not None and not bob.pending and bob.their_hold_bytes == 2000
    assert bob.endpoints == (("10.0.0.2", 2700),)


async def test_holding_respects_friendship_quota_and_duplicates(store: FriendStore) -> None:
    assert await store.hold(BOB, b"1" * 16, b"u" * 32, b"x" * 10, NOW) is None  # no friend
    await store.add_pending(BOB, "bob", (), SECRET, NOW + 60, 25, 1, NOW)
    assert await store.hold(BOB, b"1" * 16, b"u" * 32, b"x" * 10, NOW) is None  # pending
    await store.welcomed(BOB, 0, 0, NOW)
    assert await store.hold(BOB, b"1" * 16, b"u" * 32, b"x" * 10, NOW, "a") is \
        HoldResult.STORED
    assert await store.hold(BOB, b"1" * 16, b"u" * 32, b"x" * 10, NOW, "b") is \
        HoldResult.DUPLICATE
    # One address may take half of the quota (12 of 25 bytes), so not two of these.
    assert await store.hold(BOB, b"2" * 16, b"u" * 32, b"x" * 10, NOW, "a") is \
        HoldResult.FULL
    assert await store.hold(BOB, b"2" * 16, b"u" * 32, b"x" * 10, NOW, "b") is \
        HoldResult.STORED
    assert await store.hold(BOB, b"3" * 16, b"u" * 32, b"x" * 10, NOW, "c") is \
        HoldResult.FULL  # 30 of 25
    first = await store.next_held(BOB, 0)
    assert first is not None and first.message_id == b"1" * 16
    second = await store.next_held(BOB, first.id)
    assert second is not None and second.message_id == b"2" * 16
    assert await store.next_held(BOB, second.id) is None
    assert await store.next_held(EVE, 0) is None
    await store.drop_held(first.id)
    assert await store.hold(BOB, b"3" * 16, b"u" * 32, b"x" * 10, NOW, "c") is \
        HoldResult.STORED
    assert await store.holding_for() == [BOB]
    # Kept for hold_days (1): then dropped.
    assert await store.expire_held(NOW + 86399) == 0
    assert await store.expire_held(NOW + 86400) == 2
    assert await store.holding_for() == []


async def test_removing_a_friend_drops_what_was_held(store: FriendStore) -> None:
    await store.add_pending(BOB, "bob", (), SECRET, NOW + 60, 1000, 1, NOW)
    await store.welcomed(BOB, 0, 0, NOW)
    await store.hold(BOB, b"1" * 16, b"u" * 32, b"x" * 10, NOW)
    gone = await store.remove_friend("bob")
    assert gone is not None and gone.held_count == 1 and gone.held_bytes == 10
    assert await store.remove_friend("bob") is None
    assert await store.next_held(BOB, 0) is None
