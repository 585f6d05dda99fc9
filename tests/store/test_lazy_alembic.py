"""A database already at the newest revision opens without alembic or SQLAlchemy: the running
node does not carry alembic, mako and pygments (~11 MB) nor SQLAlchemy (~16 MB) for an upgrade
it does not need."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from mailnode.store.database import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    Database,
    _alembic_config,
    is_current,
    revision,
    upgrade_apart,
)


def test_head_revision_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_a_current_database_opens_without_alembic(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    Database.open(path).close()  # made and migrated (alembic needed here)
    probe = ("import sys; from pathlib import Path\n"
             "from mailnode.store.database import Database\n"
             f"Database.open(Path({str(path)!r})).close()\n"
             "print(sorted(m for m in ('alembic', 'mako', 'pygments', 'sqlalchemy')"
             " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_an_older_database_is_still_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    db = Database.open(path)
    try:
        with db.engine.connect() as conn:
            cfg = _alembic_config(db.engine)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
            conn.commit()
        assert not is_current(db.engine)
    finally:
        db.close()
    db = Database.open(path)
    try:
        assert is_current(db.engine)
    finally:
        db.close()


def test_an_upgrade_in_a_child_that_fails_says_so(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A database the child cannot upgrade (a revision from a newer mailnode, say) stops the
    node with the child's reasons in the log, and leaves the database as it was."""
    path = tmp_path / "n.db"
    Database.open(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    with caplog.at_level(logging.INFO, logger="mailnode.store"), \
            pytest.raises(RuntimeError, match=r"upgrading n\.db failed"):
        upgrade_apart(path)
    assert any(r.levelno == logging.ERROR and "0099" in r.getMessage() for r in caplog.records)
    assert revision(path) == "0099"
