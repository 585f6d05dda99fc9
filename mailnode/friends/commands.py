"""What ``mailnode invite`` and ``mailnode friend ...`` do, whether or not the node runs.

Everything is written to the node's database; a running node picks changes up within
seconds (its friends' loop re-reads the table). ``friend add`` also tries to redeem the
invite at once, as this node, so the user learns straight away whether it worked.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mailnode.addressing import endpoints as published_endpoints
from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME, Config, load
from mailnode.friends.invite import Invite, TokenError
from mailnode.friends.service import FriendsService, no_mail, node_name
from mailnode.keys import load_node_key
from mailnode.runstate import load_peers, read_status
from mailnode.store.database import Database
from mailnode.store.friends import Friend, FriendStore
from mailnode.transfer import TransferError
from mailnode.transfer.frames import SECRET_SIZE, Welcome

INVITE_DAYS = 7
DEFAULT_HOLD_MB = 200
DEFAULT_HOLD_DAYS = 14
REDEEM_TIMEOUT = 15.0


class FriendError(ValueError):
    """A user mistake or a refusal; the message says what to do."""


def our_endpoints(data_dir: Path, config: Config) -> list[tuple[str, int]]:
    """Where friends reach this node, by the rule the node publishes with: from the peers the
    running node knows now (its last published list may predate them), else those it saved."""
    if not config.accept_inbound:
        return []
    status = read_status(data_dir)
    if status is None:
        port, peers = config.p2p_port, load_peers(data_dir)
    else:
        port = int(status["p2p_port"])
        peers = [(str(h), int(p)) for h, p in status.get("peers", [])]
    return published_endpoints(config, port, [*config.bootstrap_peers(), *peers])


def _terms(hold_mb: int, hold_days: int) -> tuple[int, int]:
    if not 0 <= hold_mb <= 1_000_000 or not 0 <= hold_days <= 3650:
        raise FriendError("--hold-mb must be 0..1000000 and --hold-days 0..3650")
    return hold_mb * 1024 * 1024, hold_days


def create_invite(data_dir: Path, hold_mb: int, hold_days: int) -> Invite:
    config = load(data_dir / CONFIG_NAME)
    node = load_node_key(data_dir / NODE_KEY_NAME)
    where = our_endpoints(data_dir, config)
    if not where:
        raise FriendError("this node takes no connections (accept_inbound = false), so a "
                          "friend cannot redeem its invite: ask them for one of theirs and "
                          "run `mailnode friend add TOKEN` here")
    hold_bytes, days = _terms(hold_mb, hold_days)
    now = int(time.time())
    invite = Invite(node.verify_key, os.urandom(SECRET_SIZE), now + INVITE_DAYS * 86400,
                    node_name(config.node_name), tuple(where[:8]))
    db = Database.open(data_dir / DB_NAME)
    try:
        asyncio.run(FriendStore(db).create_invite(invite.secret, hold_bytes, days, now,
                                                  invite.expires))
    finally:
        db.close()
    return invite


@dataclass(frozen=True)
class Added:
    friend: Friend
    welcome: Welcome | None
    problem: str | None


def add_friend(data_dir: Path, token: str, hold_mb: int, hold_days: int) -> Added:
    """Store the invite, then try to redeem it now (the node redeems it later otherwise)."""
    config = load(data_dir / CONFIG_NAME)
    node = load_node_key(data_dir / NODE_KEY_NAME)
    try:
        invite = Invite.decode(token)
    except TokenError as exc:
        raise FriendError(f"{exc}") from None
    now = int(time.time())
    if invite.node_key == node.verify_key:
        raise FriendError("that invite is this node's own; give it to a friend")
    if invite.expires <= now:
        raise FriendError("that invite has expired; ask your friend for a new one "
                          "(`mailnode invite`)")
    hold_bytes, days = _terms(hold_mb, hold_days)
    db = Database.open(data_dir / DB_NAME)
    try:
        store = FriendStore(db)

        async def go() -> Added:
            friend = await store.add_pending(invite.node_key, invite.name, invite.endpoints,
                                             invite.secret, invite.expires, hold_bytes, days,
                                             now)
            service = FriendsService(store, node, node_name(config.node_name),
                                     accept=no_mail,
                                     endpoints=lambda: our_endpoints(data_dir, config),
                                     inbound=config.accept_inbound, max_message_size=0,
                                     timeout=REDEEM_TIMEOUT)
            try:
                answer = await asyncio.wait_for(service.redeem_with(friend), REDEEM_TIMEOUT)
            except (TransferError, OSError) as exc:  # TimeoutError included
                return Added(friend, None, str(exc) or "no answer in time")
            if isinstance(answer, Welcome):
                return Added(await store.friend(invite.node_key) or friend, answer, None)
            return Added(friend, None, f"refused: {answer.reason}")
        return asyncio.run(go())
    finally:
        db.close()


def list_friends(data_dir: Path) -> list[Friend]:
    db = Database.open(data_dir / DB_NAME)
    try:
        return asyncio.run(FriendStore(db).list_friends())
    finally:
        db.close()


def remove_friend(data_dir: Path, name: str) -> Friend:
    db = Database.open(data_dir / DB_NAME)
    try:
        friend = asyncio.run(FriendStore(db).remove_friend(name))
    finally:
        db.close()
    if friend is None:
        raise FriendError(f"no friend named {name!r} (`mailnode friend list` shows them)")
    return friend


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n} B"


def describe(friend: Friend, now: float) -> str:
    """One line: name, state, then the terms both ways and what is held."""
    if friend.pending:
        state = "pending"
        detail = "invite not redeemed yet: their node has not answered"
        if friend.last_error:
            detail += f" ({friend.last_error[:80]})"
    else:
        state = "friend"  # whether it is up now only the last contact says
        seen = "never" if friend.last_seen is None else \
            f"{int(max(0, now - friend.last_seen)) // 60}m ago"
        detail = (f"last seen {seen}; you hold {friend.held_count} message(s), "
                  f"{_size(friend.held_bytes)} of {_size(friend.hold_bytes)} for "
                  f"{friend.hold_days} days; they hold {_size(friend.their_hold_bytes)} for "
                  f"{friend.their_hold_days} days for you")
    return f"{friend.name}  {state}  node {friend.node_key.hex()[:16]}  {detail}"
