"""The node's log: its file, format, prefix, rotation, no library noise, `mailnode logs`."""

from __future__ import annotations

import imaplib
import json
import logging
import queue
import smtplib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mailnode.config import Config, ConfigError, validate
from mailnode.logsetup import (
    BACKUPS,
    LOG_NAME,
    MAX_BYTES,
    JsonFormatter,
    file_handler,
    formatter,
    node_prefix,
)
from mailnode.ops.logtail import last_lines
from tests.e2e.nodes import NodeProcess, cli, free_port, wait_until

NOISE = ("Context impl", "Will assume", "login_data", "rpcudp", "ERROR")


def _record(message: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("mailnode.test", level, __file__, 1, message, args, None)


def test_a_running_node_writes_clean_json_lines_to_its_log_file(tmp_path: Path) -> None:
    # Bootstrapping from a peer that is offline: an ordinary situation, not an error.
    node = NodeProcess.init(tmp_path / "n", [free_port()], log_format="json",
                            node_name="pi-at-home")
    cli(node.data_dir, "user", "add", "alice", password="a-long-enough-password")
    node.start()
    log = node.data_dir / LOG_NAME
    try:
        with smtplib.SMTP("127.0.0.1", node.smtp_port) as smtp:
            smtp.login("alice", "a-long-enough-password")
        imap = imaplib.IMAP4("127.0.0.1", node.imap_port)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("alice", "wrong")
        imap = imaplib.IMAP4("127.0.0.1", node.imap_port)
        imap.login("alice", "a-long-enough-password")
        imap.append("INBOX", None, None, b"Subject: x\r\n\r\nx\r\n")
        imap.logout()
        with smtplib.SMTP("127.0.0.1", node.smtp_port) as smtp, \
                pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("alice\x1b[31m", "wrong")
        wait_until(lambda: "DHT bootstrap done" in log.read_text(), 30, "the bootstrap")
    finally:
        assert node.stop() == 0
    text = log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600
    entries = [json.loads(line) for line in text.splitlines()]
    assert {e["node"] for e in entries} == {"pi-at-home"}
    assert all(set(e) == {"time", "level", "logger", "node", "message"} for e in entries)
    messages = [e["message"] for e in entries]
    assert "auth ok: service=smtp source=127.0.0.1 user=alice" in messages
    assert 'auth failed: service=imap source=127.0.0.1 user="alice" ' \
           "reason=bad-credentials" in messages
    assert 'user=alice appended uid 1 to mailbox="INBOX" (17 bytes)' in messages  # names
    failed = [m for m in messages if m.startswith("auth failed: service=smtp")]
    assert failed and all('user="alice\\x1b[31m"' in m for m in failed)  # escaped
    assert "\x1b" not in text
    for noise in NOISE:
        assert noise not in text, noise
    # The terminal gets the same lines (besides the ready/stopped announcements).
    printed = [line for line in node.log if line.startswith("{")]
    assert [json.loads(line)["message"] for line in printed] == messages


def test_text_lines_carry_the_node_prefix_and_stay_escaped() -> None:
    line = formatter("text", "pi").format(_record("user=%s", "bob\r\nFAKE line"))
    assert " pi INFO mailnode.test: user=bob\\r\\nFAKE line" in line and "\n" not in line
    assert node_prefix("", "839398f861f47ae8") == "839398f8"
    assert node_prefix("pi-at-home", "839398f861f47ae8") == "pi-at-home"


def test_json_lines_parse_and_bound_their_values() -> None:
    fmt = JsonFormatter("n1")
    entry = json.loads(fmt.format(_record("peer said %s", "\x1b]0;x\x07" + "y" * 10_000)))
    assert entry["message"].startswith("peer said \\x1b]0;x\\x07y")
    assert len(entry["message"]) < 4100
    try:
        raise ValueError("bad\x1b")
    except ValueError:
        record = _record("boom", level=logging.ERROR)
        record.exc_info = sys.exc_info()
    [line] = fmt.format(record).splitlines()  # one line, traceback inside
    assert "ValueError: bad\\x1b" in json.loads(line)["exception"]
    assert validate(Config(log_format="json")).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        validate(Config(log_format="xml"))


def test_the_log_file_rotates_owner_only(tmp_path: Path) -> None:
    handler = file_handler(tmp_path)
    assert (handler.maxBytes, handler.backupCount) == (MAX_BYTES, BACKUPS)
    handler.maxBytes = 200
    handler.setFormatter(formatter("text", "n"))
    for i in range(40):
        handler.emit(_record("line %d", i))
    handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [LOG_NAME] + [f"{LOG_NAME}.{i}" for i in range(1, BACKUPS + 1)]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in tmp_path.iterdir())
    assert "line 39" in (tmp_path / LOG_NAME).read_text()


def test_last_lines_reads_only_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    assert last_lines(path, 3) == b"line 99997\nline 99998\nline 99999\n"
    path.write_bytes(b"a\nb\npartial")
    assert last_lines(path, 2) == b"b\npartial"
    assert last_lines(path, 10) == b"a\nb\npartial"
    assert last_lines(path, 0) == b""


def test_logs_prints_the_tail_then_follows_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / LOG_NAME
    log.write_text("".join(f"old {i}\n" for i in range(10)))
    done = subprocess.run([sys.executable, "-m", "mailnode", "--data-dir", str(tmp_path),
                           "logs", "--lines", "2", "--no-follow"], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout == "old 8\nold 9\n"
    proc = subprocess.Popen([sys.executable, "-m", "mailnode", "--data-dir", str(tmp_path),
                             "logs", "-n", "1"], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)
    threading.Thread(target=pump, daemon=True).start()
    try:
        assert lines.get(timeout=30) == "old 9\n"
        with log.open("a") as f:
            f.write("new 1\n")
        assert lines.get(timeout=30) == "new 1\n"
        log.rename(tmp_path / f"{LOG_NAME}.1")
        log.write_text("after rotation\n")
        assert lines.get(timeout=30) == "after rotation\n"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    missing = subprocess.run([sys.executable, "-m", "mailnode", "--data-dir",
                              str(tmp_path / "none"), "logs"], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "no log file" in missing.stderr
