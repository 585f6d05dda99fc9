"""In-process change notification, so IDLE and other sessions learn of new mail without polling."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class ChangeNotifier:
    """A version counter per mailbox; waiters wake when it moves past what they saw."""

    def __init__(self) -> None:
        self._versions: defaultdict[int, int] = defaultdict(int)
        # Version of each mailbox's last change that was not only new messages: a listing
        # as of a later version can be brought up to date by reading the new messages alone.
        self._reset: defaultdict[int, int] = defaultdict(int)
        self._conditions: dict[int, asyncio.Condition] = {}
        self._retired: set[tuple[int, int]] = set()

    def retire(self, mailbox_id: int, uidvalidity: int) -> None:
        """The mailbox as sessions knew it is gone (deleted, or renamed: a new UIDVALIDITY).

        Sessions that still have it selected must stop serving it (RFC 3501: BYE), never
        show what the id or name now stands for. Called after the commit, before publishing.
        """
        self._retired.add((mailbox_id, uidvalidity))

    def retired(self, mailbox_id: int, uidvalidity: int) -> bool:
        return (mailbox_id, uidvalidity) in self._retired

    def version(self, mailbox_id: int) -> int:
        return self._versions[mailbox_id]

    def _condition(self, mailbox_id: int) -> asyncio.Condition:
        cond = self._conditions.get(mailbox_id)
        if cond is None:
            cond = self._conditions[mailbox_id] = asyncio.Condition()
        return cond

    def appends_since(self, mailbox_id: int, version: int) -> bool:
        """Whether every change after ``version`` only added messages."""
        return self._reset[mailbox_id] <= version

    async def publish(self, mailbox_id: int, appended: bool = False) -> None:
        """Record a committed change to ``mailbox_id`` (``appended``: it only added
        messages) and wake its waiters."""
        self._versions[mailbox_id] += 1
        if not appended:
            self._reset[mailbox_id] = self._versions[mailbox_id]
        cond = self._conditions.get(mailbox_id)
        if cond is None:  # nobody ever waited: a later waiter sees the version moved
            return
        async with cond:
            cond.notify_all()

    async def wait(self, mailbox_id: int, seen_version: int) -> int:
        """Return the mailbox version once it differs from ``seen_version``."""
        cond = self._condition(mailbox_id)
        async with cond:
            await cond.wait_for(lambda: self._versions[mailbox_id] != seen_version)
        return self._versions[mailbox_id]
