"""The change notifier: a waiter hears of every change after the version it saw, whether the
change was published before it started waiting or while it waited."""

from __future__ import annotations

import asyncio

from mailnode.store.notify import ChangeNotifier


async def test_a_change_published_before_anyone_waited_is_not_missed() -> None:
    notifier = ChangeNotifier()
    seen = notifier.version(7)
    await notifier.publish(7, appended=True)  # no waiter yet: nothing to wake
    assert await asyncio.wait_for(notifier.wait(7, seen), 5) == seen + 1
    assert notifier.appends_since(7, seen)


async def test_waiters_wake_on_a_change_and_only_theirs() -> None:
    notifier = ChangeNotifier()
    here = asyncio.ensure_future(notifier.wait(1, notifier.version(1)))
    other = asyncio.ensure_future(notifier.wait(2, notifier.version(2)))
    await asyncio.sleep(0)  # both are waiting
    await notifier.publish(1)
    assert await asyncio.wait_for(here, 5) == 1
    assert not other.done() and not notifier.appends_since(1, 0)
    await notifier.publish(2)
    assert await asyncio.wait_for(other, 5) == 1
