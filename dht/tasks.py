"""One owner for every background task the DHT starts.

kademlia and rpcudp fire tasks with ``asyncio.ensure_future`` and forget them, so stopping a node
left stores, pings and request handlers running against a closed socket. Everything here goes
through :meth:`TaskSet.spawn`, so :meth:`TaskSet.cancel_all` really stops the node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """Tracks tasks until they finish; logs failures instead of losing them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run ``coro`` in the background; refused (and closed) once the set is closed."""
        if self.closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background DHT task failed: %r", exc, exc_info=exc)

    def cancel_all(self) -> list[asyncio.Task[Any]]:
        """Close the set and cancel what is running; returns the cancelled tasks to await."""
        self.closed = True
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        return pending

    def __len__(self) -> int:
        return len(self._tasks)
