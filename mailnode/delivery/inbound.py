"""Accepting a sealed envelope from a peer node: open, verify, file once, then acknowledge."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from crypto.address import address_for
from crypto.envelope import EnvelopeError, open_envelope
from mailnode.delivery.headers import (
    authentication_results,
    received_header,
    vet,
)
from mailnode.logsafe import clean
from mailnode.store.api import OverQuota
from mailnode.store.sqlite import SqlStore
from mailnode.transfer import InboundMessage, Outcome, Verdict

log = logging.getLogger(__name__)


class InboundService:
    """The transfer server's accept callback."""

    def __init__(self, store: SqlStore, clock: Callable[[], float] = time.time, *,
                 server_id: str) -> None:
        self.store = store
        self.clock = clock
        self.server_id = server_id  # our authserv-id (headers.authserv_id)

    async def accept(self, msg: InboundMessage) -> Outcome:
        mid = msg.message_id.hex()
        user = await self.store.find_user(address_for(msg.recipient_key))
        if user is None:
            log.info("inbound id=%s refused: recipient not on this node", mid)
            return Outcome(Verdict.PERMANENT, "no such user on this node")
        identity = await self.store.identity(user.id)
        try:
            opened = await asyncio.to_thread(open_envelope, identity, msg.sealed)
        except EnvelopeError as exc:
            log.info("inbound id=%s refused: %s", mid, clean(exc))
            return Outcome(Verdict.PERMANENT, f"envelope rejected: {exc}")
        sender = address_for(opened.sender_key)
        # The sender cannot speak for this node either: any verdict in our name in the content
        # is forged (RFC 8601 section 5), so it goes before ours is added.
        author, payload, _ = await asyncio.to_thread(vet, opened.payload, self.server_id)
        if author != [sender]:
            # A modified node could sign mail "From:" someone else: only the key's owner may
            # appear as the author, so what the recipient's client shows is what was proven.
            log.info("inbound id=%s refused: From does not match the signing key", mid)
            return Outcome(Verdict.PERMANENT, "From: header does not match the sender's key")
        stamp = received_header(
            "mailnode", "mailnode-transfer",
            datetime.fromtimestamp(self.clock(), UTC),
            extra=f"from node {msg.peer_node_key.hex()[:16]}")
        verified = authentication_results(self.server_id, sender, "signed by the sender's key")
        try:
            fresh = await self.store.deliver_inbound(user.id, opened.sender_key,
                                                     opened.message_id, stamp + verified + payload)
        except OverQuota:
            # Temporary, as RFC 5321's 452 4.2.2: the sender retries until the user makes
            # room, and its queue tells its user if that takes too long.
            log.info("inbound id=%s for user=%s deferred: mailbox full", mid, user.name)
            return Outcome(Verdict.TEMPORARY, "recipient's mailbox is full")
        log.info("inbound id=%s for user=%s %s", mid, user.name,
                 "delivered" if fresh else "duplicate ignored")
        return Outcome(Verdict.ACCEPTED, "stored" if fresh else "already stored")
