"""What the serving node keeps in memory: checked in fresh interpreters (subprocesses), by the
allocator's own accounting or by the modules loaded, never by timing or by RSS thresholds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailnode.client_tls import TLS_NAME
from tests.e2e.nodes import NodeProcess


def _python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=True, stdin=subprocess.DEVNULL,
                          env=None if env is None else {**os.environ, **env})
    return done.stdout.strip()


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


RETAINED_AFTER_TWO_SCRYPTS = """
    import ctypes, hashlib, re, threading
    from mailnode.node import bound_malloc

    def heap_bytes() -> int:
        # glibc's own report: bytes its arenas hold from the system (free or not)
        libc = ctypes.CDLL(None)
        libc.open_memstream.restype = ctypes.c_void_p
        text, size = ctypes.c_char_p(), ctypes.c_size_t()
        stream = ctypes.c_void_p(libc.open_memstream(ctypes.byref(text), ctypes.byref(size)))
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        return int(re.findall(r'<system type="current" size="(\\d+)"/>', text.value.decode())[-1])

    if BOUND:
        assert bound_malloc()
    before = heap_bytes()
    for _ in range(2):  # a login's check on the hasher thread: 16 MiB, then freed
        hashing = threading.Thread(target=hashlib.scrypt, args=(b"pw",),
                                   kwargs={"salt": bytes(16), "n": 2**14, "r": 8, "p": 1})
        hashing.start()
        hashing.join()
    print(heap_bytes() - before)
"""


@pytest.mark.skipif(not _glibc(), reason="mallopt settings are glibc's")
def test_a_freed_scrypt_buffer_goes_back_to_the_system() -> None:
    """glibc raises its mmap threshold after the first 16 MiB buffer is freed, so the next one
    comes from an arena and stays resident; the node's fixed settings return it."""
    unbounded = int(_python("BOUND = False\n" + textwrap.dedent(RETAINED_AFTER_TWO_SCRYPTS)))
    bounded = int(_python("BOUND = True\n" + textwrap.dedent(RETAINED_AFTER_TWO_SCRYPTS)))
    assert unbounded >= 16 * 2**20  # what this test guards against does happen
    assert bounded < 2**20


@pytest.mark.skipif(not _glibc(), reason="GLIBC_TUNABLES are glibc's")
def test_the_tunables_benchmarks_start_their_processes_with_are_the_nodes_settings() -> None:
    """``malloc_tunables`` spells MALLOC_SETTINGS as glibc reads them at start: a process
    given them keeps no freed scrypt buffer, as one calling ``bound_malloc`` does."""
    from mailnode.node import malloc_tunables
    tuned = int(_python("BOUND = False\n" + textwrap.dedent(RETAINED_AFTER_TWO_SCRYPTS),
                        env={"GLIBC_TUNABLES": malloc_tunables()}))
    assert tuned < 2**20


SERVE_AND_LIST_MODULES = """
    import asyncio, sys
    from pathlib import Path
    from mailnode.node import serve

    async def main() -> None:
        stop = asyncio.Event()
        await serve(Path(DATA_DIR), stop, lambda _listening: stop.set())

    asyncio.run(main())
    print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_a_serving_node_loads_neither_cryptography_nor_alembic(tmp_path: Path) -> None:
    """cryptography (~10 MB of a node's RSS) makes certificates, and alembic (with mako,
    ~11 MB) and SQLAlchemy (~16 MB) create and upgrade databases: a node whose data
    directory has both up to date needs none of them to serve, from its imports through
    startup until it is ready."""
    node = NodeProcess.init(tmp_path, [])
    assert (tmp_path / TLS_NAME).exists()  # made at init: nothing left to make
    loaded = _python(f"DATA_DIR = {str(node.data_dir)!r}\n"
                     + textwrap.dedent(SERVE_AND_LIST_MODULES)).split()
    assert "mailnode" in loaded and "sqlite3" in loaded  # it did serve
    assert "cryptography" not in loaded
    assert "alembic" not in loaded and "mako" not in loaded
    assert "sqlalchemy" not in loaded


def test_a_node_started_on_an_older_database_upgrades_it_in_a_child(tmp_path: Path) -> None:
    """After a software update the schema is upgraded by a child process: the serving node
    still never imports SQLAlchemy or alembic (which it would keep until its next restart)."""
    from alembic import command

    from mailnode.config import DB_NAME
    from mailnode.store.database import HEAD_REVISION, Database, _alembic_config, revision

    node = NodeProcess.init(tmp_path, [])
    path = node.data_dir / DB_NAME
    db = Database.open(path)
    try:
        command.downgrade(_alembic_config(db.engine), "0009")
    finally:
        db.close()
    assert revision(path) == "0009"
    loaded = _python(f"DATA_DIR = {str(node.data_dir)!r}\n"
                     + textwrap.dedent(SERVE_AND_LIST_MODULES)).split()
    assert "mailnode" in loaded and "sqlite3" in loaded  # it did serve
    assert "sqlalchemy" not in loaded and "alembic" not in loaded
    assert revision(path) == HEAD_REVISION
