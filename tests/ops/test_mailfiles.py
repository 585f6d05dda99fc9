"""Import and export of mbox files and Maildirs, through the CLI."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailnode.cli import main
from mailnode.config import CONFIG_NAME, DB_NAME, load, render
from mailnode.ops.mailfiles import mbox_flags
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

LIMIT = 4096

# A real-world-like mbox: encoded words, 8-bit Latin-1 and UTF-8, quoted-printable, base64,
# CRLF lines from a Windows client, Status/X-Status flags, and mboxrd From_ quoting.
MBOX = (
    b"From alice@example.org Sat Jan  3 01:05:34 2026\n"
    b"From: =?UTF-8?B?SsO8cmdlbg==?= <j@example.org>\n"
    b"Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=\n"
    b"Status: RO\n"
    b"X-Status: AF\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\n"
    b">From here on, a line that began with From.\n"
    b">>From a line that began with >From.\n"
    b"\n"
    b"From - Mon Feb  2 10:00:00 2026\n"
    b"From: bob@example.org\n"
    b"Subject: latin-1\n"
    b"Content-Type: text/plain; charset=iso-8859-1\n"
    b"\n"
    b"caf\xe9 cr\xe8me \xbd\r\n"
    b"second line\r\n"
    b"\n"
    b"From MAILER-DAEMON Tue Mar 10 12:30:00 2026\n"
    b"Subject: too big\n"
    b"\n" + b"x" * LIMIT + b"\n"
    b"\n"
    b"From carol@example.org Wed Apr  1 08:00:00 2026\n"
    b"Subject: attachment\n"
    b"Status: R\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=b1\n"
    b"\n"
    b"--b1\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Sch=C3=B6n\n"
    b"--b1\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"AAECAwQ=\n"
    b"--b1--\n"
)


def crlf(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


EXPECTED = [  # (body as filed, flags, internaldate)
    (crlf(b"From: =?UTF-8?B?SsO8cmdlbg==?= <j@example.org>\n"
          b"Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=\n"
          b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
          b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\nFrom here on, a line that began with From.\n"
          b">From a line that began with >From.\n"),
     {"\\Seen", "\\Answered", "\\Flagged"}, datetime(2026, 1, 3, 1, 5, 34, tzinfo=UTC)),
    (crlf(b"From: bob@example.org\nSubject: latin-1\n"
          b"Content-Type: text/plain; charset=iso-8859-1\n\ncaf\xe9 cr\xe8me \xbd\n"
          b"second line\n"), set(), datetime(2026, 2, 2, 10, tzinfo=UTC)),
    (crlf(MBOX[MBOX.index(b"Subject: attachment"):]).replace(b"Status: R\r\n", b""),
     {"\\Seen"}, datetime(2026, 4, 1, 8, tzinfo=UTC)),
]


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         ) -> Path:
    d = tmp_path / "node"
    assert main(["--data-dir", str(d), "init"]) == 0
    config = load(d / CONFIG_NAME)
    from dataclasses import replace
    (d / CONFIG_NAME).write_text(render(replace(config, max_message_size=LIMIT)))
    monkeypatch.setenv("MAILNODE_PASSWORD", "a-long-enough-password")
    assert main(["--data-dir", str(d), "user", "add", "alice"]) == 0
    capsys.readouterr()
    return d


def mailbox_content(d: Path, name: str) -> list[tuple[bytes, set[str], datetime]]:
    async def read() -> list[tuple[bytes, set[str], datetime]]:
        db = Database.open(d / DB_NAME)
        try:
            store = SqlStore(db, ChangeNotifier())
            alice = await store.find_user("alice")
            assert alice is not None
            box = await store.get_mailbox(alice.id, name)
            assert box is not None
            metas = await store.list_messages(box.id)
            bodies = await store.fetch_bodies(box.id, [m.uid for m in metas])
            return [(bodies[m.uid], set(m.flags) - {"\\Recent"}, m.internaldate)
                    for m in metas]
        finally:
            db.close()
    return asyncio.run(read())


def test_mbox_import_then_export_round_trip(node: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.mbox").write_bytes(MBOX)
    assert main(["--data-dir", str(node), "import", "alice", str(tmp_path / "in.mbox"),
                 "--mailbox", "Old"]) == 0
    out, err = capsys.readouterr()
    assert "Imported 3 message(s)" in out and "skipped 1 larger" in out
    assert "messages: 4/4" in err  # progress
    assert mailbox_content(node, "Old") == EXPECTED

    assert main(["--data-dir", str(node), "export", "alice", "Old",
                 str(tmp_path / "out.mbox")]) == 0
    exported = (tmp_path / "out.mbox").read_bytes()
    assert (tmp_path / "out.mbox").stat().st_mode & 0o777 == 0o600
    assert b"\n>From here on" in exported and b"\n>>From a line" in exported
    assert exported.count(b"\nFrom ") + exported.startswith(b"From ") == 3
    assert main(["--data-dir", str(node), "import", "alice", str(tmp_path / "out.mbox"),
                 "--mailbox", "Again"]) == 0
    assert mailbox_content(node, "Again") == EXPECTED
    # An existing file is not overwritten.
    assert main(["--data-dir", str(node), "export", "alice", "Old",
                 str(tmp_path / "out.mbox")]) == 1
    assert "exists" in capsys.readouterr().err


def test_maildir_import_maps_info_flags(node: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    files = {"new/1700000000.M1P1.host": (b"Subject: new one\n\nhello\n", set()),
             "cur/1700000001.M2P1.host:2,FRS": (
                 b"Subject: =?utf-8?q?r=C3=A9ponse?=\n\n\xc3\xa9t\xc3\xa9\n",
                 {"\\Flagged", "\\Answered", "\\Seen"}),
             "cur/1700000002.M3P1.host:2,DT": (b"Subject: draft\n\nFrom me\n",
                                               {"\\Draft", "\\Deleted"})}
    for i, (name, (body, _)) in enumerate(files.items()):
        (md / name).write_bytes(body)
        os.utime(md / name, (1_700_000_000 + i, 1_700_000_000 + i))
    (md / "tmp" / "partial").write_bytes(b"Subject: still being written\n\n")
    assert main(["--data-dir", str(node), "import", "alice", str(md)]) == 0
    got = {body: (flags, when) for body, flags, when in mailbox_content(node, "INBOX")}
    assert len(got) == 3
    for i, (body, flags) in enumerate(files.values()):
        assert got[crlf(body)] == (flags, datetime.fromtimestamp(1_700_000_000 + i, UTC))

    out = tmp_path / "exported"
    out.mkdir()
    assert main(["--data-dir", str(node), "export", "alice", "INBOX", str(out)]) == 0
    names = sorted(p.name.rpartition(":2,")[2] for p in (out / "cur").iterdir())
    assert names == ["", "DT", "FRS"]
    assert main(["--data-dir", str(node), "import", "alice", str(out), "--mailbox",
                 "Back"]) == 0
    assert sorted(mailbox_content(node, "Back")) == sorted(mailbox_content(node, "INBOX"))


def test_import_errors_are_one_line(node: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "in.mbox").write_bytes(MBOX)
    (node / "status.json").write_text(json.dumps({"pid": os.getpid()}))  # "running"
    assert main(["--data-dir", str(node), "import", "alice", str(tmp_path / "in.mbox")]) == 1
    assert "the node is running" in capsys.readouterr().err
    (node / "status.json").unlink()
    for argv, words in (
            (["import", "alice", str(tmp_path / "missing")], "does not exist"),
            (["import", "alice", str(tmp_path / "plain")], "not a Maildir"),
            (["import", "nobody", str(tmp_path / "in.mbox")], "no user"),
            (["export", "alice", "Nope", str(tmp_path / "x.mbox")], "no mailbox")):
        assert main(["--data-dir", str(node), *argv]) == 1
        err = capsys.readouterr().err
        assert words in err and len(err.splitlines()) == 1, err


def test_status_headers_give_flags() -> None:
    assert mbox_flags(b"Status: RO\nX-Status: ADFT\n\nStatus: R\n") == {
        "\\Seen", "\\Answered", "\\Deleted", "\\Flagged", "\\Draft"}
    assert mbox_flags(b"Subject: x\n\nStatus: R\n") == frozenset()  # only in the header


def test_maildir_import_files_messages_in_batches(node: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction per group of messages (not per message), in order, skipping the
    ones over the size limit between groups."""
    from mailnode.ops import mailfiles
    monkeypatch.setattr(mailfiles, "IMPORT_BATCH", 3)
    groups: list[int] = []
    real = SqlStore.append_many

    async def counting(self: SqlStore, mailbox_id: int, items: list[object]) -> object:
        groups.append(len(items))
        return await real(self, mailbox_id, items)  # type: ignore[arg-type]
    monkeypatch.setattr(SqlStore, "append_many", counting)
    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    for i in range(8):
        body = b"Subject: %d\n\n" % i + (b"x" * LIMIT if i == 4 else b"hello\n")
        (md / "cur" / f"17000000{i:02d}.M{i}P1.host:2,S").write_bytes(body)
    assert main(["--data-dir", str(node), "import", "alice", str(md)]) == 0
    assert groups == [3, 3, 1]
    subjects = [body.split(b"\r\n")[0] for body, _, _ in mailbox_content(node, "INBOX")]
    assert subjects == [b"Subject: %d" % i for i in range(8) if i != 4]
