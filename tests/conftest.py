"""Shared fixtures: a real SQLite store in a temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    db = Database.open(tmp_path / "mailnode.db")
    try:
        yield SqlStore(db, ChangeNotifier())
    finally:
        db.close()
