"""Backup and restore: a running node's data survives the round trip intact."""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crypto.address import address_for
from crypto.keys import Identity
from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME
from mailnode.ops.backup import BACKUP_STATE, BackupError, backup, restore
from mailnode.store.database import Database
from mailnode.store.friends import FriendStore
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import Outgoing, SqlStore, Submission
from tests.e2e.nodes import NodeProcess, cli

PASSPHRASE = "correct horse battery staple"


def mailnode(data_dir: Path, *args: str, passphrase: str | None = PASSPHRASE,
             ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MAILNODE_BACKUP_PASSPHRASE", None)
    if passphrase is not None:
        env["MAILNODE_BACKUP_PASSPHRASE"] = passphrase
    return subprocess.run([sys.executable, "-m", "mailnode", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


async def populate(data_dir: Path) -> None:
    """Mail with flags in two mailboxes, a queued message, a friend."""
    db = Database.open(data_dir / DB_NAME)
    try:
        store = SqlStore(db, ChangeNotifier())
        alice = await store.find_user("alice")
        assert alice is not None
        inbox = await store.get_mailbox(alice.id, "INBOX")
        assert inbox is not None
        for i in range(5):
            await store.append(inbox.id, f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode(),
                               frozenset({"\\Seen"} if i % 2 else {"\\Flagged", "$Work"}),
                               datetime(2026, 1, 1 + i, tzinfo=UTC))
        archive = await store.create_mailbox(alice.id, "Projects")
        await store.append(archive.id, b"Subject: old\r\n\r\n" + os.urandom(200_000).hex()
                           .encode() + b"\r\n", frozenset({"\\Answered"}), None)
        carol = address_for(Identity.generate().verify_key)
        await store.submit(Submission(alice.id, b"", (), b"From: a\r\n\r\nqueued\r\n", b"",
                                      (Outgoing(os.urandom(16), carol),)))
        await FriendStore(db).add_pending(b"f" * 32, "friend-pi", (("10.0.0.7", 2700),),
                                          b"s" * 16, 2**40, 100 << 20, 14, 1_800_000_000)
    finally:
        db.close()


async def snapshot(data_dir: Path) -> dict[str, Any]:
    """Everything a user or the queue would notice, read back through SqlStore."""
    db = Database.open(data_dir / DB_NAME)
    try:
        store = SqlStore(db, ChangeNotifier())
        seen: dict[str, Any] = {"queue": [(e.id, e.sender, e.recipient, e.created_at)
                                          for e in await store.queue_entries()],
                                "friends": [(f.node_key, f.name, f.endpoints, f.secret)
                                            for f in await FriendStore(db).list_friends()]}
        for user in await store.list_users():
            seen[user.name] = {"address": user.address,
                               "seed": (await store.identity(user.id)).seed}
            for box in await store.list_mailboxes(user.id):
                metas = await store.list_messages(box.id)
                bodies = await store.fetch_bodies(box.id, [m.uid for m in metas])
                seen[user.name][box.name] = (box.uidvalidity, [
                    (m.uid, sorted(m.flags), m.internaldate, bodies[m.uid]) for m in metas])
        return seen
    finally:
        db.close()


def test_round_trip_of_a_running_node(tmp_path: Path) -> None:
    node = NodeProcess.init(tmp_path / "node", [])
    cli(node.data_dir, "user", "add", "alice", password="a-long-enough-password")
    asyncio.run(populate(node.data_dir))
    before = asyncio.run(snapshot(node.data_dir))
    node.start()
    try:
        # Changes the running node makes (in its write-ahead log) are in the backup too.
        imap = imaplib.IMAP4("127.0.0.1", node.imap_port)
        imap.login("alice", "a-long-enough-password")
        imap.select("INBOX")
        assert imap.uid("STORE", "1", "+FLAGS", "(\\Deleted $Backup)")[0] == "OK"
        assert imap.append("Projects", "(\\Seen)", None,
                           b"Subject: while running\r\n\r\nhi\r\n")[0] == "OK"
        imap.logout()
        made = mailnode(node.data_dir, "backup", str(tmp_path / "node.backup"))
    finally:
        assert node.stop() == 0
    assert made.returncode == 0, made.stderr
    assert "database pages copied: " in made.stderr  # progress, in pages
    state = json.loads((node.data_dir / BACKUP_STATE).read_text())
    assert state["file"] == str(tmp_path / "node.backup") and state["last_backup"] > 0
    assert (tmp_path / "node.backup").stat().st_mode & 0o777 == 0o600
    assert b"queued" not in (tmp_path / "node.backup").read_bytes()  # encrypted

    done = mailnode(tmp_path / "restored", "restore", str(tmp_path / "node.backup"))
    assert done.returncode == 0, done.stderr
    restored = tmp_path / "restored"
    assert restored.stat().st_mode & 0o777 == 0o700
    for name in (DB_NAME, NODE_KEY_NAME, CONFIG_NAME, "tls.pem"):
        assert (restored / name).stat().st_mode & 0o777 == 0o600
        if name != DB_NAME:
            assert (restored / name).read_bytes() == (node.data_dir / name).read_bytes()
    after = asyncio.run(snapshot(restored))
    assert after["alice"]["INBOX"][1] and after["queue"] and after["friends"]
    assert set(after["alice"]["INBOX"][1][0][1]) == {"$Backup", "\\Deleted", "\\Flagged",
                                                      "$Work"}
    assert after["alice"]["Projects"][1][-1][3] == b"Subject: while running\r\n\r\nhi\r\n"
    before["alice"]["INBOX"][1][0] = after["alice"]["INBOX"][1][0]
    before["alice"]["Projects"][1].append(after["alice"]["Projects"][1][-1])
    assert after == before  # everything else exactly as it was
    # ... and as the original holds it now (the node may have retried the queue since).
    assert after == asyncio.run(snapshot(node.data_dir))


def test_wrong_passphrase_and_occupied_directory_are_refused(tmp_path: Path) -> None:
    node = NodeProcess.init(tmp_path / "node", [])
    assert mailnode(node.data_dir, "backup", str(tmp_path / "b")).returncode == 0
    wrong = mailnode(tmp_path / "new", "restore", str(tmp_path / "b"), passphrase="guess")
    assert wrong.returncode == 1 and not (tmp_path / "new").exists()
    assert wrong.stderr == "mailnode: wrong passphrase, or the backup file is damaged\n"
    config = (node.data_dir / CONFIG_NAME).read_bytes()
    onto = mailnode(node.data_dir, "restore", str(tmp_path / "b"))
    assert onto.returncode == 1 and "not empty" in onto.stderr
    assert len(onto.stderr.splitlines()) == 1
    assert (node.data_dir / CONFIG_NAME).read_bytes() == config
    assert not [p for p in tmp_path.iterdir() if "restore" in p.name]  # no staging left
    (tmp_path / "empty").mkdir()
    assert mailnode(tmp_path / "empty", "restore", str(tmp_path / "b")).returncode == 0
    nothing = mailnode(tmp_path / "x", "restore", str(tmp_path / "b"), passphrase=None)
    assert nothing.returncode == 1 and "MAILNODE_BACKUP_PASSPHRASE" in nothing.stderr


def test_damage_is_detected(tmp_path: Path) -> None:
    node = NodeProcess.init(tmp_path / "node", [])
    backup(node.data_dir, tmp_path / "b", "pw")
    data = (tmp_path / "b").read_bytes()
    cases = {"flipped": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
             "truncated": data[:len(data) // 2], "extended": data + b"x",
             "not a backup": b"hello" * 20}
    for what, damaged in cases.items():
        (tmp_path / what).write_bytes(damaged)
        with pytest.raises(BackupError, match=r"damaged|truncated|not a mailnode backup"):
            restore(tmp_path / what, tmp_path / f"out-{what}", "pw")
        assert not (tmp_path / f"out-{what}").exists()
    assert sorted(restore(tmp_path / "b", tmp_path / "ok", "pw")) == sorted(
        [DB_NAME, NODE_KEY_NAME, CONFIG_NAME, "tls.pem"])


def test_the_copy_is_one_snapshot_while_another_connection_writes(tmp_path: Path) -> None:
    """Commits between the copy's steps neither restart it nor leak into it."""
    import sqlite3

    from mailnode.ops.backup import snapshot_database

    live = sqlite3.connect(tmp_path / "live.db", isolation_level=None)
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("CREATE TABLE t (n INTEGER, pad BLOB)")
    live.executemany("INSERT INTO t VALUES (?, randomblob(3000))", [(i,) for i in range(300)])
    steps: list[tuple[int, int]] = []

    def write_meanwhile(done: int, total: int) -> None:
        steps.append((done, total))
        live.execute("INSERT INTO t VALUES (-1, randomblob(3000))")
        live.execute("UPDATE t SET n = n + 1000 WHERE n = 0")

    snapshot_database(tmp_path / "live.db", tmp_path / "copy.db", write_meanwhile,
                      pages_per_step=16)
    total = steps[0][1]
    assert len(steps) == -(-total // 16) and steps[-1] == (total, total)  # no restart
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT count(*), min(n), max(n) FROM t").fetchone() == (300, 0, 299)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert live.execute("SELECT count(*) FROM t").fetchone()[0] == 300 + len(steps)
