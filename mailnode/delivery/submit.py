"""Accepting a submitted message: local copies filed, remote copies sealed and queued, all in
one transaction, so SMTP's ``250`` means the message is durably in SQLite."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from crypto.address import AddressError, normalise
from mailnode.delivery.headers import (
    authentication_results,
    received_header,
    vet,
)
from mailnode.ratelimit import RateLimiter
from mailnode.store.api import User
from mailnode.store.sqlite import Outgoing, QueueFull, RecipientOverQuota, SqlStore, Submission

log = logging.getLogger(__name__)

INLINE_BYTES = 2048
"""Messages up to this size are vetted on the event loop; larger ones on a worker thread.
The checks are linear: at this size about 5 ms for the worst header block found (a list of
quoted names and source routes), 0.1 ms for a usual message. Pure-Python work on a thread
holds the GIL for up to the 5 ms switch interval anyway, so below this size the hop buys
the loop nothing and costs two wake-ups."""


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


class SystemFull(Refused):
    """The node cannot take more mail now: its outbound queue or its disk is full. Said at
    once (RCPT, DATA), never by accepting the message and failing it later."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class MailboxFull(Refused):
    """A local recipient's storage quota (``user_quota_mb``) has no room for the message:
    temporary (RFC 3463 4.2.2), since they can make room. At RCPT only that recipient is
    refused; found at DATA (the message did not fit) the whole message is, as the store
    files all of a submission or none of it."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


def free_bytes(path: Path) -> int:
    """Space an unprivileged process may still write on ``path``'s filesystem."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _canonical(address: str) -> str:
    try:
        return normalise(address)
    except AddressError as exc:
        raise RecipientInvalid(str(exc)) from exc


class SubmissionService:
    """What the SMTP adapter calls; knows nothing of aiosmtpd."""

    def __init__(self, store: SqlStore, wake_queue: Callable[[], None],
                 clock: Callable[[], float] = time.time, messages_per_minute: int = 60, *,
                 server_id: str, max_queue_size: int = 1 << 30,
                 disk_free: Callable[[], int] | None = None, min_disk_free: int = 0) -> None:
        self.store = store
        self.server_id = server_id  # our authserv-id (headers.authserv_id)
        self.wake_queue = wake_queue
        self.clock = clock
        self.rate_limit = RateLimiter(messages_per_minute)
        self.max_queue_size = max_queue_size
        self.disk_free = disk_free
        """Free bytes where the database lives (``free_bytes`` of the data directory)."""
        self.min_disk_free = min_disk_free
        # Addresses of local users, loaded once and grown by what each submission finds:
        # a hint for which messages need their MIME structure before they are filed. The
        # store decides local or remote inside the transaction, so a user created since
        # (by ``mailnode user add``) still gets their mail, only analysed at first FETCH.
        self._local: set[str] | None = None
        self._received_at: tuple[int, bytes] = (-1, b"")

    def is_own_address(self, user: User, address: str) -> bool:
        try:
            return normalise(address) == user.address
        except AddressError:
            return False

    def recipient_now(self, address: str) -> str | None:
        """``check_recipient`` when it needs nothing from the database (a known local user's
        address, no quota to check), answered without a task; None: ask it."""
        if self._local is None or self.store.user_quota is not None:
            return None
        canonical = _canonical(address)
        if canonical not in self._local:
            return None
        self._check_disk()
        return canonical

    async def check_recipient(self, address: str) -> str:
        """The canonical form of a deliverable recipient, else RecipientInvalid; SystemFull
        when the node could not take the message anyway.

        A valid address is accepted whether or not the DHT knows its node right now: a node
        that is off (longer than its record lives, say) is what the queue is for. The
        address's checksum already catches typos; the sender hears of a delay, then of a
        failure, by delivery status notifications.
        """
        canonical = _canonical(address)
        self._check_disk()
        if canonical not in await self._local_addresses():
            if await self.store.queued_bytes() >= self.max_queue_size:
                raise SystemFull("queue")
        elif self.store.user_quota is not None:
            user = await self.store.find_user(canonical)
            if user is not None and (await self.store.usage(user.id)).storage \
                    >= self.store.user_quota:
                raise MailboxFull(canonical)
        return canonical

    def _check_disk(self) -> None:
        if self.disk_free is not None and self.disk_free() < self.min_disk_free:
            raise SystemFull("disk")

    async def _local_addresses(self) -> set[str]:
        if self._local is None:
            self._local = {user.address for user in await self.store.list_users()}
        return self._local

    def _received(self, second: int) -> bytes:
        """Our ``Received:`` line, formatted once per second (the date is most of it)."""
        if self._received_at[0] != second:
            self._received_at = (second, received_header(
                "mailnode", "ESMTPA (authenticated submission)",
                datetime.fromtimestamp(second, UTC)))
        return self._received_at[1]

    async def submit(self, user: User, recipients: list[str], content: bytes) -> str:
        """Seal and queue (or file locally); returns a queue id for the 250 reply."""
        self._check_disk()
        stamp = self._received(int(self.clock())) + authentication_results(
            self.server_id, user.address, "authenticated submission")
        rcpts = list(dict.fromkeys(recipients))  # a duplicate RCPT gets one copy
        known = await self._local_addresses()
        local_hint = any(rcpt in known for rcpt in rcpts)
        remote = tuple(Outgoing(os.urandom(16), rcpt) for rcpt in rcpts)
        analyse = self.store.analyse if local_hint else None

        def prepare() -> Submission:
            """On a worker thread (``SqlStore.submit`` runs it there) unless small."""
            # A user could also write our verdict naming someone else into the content;
            # nothing this node files or sends carries a verdict in its name that it did
            # not add itself.
            author, vetted, vetted_end = vet(content, self.server_id)
            if author != [user.address]:
                # The envelope sender is checked at MAIL; this is what recipients' clients
                # show.
                raise AuthorNotOwned(user.address)
            local_body = stamp + vetted
            # One stored copy for all local recipients and one for all remote ones: a
            # message to 100 recipients costs its size twice, not 100 times (remote copies
            # are sealed one by one when the queue sends them). Which recipients are local
            # the store decides in the transaction; the hint only says whether the MIME
            # structure of the local copy is worth computing now.
            return Submission(user.id, local_body, (), vetted, vetted[:vetted_end], remote,
                              analysed=None if analyse is None else analyse(local_body))
        try:
            filed = await self.store.submit(prepare() if len(content) <= INLINE_BYTES
                                            else prepare, max_queued=self.max_queue_size)
        except QueueFull:
            raise SystemFull("queue") from None
        except RecipientOverQuota as exc:
            raise MailboxFull(exc.address) from None
        known.update(filed.local)
        queued = [out for out in remote if out.recipient not in filed.local]
        if queued:
            self.wake_queue()
        queue_id = (queued[0].message_id.hex() if queued else os.urandom(8).hex())[:16]
        log.info("accepted message id=%s from user=%s local=%d remote=%d", queue_id, user.name,
                 len(filed.local), len(queued))
        return queue_id
