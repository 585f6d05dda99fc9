"""``mailnode import`` / ``export``: a user's mail from and to mbox files and Maildirs.

One message is in memory at a time, read with at most ``max_message_size`` + 1 bytes
(larger ones are skipped and counted). mbox is read and written as mboxrd: a body line
``>From `` (any number of ``>``) gains one ``>`` on export and loses one on import, so
lines that began with ``From `` survive the round trip. Flags travel in the
``Status``/``X-Status`` headers (mbox) and in the file name's info (Maildir ``:2,FRS``).
"""

from __future__ import annotations

import asyncio
import itertools
import mailbox
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailnode.config import DB_NAME
from mailnode.ops import Progress
from mailnode.store.api import User
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                 "T": "\\Deleted"}
# mbox: Status R = read, O = old (seen by a client: not \Recent); X-Status A F D T.
STATUS_FLAGS = {"R": "\\Seen"}
X_STATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "D": "\\Deleted", "T": "\\Draft"}
_UNQUOTE = re.compile(rb"^>(>*From )", re.M)
_QUOTE = re.compile(rb"^(>*From )", re.M)
_STATUS = re.compile(rb"^(X-)?Status:[^\n]*\n", re.M | re.I)


class MailFileError(Exception):
    """An import or export that cannot start; the message says what to do."""


@dataclass
class Outcome:
    done: int = 0
    skipped: int = 0


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def _headers(message: bytes) -> bytes:
    end = message.find(b"\n\n")
    return message if end < 0 else message[:end + 1]


def mbox_flags(message: bytes) -> frozenset[str]:
    """IMAP flags from the Status and X-Status headers of an mbox message (LF endings)."""
    flags: set[str] = set()
    for match in re.finditer(rb"^(X-)?Status:[ \t]*([A-Za-z]*)", _headers(message),
                             re.M | re.I):
        table = X_STATUS_FLAGS if match.group(1) else STATUS_FLAGS
        flags.update(table[c] for c in match.group(2).decode() if c in table)
    return frozenset(flags)


def _from_line_date(line: bytes) -> datetime | None:
    parts = line.decode("ascii", "replace").split()
    for width in (5, 6):  # "Thu Jan  1 00:00:00 2026" with or without a zone after it
        try:
            when = time.strptime(" ".join(parts[-width:][:5]), "%a %b %d %H:%M:%S %Y")
        except ValueError:
            continue
        return datetime(*when[:6], tzinfo=UTC)
    return None


def import_mail(data_dir: Path, user: str, source: Path, mailbox_name: str, limit: int,
                progress: Progress | None = None) -> Outcome:
    """File the messages of an mbox file or a Maildir into ``user``'s mailbox.

    Refused while the node runs: it keeps each mailbox's listing in memory, updated by its
    own writes only, so its clients would not see mail filed by another process."""
    from mailnode.runstate import read_status

    if (running := read_status(data_dir)) is not None:
        raise MailFileError(f"the node is running (pid {running['pid']}); stop it, import, "
                            "then start it again")
    if source.is_dir():
        if not all((source / sub).is_dir() for sub in ("cur", "new")):
            raise MailFileError(f"{source} is a directory but not a Maildir (no cur/ and new/)")
        messages = _maildir_messages(source, limit)
    elif source.is_file():
        messages = _mbox_messages(source, limit)
    else:
        raise MailFileError(f"{source} does not exist")
    return asyncio.run(_import(data_dir, user, mailbox_name, messages, progress))


Item = tuple[bytes | None, frozenset[str], datetime | None]
IMPORT_BATCH = 500
IMPORT_BATCH_BYTES = 16 * 1024 * 1024
"""Messages filed per transaction by ``import_mail`` (at most this many, or this many bytes,
and always at least one)."""


def _maildir_messages(root: Path, limit: int) -> tuple[int, itertools.chain[Item]]:
    files = sorted(p for sub in ("new", "cur") for p in (root / sub).iterdir()
                   if p.is_file() and not p.name.startswith("."))

    def read(path: Path) -> Item:
        info = path.name.partition(":2,")[2] if ":2," in path.name else ""
        flags = frozenset(MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS)
        when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        with path.open("rb") as f:
            data = f.read(limit + 1)
        return (None if len(data) > limit else _crlf(data)), flags, when
    return len(files), itertools.chain(read(p) for p in files)


def _mbox_messages(path: Path, limit: int) -> tuple[int, itertools.chain[Item]]:
    try:
        box = mailbox.mbox(path, create=False)
        keys = list(box.iterkeys())  # offsets only: mailbox scans for From_ lines
    except (OSError, mailbox.Error) as exc:
        raise MailFileError(f"cannot read {path} as an mbox file: {exc}") from None

    def read(key: str) -> Item:
        with box.get_file(key, from_=True) as f:
            from_line = f.readline()
            data = f.read(limit + 1)
        data = data.replace(b"\r\n", b"\n")
        if len(data) > limit:
            return None, frozenset(), None
        flags = mbox_flags(data)
        headers = _headers(data)
        data = _STATUS.sub(b"", headers) + data[len(headers):]
        return _crlf(_UNQUOTE.sub(rb"\1", data)), flags, _from_line_date(from_line)
    return len(keys), itertools.chain(read(k) for k in keys)


async def _user(store: SqlStore, name: str) -> User:
    user = await store.find_user(name)
    if user is None:
        raise MailFileError(f"no user {name!r} (`mailnode status` lists them)")
    return user


async def _import(data_dir: Path, user_name: str, mailbox_name: str,
                  messages: tuple[int, itertools.chain[Item]],
                  progress: Progress | None) -> Outcome:
    total, items = messages
    db = Database.open(data_dir / DB_NAME)
    try:
        store = SqlStore(db, ChangeNotifier())
        user = await _user(store, user_name)
        box = (await store.get_mailbox(user.id, mailbox_name)
               or await store.create_mailbox(user.id, mailbox_name))
        outcome = Outcome()
        batch: list[tuple[bytes, frozenset[str], datetime | None]] = []
        size = 0

        async def file_batch() -> None:
            nonlocal size
            if batch:
                await store.append_many(box.id, batch)
                outcome.done += len(batch)
                batch.clear()
                size = 0
            if progress is not None:
                progress(outcome.done + outcome.skipped, total)

        # A transaction (and its fsync) per group of messages, not per message: importing
        # a large mailbox was bound by commits.
        for body, flags, when in items:
            if body is None:
                outcome.skipped += 1
                continue
            batch.append((body, flags, when))
            size += len(body)
            if len(batch) >= IMPORT_BATCH or size >= IMPORT_BATCH_BYTES:
                await file_batch()
        await file_batch()
        return outcome
    finally:
        db.close()


def export_mail(data_dir: Path, user: str, mailbox_name: str, target: Path,
                progress: Progress | None = None) -> Outcome:
    """Write ``user``'s mailbox to a new mbox file, or a Maildir when ``target`` is a
    directory (or ends in ``/``)."""
    as_maildir = target.is_dir() or str(target).endswith(os.sep)
    if not as_maildir and target.exists():
        raise MailFileError(f"{target} exists; choose a new file name")
    return asyncio.run(_export(data_dir, user, mailbox_name, target, as_maildir, progress))


async def _export(data_dir: Path, user_name: str, mailbox_name: str, target: Path,
                  as_maildir: bool, progress: Progress | None) -> Outcome:
    db = Database.open(data_dir / DB_NAME)
    try:
        store = SqlStore(db, ChangeNotifier())
        user = await _user(store, user_name)
        box = await store.get_mailbox(user.id, mailbox_name)
        if box is None:
            raise MailFileError(f"{user_name} has no mailbox {mailbox_name!r}")
        metas = await store.list_messages(box.id)
        if as_maildir:
            for sub in ("cur", "new", "tmp"):
                (target / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            out = None
        else:
            out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                            "wb")
        outcome = Outcome()
        try:
            for meta in metas:
                body = (await store.fetch_bodies(box.id, [meta.uid])).get(meta.uid)
                when = int(meta.internaldate.timestamp())
                if body is None:  # expunged meanwhile
                    outcome.skipped += 1
                elif out is None:
                    _write_maildir(target, meta.uid, body, meta.flags, when)
                    outcome.done += 1
                else:
                    out.write(_mbox_entry(body, meta.flags, when))
                    outcome.done += 1
                if progress is not None:
                    progress(outcome.done + outcome.skipped, len(metas))
        finally:
            if out is not None:
                out.close()
        if progress is not None and not metas:
            progress(0, 0)
        return outcome
    finally:
        db.close()


def _mbox_entry(body: bytes, flags: frozenset[str], internaldate: int) -> bytes:
    data = body.replace(b"\r\n", b"\n")
    headers = _headers(data)
    status = "".join(c for c, f in STATUS_FLAGS.items() if f in flags) + "O"
    x_status = "".join(c for c, f in X_STATUS_FLAGS.items() if f in flags)
    added = f"Status: {status}\n" + (f"X-Status: {x_status}\n" if x_status else "")
    data = added.encode() + _STATUS.sub(b"", headers) + data[len(headers):]
    date = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(internaldate))
    data = _QUOTE.sub(rb">\1", data)
    return f"From MAILER-DAEMON {date}\n".encode() + data + (
        b"\n" if data.endswith(b"\n") else b"\n\n")


def _write_maildir(root: Path, uid: int, body: bytes, flags: frozenset[str],
                   internaldate: int) -> None:
    info = "".join(sorted(c for c, f in MAILDIR_FLAGS.items() if f in flags))
    name = f"{internaldate}.M{uid}P{os.getpid()}.{socket.gethostname().replace('/', '_')}"
    tmp = root / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body.replace(b"\r\n", b"\n"))
    os.utime(tmp, (internaldate, internaldate))
    os.replace(tmp, root / "cur" / f"{name}:2,{info}")
