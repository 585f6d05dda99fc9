"""``mailnode backup`` / ``restore``: the whole node in one passphrase-encrypted file.

The database is copied with SQLite's online backup API inside one read transaction on the
live file, so a running node keeps serving and the copy is one consistent snapshot (a
step-wise backup without that transaction restarts whenever the node commits and may never
finish). The copy, the node key, the TLS certificate and the config go into a tar stream
that is encrypted in 1 MiB chunks (bounded memory whatever the database size) with a key
derived from the passphrase by Argon2id. Each chunk is a SecretBox whose nonce is a random
per-file prefix plus the chunk number, and whose first byte says whether it is the last:
chunks cannot be reordered, dropped or cut off without the restore noticing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import struct
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from mailnode.client_tls import TLS_NAME
from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME
from mailnode.ops import Progress

MAGIC = b"mailnode-backup-1\n"
BACKUP_STATE = "backup.json"
CHUNK = 1 << 20
# Argon2id cost: 3 passes over 128 MiB, which a Raspberry Pi can afford once per backup.
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT = 128 * 1024 * 1024
# A crafted file must not make restore allocate unbounded memory or spin for hours.
MAX_OPSLIMIT, MAX_MEMLIMIT = 16, 1 << 30
_HEADER = struct.Struct(f">{nacl.pwhash.argon2id.SALTBYTES}sQQ16s")
_LENGTH = struct.Struct(">I")
REQUIRED = (DB_NAME, NODE_KEY_NAME, CONFIG_NAME)
MEMBERS = (*REQUIRED, TLS_NAME, "peers.json")



class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what to do."""


def _key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(),
                                    salt, opslimit=opslimit, memlimit=memlimit)


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">Q", index)


class _EncryptingWriter(io.RawIOBase):
    """A write-only stream that seals what it is given chunk by chunk into ``out``."""

    def __init__(self, out: BinaryIO, passphrase: str) -> None:
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        self._prefix = nacl.utils.random(16)
        out.write(MAGIC + _HEADER.pack(salt, OPSLIMIT, MEMLIMIT, self._prefix))
        self._box = nacl.secret.SecretBox(_key(passphrase, salt, OPSLIMIT, MEMLIMIT))
        self._out, self._buffer, self._index = out, bytearray(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) > CHUNK:
            self._seal(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _seal(self, data: bytes, last: bool) -> None:
        sealed = self._box.encrypt(bytes([last]) + data, _nonce(self._prefix, self._index))
        self._index += 1
        self._out.write(_LENGTH.pack(len(sealed.ciphertext)) + sealed.ciphertext)

    def finish(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()


def _decrypted_chunks(source: BinaryIO, passphrase: str) -> Iterator[bytes]:
    """The plaintext chunks of a backup file; BackupError on any damage or a wrong key."""
    head = source.read(len(MAGIC) + _HEADER.size)
    if not head.startswith(MAGIC) or len(head) < len(MAGIC) + _HEADER.size:
        raise BackupError("not a mailnode backup file")
    salt, opslimit, memlimit, prefix = _HEADER.unpack(head[len(MAGIC):])
    if not (1 <= opslimit <= MAX_OPSLIMIT and 8192 <= memlimit <= MAX_MEMLIMIT):
        raise BackupError("the backup file's header is damaged")
    box = nacl.secret.SecretBox(_key(passphrase, salt, opslimit, memlimit))
    overhead = nacl.secret.SecretBox.MACBYTES + 1
    index, last = 0, False
    while not last:
        raw = source.read(_LENGTH.size)
        if len(raw) < _LENGTH.size:
            raise BackupError("the backup file is truncated")
        (length,) = _LENGTH.unpack(raw)
        if not overhead <= length <= CHUNK + overhead:
            raise BackupError("the backup file is damaged")
        sealed = source.read(length)
        try:
            plain = box.decrypt(sealed, _nonce(prefix, index))
        except nacl.exceptions.CryptoError:
            raise BackupError("wrong passphrase, or the backup file is damaged"
                              if index == 0 else "the backup file is damaged") from None
        index += 1
        last = plain[0] == 1
        yield plain[1:]
    if source.read(1):
        raise BackupError("the backup file has data after its end; it is damaged")


class _DecryptingReader(io.RawIOBase):
    """A read-only stream over the plaintext of a backup file."""

    def __init__(self, source: BinaryIO, passphrase: str) -> None:
        self._chunks = _decrypted_chunks(source, passphrase)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def snapshot_database(db_path: Path, target: Path, progress: Progress | None = None,
                      pages_per_step: int = 256) -> None:
    """Copy the live database at ``db_path`` to ``target``: one consistent snapshot."""
    source = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    copy = sqlite3.connect(target)
    try:
        # The read transaction pins one snapshot of the WAL database for every step.
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()

        def report(_status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)
        source.backup(copy, pages=pages_per_step, progress=report)
        source.execute("COMMIT")
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file in the archive
    finally:
        copy.close()
        source.close()


def read_passphrase(env: str, prompt: Callable[[str], str], confirm: bool) -> str:
    """The passphrase from ``$env``, else prompted (twice when making a backup)."""
    passphrase = os.environ.get(env)
    if passphrase is None:
        passphrase = prompt("Backup passphrase: ")
        if confirm and prompt("Repeat passphrase: ") != passphrase:
            raise BackupError("the passphrases differ; nothing was written")
    if not passphrase:
        raise BackupError("the passphrase is empty; choose one (a few words are best)")
    return passphrase


def backup(data_dir: Path, destination: Path, passphrase: str,
           progress: Progress | None = None, now: float | None = None) -> list[str]:
    """Write the encrypted backup of the node in ``data_dir``; returns the files saved."""
    for name in REQUIRED:
        if not (data_dir / name).is_file():
            raise BackupError(f"no {name} in {data_dir}: is this a mailnode data directory?")
    if destination.exists() and destination.is_dir():
        raise BackupError(f"{destination} is a directory; give a file name")
    partial = destination.with_name(destination.name + ".partial")
    saved: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mailnode-backup-") as tmp:
        copy = Path(tmp) / DB_NAME
        snapshot_database(data_dir / DB_NAME, copy, progress)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                writer = _EncryptingWriter(out, passphrase)
                with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for name in MEMBERS:
                        path = copy if name == DB_NAME else data_dir / name
                        if path.is_file():
                            tar.add(path, arcname=name, recursive=False)
                            saved.append(name)
                writer.finish()
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, destination)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    _write_state(data_dir, destination, time.time() if now is None else now)
    return saved


def _write_state(data_dir: Path, destination: Path, now: float) -> None:
    """``backup.json``, which ``doctor`` reads to say when the last backup was made."""
    state = data_dir / BACKUP_STATE
    tmp = state.with_name(BACKUP_STATE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"last_backup": int(now), "file": str(destination.resolve())}, out)
    os.replace(tmp, state)


def last_backup(data_dir: Path) -> dict[str, object] | None:
    """What ``backup.json`` says, or None when there is none (or it is unreadable)."""
    try:
        state = json.loads((data_dir / BACKUP_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def restore(source: Path, data_dir: Path, passphrase: str) -> list[str]:
    """Unpack the backup ``source`` into ``data_dir`` (absent or empty); returns the files."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty; restore only into a new or empty "
                          "directory (move the old node away first)")
    try:
        archive = source.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {source}: {exc.strerror}") from None
    parent = data_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=parent))
    try:
        with archive:
            plain = _DecryptingReader(archive, passphrase)
            with tarfile.open(fileobj=plain, mode="r|") as tar:
                restored = _unpack(tar, staging)
            while plain.read(CHUNK):  # to the last chunk: what is cut off or added is noticed
                pass
        missing = [name for name in REQUIRED if name not in restored]
        if missing:
            raise BackupError(f"the backup lacks {', '.join(missing)}; it is not usable")
        _check_database(staging / DB_NAME)
        if data_dir.exists():
            data_dir.rmdir()  # empty, checked above
        os.replace(staging, data_dir)
        os.chmod(data_dir, 0o700)
    except tarfile.TarError:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackupError("the backup file is damaged (bad archive)") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return restored


def _unpack(tar: tarfile.TarFile, target: Path) -> list[str]:
    """Only the known file names, as regular files of mode 0600 (no paths, no links)."""
    restored: list[str] = []
    for member in tar:
        if member.name not in MEMBERS or not member.isfile() or member.name in restored:
            raise BackupError(f"the backup holds an unexpected entry {member.name[:80]!r}")
        data = tar.extractfile(member)
        assert data is not None
        fd = os.open(target / member.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, contextlib.closing(data):
            shutil.copyfileobj(data, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        restored.append(member.name)
    return restored


def _check_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the database in the backup is damaged ({exc})") from None
    finally:
        conn.close()
    if verdict is None or verdict[0] != "ok":
        raise BackupError("the database in the backup fails its integrity check")

