"""SEARCH work that can grow (bodies, headers, programs of many keys) runs in a worker thread,
a batch of messages at a time, so the event loop keeps serving everyone else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.imap.conftest import MESSAGE, Dialog


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = asyncio.to_thread

    async def recording(fn: Callable[..., Any], *args: Any) -> Any:
        calls.append(getattr(fn, "__name__", "?"))
        return await real(fn, *args)
    monkeypatch.setattr(asyncio, "to_thread", recording)
    return calls


async def _mailbox(dialog: Dialog, count: int) -> None:
    await dialog.login()
    for _ in range(count):
        await dialog.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    await dialog.send(b"s SELECT INBOX\r\n")


async def test_long_programs_and_body_keys_run_off_the_loop(dialog: Dialog,
                                                            threads: list[str]) -> None:
    await _mailbox(dialog, 70)  # two batches
    keys = b" ".join(b"SMALLER %d" % (100_000 + i) for i in range(200))
    out = await dialog.send(b"s SEARCH " + keys + b"\r\n")
    assert out.startswith(b"* SEARCH 1 2 3 ") and out.endswith(b"s OK SEARCH completed\r\n")
    assert threads.count("_matching") == 2
    out = await dialog.send(b"s SEARCH BODY body\r\n")
    assert b" 70\r\n" in out and threads.count("_matching") == 4


async def test_short_flag_searches_stay_inline(dialog: Dialog, threads: list[str]) -> None:
    await _mailbox(dialog, 3)
    out = await dialog.send(b"s SEARCH UNSEEN NOT DELETED\r\n")
    assert out.startswith(b"* SEARCH 1 2 3\r\n")
    assert "_matching" not in threads
