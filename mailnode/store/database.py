"""The SQLite database: WAL, ``BEGIN IMMEDIATE`` for every transaction, one database thread.

pysqlite's default transaction handling lets two read-then-write transactions both read the
same ``uidnext``; ``BEGIN IMMEDIATE`` takes the write lock up front. All transactions run on a
single worker thread, so there is one writer and the event loop never waits on the disk.
Network I/O never happens inside ``run`` (the callables only touch the connection).

Jobs get plain ``sqlite3`` connections: SQLAlchemy (~16 MB of a running node's memory) and
alembic are imported only to create or upgrade the schema, or by tools that ask for
``Database.engine``; a node whose database is at the head revision serves without them.

Group commit: jobs that queue up while the thread is busy run together in one transaction,
each inside its own SAVEPOINT when there are several (a job that raises is rolled back
alone; a ``clean`` job, one that refuses before changing anything, needs none), and share one
fsync. An event loop hands over the jobs of one turn together: handed
over one by one, each woke the thread, which then fought the loop for the GIL and committed
small groups (SMTP submission ran 1.2x faster batched, and at a steadier rate). No job's
caller hears back before the whole group has committed. A SAVEPOINT copies each page its job
changes into a statement journal; past 64 KiB SQLite spills that journal to a temporary file,
and a submission's ~15 pages did every time (~200 page writes per group of 16, ~12 us of
the writer's ~100 us per message). The writer keeps it in memory (``temp_store=MEMORY``), and
a job that may change many rows (an EXPUNGE of a whole mailbox) says ``alone``: it commits in
a transaction of its own, with no savepoint, so no journal holds its pages. ``run_after``
lets a job's CPU work (vetting a message) run on a worker thread first, outside the
transaction, without a second trip through the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import migrations

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import Engine

T = TypeVar("T")
Connection: TypeAlias = sqlite3.Connection
"""What a job is given: the writer's or a reader's connection, inside its transaction."""
log = logging.getLogger("mailnode.store")

HEAD_REVISION = "0013"
"""The newest migration (a test checks it against alembic's head). A database already there
is opened without importing alembic or SQLAlchemy at all: they are ~27 MB of a running
node's memory that only an upgrade needs."""

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another process's lock (a CLI tool beside the node)."""


class TooLarge(Exception):
    """Raised by a ``read_small`` job that found more rows than belong on the event loop:
    its ``large`` version then runs on a reader thread instead."""


class _Writer(sqlite3.Connection):
    """The writer's connection, remembering its ``synchronous`` mode (one PRAGMA saved per
    group when it does not change)."""

    synchronous = ""


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite said the database is locked or busy (a retry may succeed)."""
    return any(word in str(exc) for word in ("locked", "busy"))


def connect_writer(path: Path) -> _Writer:
    """A connection for writing transactions (each begun with ``BEGIN IMMEDIATE``)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, factory=_Writer)
    conn.execute("PRAGMA journal_mode=WAL")
    # Durable by default; Database.run(durable=False) relaxes single transactions.
    conn.execute("PRAGMA synchronous=FULL")
    conn.synchronous = "FULL"
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA temp_store=MEMORY")  # savepoint journals (module docstring)
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection beside the writer: in WAL mode a reader sees the last commit
    and never waits for (nor holds up) the writer; each job reads one snapshot (``BEGIN``)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    conn.execute("PRAGMA query_only=ON")
    return conn


def make_engine(path: Path) -> Engine:
    """A SQLAlchemy engine whose every transaction starts with ``BEGIN IMMEDIATE`` on a WAL
    database: for migrations (alembic) and tools, never on the serving path."""
    from sqlalchemy import Connection as Conn
    from sqlalchemy import create_engine, event
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Conn) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("BEGIN IMMEDIATE")

    return engine


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def revision(path: Path) -> str | None:
    """The database's alembic revision, read without alembic (None: not made yet)."""
    with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT)) as raw:
        if not raw.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                           " AND name = 'alembic_version'").fetchall():
            return None
        rows = raw.execute("SELECT version_num FROM alembic_version").fetchall()
        return str(rows[0][0]) if len(rows) == 1 else None


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest Alembic revision (creates it if new)."""
    from alembic import command
    cfg = _alembic_config(engine)
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        # Migrations rebuild tables (copy, drop, rename): with foreign keys on, dropping a
        # parent table would cascade-delete its children. SQLite only honours this pragma
        # outside a transaction, hence the raw connection; integrity is checked afterwards.
        raw.execute("PRAGMA foreign_keys=OFF")
        # A new database is made, not upgraded: its "Running upgrade" steps are not news.
        fresh = not raw.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        migration_log = logging.getLogger("alembic.runtime.migration")
        quiet = fresh and migration_log.getEffectiveLevel() > logging.DEBUG
        level = migration_log.level
        if quiet:
            migration_log.setLevel(logging.WARNING)
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            broken = raw.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left {len(broken)} dangling references")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
            if quiet:
                migration_log.setLevel(level)


_UPGRADE = """
import logging, sys
from pathlib import Path
from mailnode.store.database import Database
logging.basicConfig(level=logging.INFO, format="%(message)s")
Database.open(Path(sys.argv[1])).close()
"""


def upgrade_apart(path: Path) -> None:
    """Create or upgrade the database in a child process unless it is at the head revision:
    a node started on an older database then never imports SQLAlchemy and alembic, ~27 MB it
    would otherwise keep until its next restart. The child's log lines are logged here."""
    if path.exists() and revision(path) == HEAD_REVISION:
        return
    root = str(Path(__file__).resolve().parents[2])  # where this mailnode package is found
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _UPGRADE, str(path)], capture_output=True,
                          text=True, errors="replace", env=env, stdin=subprocess.DEVNULL,
                          check=False)
    for line in done.stderr.splitlines():  # alembic's "Running upgrade" lines, or a failure
        log.log(logging.INFO if done.returncode == 0 else logging.ERROR, "migration: %s", line)
    if done.returncode != 0:
        raise RuntimeError(f"upgrading {path.name} failed (the log says why)")


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest revision."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


@dataclass
class _Job(Generic[T]):
    fn: Callable[[Connection], T]
    durable: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    alone: bool = False
    clean: bool = False  # raises only before its first change (``Database.run``)


@dataclass
class _Prepare(Generic[T]):
    prepare: Callable[[], Callable[[Connection], T]]
    durable: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    clean: bool


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled; the transaction's outcome stands
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class WroteBeforeFailing(sqlite3.DatabaseError):
    """A job that said it raises only before its first change raised after one: with no
    savepoint to undo it alone, its whole group fails, as a failed commit would."""


def _commit(conn: _Writer, group: list[_Job[Any]]) -> list[tuple[Any, BaseException | None]]:
    """One transaction for the group, a SAVEPOINT per job when there are several (but for
    jobs that raise only before changing anything: nothing of theirs to undo)."""
    outcomes: list[tuple[Any, BaseException | None]] = []
    durable = any(job.durable for job in group)
    alone = len(group) == 1
    try:
        mode = "FULL" if durable else "NORMAL"
        if conn.synchronous != mode:  # a statement saved per group
            conn.execute(f"PRAGMA synchronous={mode}")
            conn.synchronous = mode
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job in group:
                fn = job.fn
                if alone:  # its failure rolls the whole transaction back: no savepoint
                    outcomes.append((fn(conn), None))
                    continue
                if job.clean:
                    changes = conn.total_changes
                    try:
                        outcomes.append((fn(conn), None))
                    except Exception as exc:
                        if conn.total_changes != changes:
                            raise WroteBeforeFailing(f"{exc!r} after a change") from exc
                        outcomes.append((None, exc))
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    result = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((result, None))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except Exception as exc:  # the job (alone) or the commit itself failed
        return [(None, exc)] * len(group)
    return outcomes


def _parts(group: list[_Job[Any]]) -> list[list[_Job[Any]]]:
    """The group in commit order, each ``alone`` job in a transaction of its own."""
    parts: list[list[_Job[Any]]] = []
    for job in group:
        if job.alone or not parts or parts[-1][-1].alone:
            parts.append([job])
        else:
            parts[-1].append(job)
    return parts


class Database:
    """Runs transactions on the one database thread, committing queued jobs as a group."""

    MAX_GROUP = 64
    PREPARE_THREADS = 2
    READERS = 2

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[_Job[Any] | list[_Job[Any]] | None] = queue.SimpleQueue()
        self._batches: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
        """Jobs each event loop queued during its current turn, handed over together."""
        self._thread = threading.Thread(target=self._work, name="mailnode-db", daemon=True)
        self._thread.start()
        self._prepares: queue.SimpleQueue[_Prepare[Any] | None] = queue.SimpleQueue()
        self._preparers = [threading.Thread(target=self._prepare_work, daemon=True,
                                            name=f"mailnode-prepare-{i}")
                           for i in range(self.PREPARE_THREADS)]
        for thread in self._preparers:
            thread.start()
        self._reads: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._readers = [threading.Thread(target=self._read_work, daemon=True,
                                          name=f"mailnode-read-{i}")
                         for i in range(self.READERS)]
        for thread in self._readers:
            thread.start()
        self._inline: dict[int, Connection] = {}
        """Each calling thread's reader connection for ``read_small`` (the event loop's)."""

    @classmethod
    def open(cls, path: Path) -> Database:
        """Open (creating and migrating if needed) with owner-only permissions."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        if revision(path) != HEAD_REVISION:
            engine = make_engine(path)
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        return cls(path)

    @functools.cached_property
    def engine(self) -> Engine:
        """A SQLAlchemy engine on the same file, made when first asked for (migrations,
        tests and tools); the node itself never asks."""
        return make_engine(self.path)

    async def run(self, fn: Callable[[Connection], T], durable: bool = True, *,
                  alone: bool = False, clean: bool = False) -> T:
        """Run ``fn`` in a transaction on the database thread; commits unless it raises.

        ``durable`` commits with ``synchronous=FULL`` (fsync: the commit survives power loss),
        for anything acknowledged to a peer or client as stored. Otherwise ``NORMAL``: in WAL
        mode that still survives a crash of the process, without an fsync (flag changes,
        queue bookkeeping).

        ``alone``: ``fn`` may change more rows than a savepoint should copy to memory; it
        gets a transaction of its own (see the module docstring).

        ``clean``: whatever ``fn`` raises, it raises before its first change (a quota check
        before the inserts), so in a group it runs without a savepoint: ~15 page copies and
        two statements less per stored message (+4 % submission rate). A change is what
        ``total_changes`` counts (rows, not DDL); should ``fn`` raise after one after all,
        its whole group fails with ``WroteBeforeFailing`` and nothing is committed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = []
            loop.call_soon(self._hand_over, loop)
        batch.append(_Job(fn, durable, loop, future, alone, clean))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """The jobs of one turn of ``loop`` in one hand-over: one wake-up of the database
        thread, and they are sure to share its next group (one fsync)."""
        batch = self._batches.pop(loop, None)
        if batch:  # else close() handed it over already
            self._jobs.put(batch if len(batch) > 1 else batch[0])

    async def run_after(self, prepare: Callable[[], Callable[[Connection], T]],
                        durable: bool = True, *, clean: bool = False) -> T:
        """``prepare`` on a worker thread, then the transaction it returns as ``run`` would.

        For CPU work on a job's own input (vetting a submitted message) that must stay off
        the event loop and out of the transaction: the worker hands the transaction straight
        to the database thread, so the caller is woken once, not twice; under load each
        wake-up waits behind everything else ready on the loop. What ``prepare`` raises is
        raised here and nothing is written.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._prepares.put(_Prepare(prepare, durable, loop, future, clean))
        return await future

    def _prepare_work(self) -> None:
        while (item := self._prepares.get()) is not None:
            try:
                fn = item.prepare()
            except Exception as exc:
                failed: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
                    (item.future, None, exc)]
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    item.loop.call_soon_threadsafe(_settle, failed)
                continue
            self._jobs.put(_Job(fn, item.durable, item.loop, item.future, clean=item.clean))

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only ``fn`` on one of the reader connections: a long listing never
        queues behind the writer's commits, nor holds them up. It sees every transaction
        whose ``run`` has returned."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._reads.put(_Job(fn, False, loop, future))
        return await future

    async def read_small(self, fn: Callable[[Connection], T],
                         large: Callable[[Connection], T] | None = None) -> T:
        """``read`` for a small, bounded ``fn`` (a row, or a page of rows the caller knows to
        be small), run now on the calling thread's own reader connection: for such a read,
        the hop to a reader thread and back (two thread wake-ups, each waiting for the GIL,
        two trips through the event loop) costs several times the read itself. A ``fn`` that
        finds more than it should do here raises ``TooLarge``, and ``large`` runs as ``read``
        would. WAL readers take no lock; should this one still find the database busy
        (recovery after a crash), it does not wait but goes the long way."""
        conn = self._inline.get(threading.get_ident())
        if conn is None:
            conn = connect_reader(self.path)
            conn.execute("PRAGMA busy_timeout = 0")
            self._inline[threading.get_ident()] = conn
        try:
            return self._snapshot(conn, fn)
        except TooLarge:
            if large is None:
                raise
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        finally:
            if conn.in_transaction:  # the snapshot could not be ended: a fresh connection
                del self._inline[threading.get_ident()]
                conn.close()
        return await self.read(large or fn)

    def _read_work(self) -> None:
        conn = connect_reader(self.path)
        try:
            while (job := self._reads.get()) is not None:
                outcome: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
                try:
                    outcome = [(job.future, self._snapshot(conn, job.fn), None)]
                except Exception as exc:
                    outcome = [(job.future, None, exc)]
                if conn.in_transaction:  # a snapshot that could not end: never reuse it
                    log.warning("reader connection could not end its snapshot; replacing it")
                    conn.close()
                    conn = connect_reader(self.path)
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    job.loop.call_soon_threadsafe(_settle, outcome)
        finally:
            conn.close()

    @staticmethod
    def _snapshot(conn: Connection, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one read transaction (a job that ends it early only shortens it)."""
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            with contextlib.suppress(sqlite3.Error):  # checked by the caller
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # read-only: the same as a commit

    def _work(self) -> None:
        # The thread keeps one connection for its life: checking one out of the pool for
        # every group cost as much as a small job.
        conn = connect_writer(self.path)
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    return
                group = first if isinstance(first, list) else [first]
                stop = False
                while len(group) < self.MAX_GROUP:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.extend(more if isinstance(more, list) else [more])
                outcomes = []
                for part in _parts(group):
                    outcomes += _commit(conn, part)
                # One wake-up per event loop for the whole group, not one per job.
                by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
                for job, (result, error) in zip(group, outcomes, strict=True):
                    by_loop.setdefault(job.loop, []).append((job.future, result, error))
                for loop, settled in by_loop.items():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(_settle, settled)
                if stop:
                    return
        finally:
            conn.close()

    def close(self) -> None:
        """Finish the queued jobs, stop the threads and close the connections."""
        for _ in self._preparers:  # first: what they prepare still goes to the jobs
            self._prepares.put(None)
        for thread in self._preparers:
            thread.join()
        for _ in self._readers:
            self._reads.put(None)
        for thread in self._readers:
            thread.join()
        for conn in self._inline.values():
            conn.close()
        self._inline.clear()
        for loop in list(self._batches):  # jobs of this turn still go first
            self._hand_over(loop)
        self._jobs.put(None)
        self._thread.join()
        if "engine" in self.__dict__:
            self.engine.dispose()
