"""mbsync (isync), a stock client, syncing both ways against the IMAP server on SQLite."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crypto.keys import Identity
from mailnode.imap.server import ImapServer
from mailnode.store.api import Mailbox
from mailnode.store.sqlite import SqlStore

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync not installed")

PASSWORD = "mbsync-password"


@dataclass
class Setup:
    store: SqlStore
    inbox: Mailbox
    user_id: int
    maildir: Path
    config: Path


@pytest.fixture
async def setup(store: SqlStore, tmp_path: Path) -> AsyncIterator[Setup]:
    user = await store.create_user("alice", PASSWORD, Identity.generate())
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    server = ImapServer(store, store.notifier, max_literal=1 << 20)
    await server.start("127.0.0.1", 0)
    maildir = tmp_path / "maildir"
    maildir.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(f"""IMAPAccount mn
Host 127.0.0.1
Port {server.port}
User alice
Pass {PASSWORD}
SSLType None
AuthMechs PLAIN

IMAPStore far
Account mn

MaildirStore near
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel mn
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    try:
        yield Setup(store, inbox, user.id, maildir, config)
    finally:
        await server.stop()


async def mbsync(setup: Setup) -> None:
    proc = await asyncio.create_subprocess_exec(
        "mbsync", "-c", str(setup.config), "mn", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()


def canonical(data: bytes) -> bytes:
    """mbsync stores LF line endings and adds its own X-TUID tracking header."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    return b"\n".join(line for line in lines if not line.startswith(b"X-TUID: "))


def files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (folder / sub).glob("*"))


async def test_mbsync_pulls_pushes_flags_appends_and_expunges(setup: Setup) -> None:
    bodies = [f"From: a@b\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode() for i in range(3)]
    for body in bodies:
        await setup.store.append(setup.inbox.id, body, frozenset(), None)

    await mbsync(setup)  # pull: every folder created locally, every message intact
    local = files(setup.maildir / "INBOX")
    assert sorted(canonical(p.read_bytes()) for p in local) == sorted(map(canonical, bodies))
    for name in ("Sent", "Drafts", "Trash"):
        assert (setup.maildir / name / "cur").is_dir()

    seen = next(p for p in local if canonical(p.read_bytes()) == canonical(bodies[0]))
    gone = next(p for p in local if canonical(p.read_bytes()) == canonical(bodies[1]))
    seen.rename(setup.maildir / "INBOX" / "cur" / (seen.name + "S"))  # mark read
    gone.rename(setup.maildir / "INBOX" / "cur" / (gone.name + "T"))  # delete
    (setup.maildir / "Drafts" / "new" / "1.local").write_bytes(
        b"From: a@b\r\nSubject: draft\r\n\r\nwritten offline\r\n")

    await mbsync(setup)  # push: flag, expunge and append reach the server
    metas = {m.uid: m for m in await setup.store.list_messages(setup.inbox.id)}
    stored = await setup.store.fetch_bodies(setup.inbox.id, list(metas))
    by_body = {body: metas[uid] for uid, body in stored.items()}
    assert set(by_body) == {bodies[0], bodies[2]}
    assert "\\Seen" in by_body[bodies[0]].flags
    assert "\\Seen" not in by_body[bodies[2]].flags
    drafts = await setup.store.get_mailbox(setup.user_id, "Drafts")
    assert drafts is not None
    draft_uids = [m.uid for m in await setup.store.list_messages(drafts.id)]
    [draft] = (await setup.store.fetch_bodies(drafts.id, draft_uids)).values()
    assert canonical(draft) == b"From: a@b\nSubject: draft\n\nwritten offline\n"
