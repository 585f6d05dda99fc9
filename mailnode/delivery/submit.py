"""Accepting a submitted message: local copies filed, remote copies sealed and queued, all in
one transaction, so SMTP's ``250`` means the message is durably in SQLite."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from crypto.address import AddressError, normalise
from mailnode.delivery.headers import (
    authentication_results,
    received_header,
    split_headers,
    vet,
)
from mailnode.ratelimit import RateLimiter
from mailnode.store.api import User
from mailnode.store.sqlite import Outgoing, SqlStore, Submission

log = logging.getLogger(__name__)


class Refused(Exception):
    """A recipient or message the node will not accept (the SMTP layer words the reply)."""


class RecipientInvalid(Refused):
    """Not a mailnode address (malformed, or its checksum does not match)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthorNotOwned(Refused):
    """The From: header names someone other than the sender."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


class SubmissionService:
    """What the SMTP adapter calls; knows nothing of aiosmtpd."""

    def __init__(self, store: SqlStore, wake_queue: Callable[[], None],
                 clock: Callable[[], float] = time.time, messages_per_minute: int = 60, *,
                 server_id: str) -> None:
        self.store = store
        self.server_id = server_id  # our authserv-id (headers.authserv_id)
        self.wake_queue = wake_queue
        self.clock = clock
        self.rate_limit = RateLimiter(messages_per_minute)

    @staticmethod
    def is_own_address(user: User, address: str) -> bool:
        try:
            return normalise(address) == user.address
        except AddressError:
            return False

    async def check_recipient(self, address: str) -> str:
        """The canonical form of a deliverable recipient, else RecipientInvalid.

        A valid address is accepted whether or not the DHT knows its node right now: a node
        that is off (longer than its record lives, say) is what the queue is for. The
        address's checksum already catches typos; the sender hears of a delay, then of a
        failure, by delivery status notifications.
        """
        try:
            return normalise(address)
        except AddressError as exc:
            raise RecipientInvalid(str(exc)) from exc

    async def submit(self, user: User, recipients: list[str], content: bytes) -> str:
        """Seal and queue (or file locally); returns a queue id for the 250 reply."""
        # A user could also write our verdict naming someone else into the content; nothing
        # this node files or sends carries a verdict in its name that it did not add itself.
        author, content = await asyncio.to_thread(vet, content, self.server_id)
        if author != [user.address]:
            # The envelope sender is checked at MAIL; this is what recipients' clients show.
            raise AuthorNotOwned(user.address)
        now = self.clock()
        stamp = received_header("mailnode", "ESMTPA (authenticated submission)",
                                datetime.fromtimestamp(now, UTC)) + authentication_results(
            self.server_id, user.address, "authenticated submission")
        local: list[int] = []
        remote: list[Outgoing] = []
        for rcpt in dict.fromkeys(recipients):  # a duplicate RCPT gets one copy
            found = await self.store.find_user(rcpt)
            if found is not None:
                local.append(found.id)
            else:
                remote.append(Outgoing(os.urandom(16), rcpt))
        # One stored copy for all local recipients and one for all remote ones: a message
        # to 100 recipients costs its size twice, not 100 times (remote copies are sealed
        # one by one when the queue sends them).
        await self.store.submit(Submission(
            user.id, stamp + content if local else b"", tuple(local),
            content if remote else b"", split_headers(content) if remote else b"",
            tuple(remote)))
        if remote:
            self.wake_queue()
        queue_id = (remote[0].message_id.hex() if remote else os.urandom(8).hex())[:16]
        log.info("accepted message id=%s from user=%s local=%d remote=%d", queue_id, user.name,
                 len(local), len(remote))
        return queue_id
