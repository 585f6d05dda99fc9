"""The SQLite engine: WAL, ``BEGIN IMMEDIATE`` for every transaction, one database thread.

pysqlite's default transaction handling lets two read-then-write transactions both read the
same ``uidnext``; ``BEGIN IMMEDIATE`` takes the write lock up front. All transactions run on a
single worker thread, so there is one writer and the event loop never waits on the disk.
Network I/O never happens inside ``run`` (the callables only touch the connection).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event

import migrations

T = TypeVar("T")

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def make_engine(path: Path) -> Engine:
    """An engine whose every transaction starts with ``BEGIN IMMEDIATE`` on a WAL database."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # Durable by default; Database.run(durable=False) relaxes single transactions.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest Alembic revision (creates it if new)."""
    cfg = _alembic_config(engine)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest revision."""
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


class Database:
    """Runs transactions on the one database thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailnode-db")

    @classmethod
    def open(cls, path: Path) -> Database:
        """Open (creating and migrating if needed) with owner-only permissions."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        db = cls(path)
        upgrade(db.engine)
        return db

    def run_sync(self, fn: Callable[[Connection], T], durable: bool = True) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction on the calling thread.

        ``durable`` commits with ``synchronous=FULL`` (fsync: the commit survives power loss),
        for anything acknowledged to a peer or client as stored. Otherwise ``NORMAL``: in WAL
        mode that still survives a crash of the process, and costs no fsync (flag changes,
        queue bookkeeping).
        """
        with self.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            with conn.begin():
                return fn(conn)

    async def run(self, fn: Callable[[Connection], T], durable: bool = True) -> T:
        """Run ``fn`` in one transaction on the database thread; commits unless it raises."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_sync, fn, durable)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
