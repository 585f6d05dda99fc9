"""The interactive quickstart in a real terminal (a pseudo-terminal): the confirmation it asks
for, the password it shows once, and that nothing pushes that password off the screen while
the new node has no peers. Skipped where there are no pseudo-terminals."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailnode.config import DB_NAME
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore
from tests.e2e.nodes import free_port

pty = pytest.importorskip("pty")


@dataclass
class Terminal:
    """A process on a pseudo-terminal (its controlling one: Ctrl-C works as typed)."""

    pid: int
    fd: int
    screen: str = ""
    status: int | None = field(default=None)
    seen: int = 0  # where the next expect starts: past the last match

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Read until ``pattern`` appears in new output; fail with the output if it does not."""
        deadline = time.monotonic() + timeout
        while (found := re.compile(pattern).search(self.screen, self.seen)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{pattern!r} not seen; the terminal shows:\n{self.screen}")
        self.seen = found.end()
        return found

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the process closed the terminal
            return False
        self.screen += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the process did not end; it shows:\n{self.screen}")
            self._read(0.1)
        while self._read(0):  # what it printed last
            pass
        return self.status


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for t in started:
        if t.status is None:
            os.kill(t.pid, signal.SIGKILL)
            os.waitpid(t.pid, 0)
        os.close(t.fd)


def quickstart(started: list[Terminal], home: Path, *options: str) -> Terminal:
    env = {k: v for k, v in os.environ.items() if k != "MAILNODE_PASSWORD"}
    env |= {"MAILNODE_HOME": str(home), "TERM": "dumb", "COLUMNS": "100"}
    argv = [sys.executable, "-m", "mailnode", "quickstart", "--smtp-port", str(free_port()),
            "--imap-port", str(free_port()), "--p2p-port", str(free_port()),
            "--smtps-port", str(free_port()), "--imaps-port", str(free_port()), *options]
    pid, fd = pty.fork()
    if pid == 0:  # the child: nothing but exec
        os.execve(sys.executable, argv, env)
    started.append(Terminal(pid, fd))
    return started[-1]


def test_quickstart_beyond_loopback_asks_and_a_no_leaves_nothing(
        tmp_path: Path, terminal: list[Terminal]) -> None:
    t = quickstart(terminal, tmp_path / "home", "--host", "0.0.0.0")
    t.expect(r"STARTTLS.*Listen there\? \[y/N\] ")
    t.type("n\r")
    assert t.wait() == 1
    assert "mailnode: nothing was changed" in t.screen and "Traceback" not in t.screen
    assert not (tmp_path / "home").exists()


def test_quickstart_keeps_the_password_on_screen_and_stops_on_ctrl_c(
        tmp_path: Path, terminal: list[Terminal]) -> None:
    home = tmp_path / "home"
    t = quickstart(terminal, home, "--host", "0.0.0.0", "--p2p-host", "127.0.0.1")
    t.expect(r"Listen there\? \[y/N\] ")
    t.type("y\r")
    password_line = t.expect(r"Password for ([a-z0-9._-]+): (\S+)   <- random, shown once")
    name, password = password_line.group(1), password_line.group(2)
    t.expect(r"mailnode ready: ")
    assert "mailnode invite" in t.screen and "friend add TOKEN" in t.screen
    # The node's first periodic check: from here on an isolated node says nothing more.
    t.expect(r"no DHT peers known")
    after = t.screen[t.screen.index(password_line.group(0)):].splitlines()
    assert "close peers" not in t.screen
    assert len(after) < 24, after  # the password is still on a 24-line terminal
    t.type("\x03")  # Ctrl-C, as typed
    assert t.wait() == 0 and "mailnode stopped" in t.screen

    async def login() -> bool:
        db = Database.open(home / DB_NAME)
        try:
            return await SqlStore(db, ChangeNotifier()).authenticate(name, password) is not None
        finally:
            db.close()
    assert asyncio.run(login())  # the password shown is the one that works


def test_user_add_in_a_terminal_asks_again_after_a_weak_password(
        tmp_path: Path, terminal: list[Terminal]) -> None:
    from mailnode.cli import main

    home = tmp_path / "home"
    assert main(["init", "--data-dir", str(home)]) == 0
    env = {k: v for k, v in os.environ.items() if k != "MAILNODE_PASSWORD"}
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "mailnode", "user", "add", "dora",
                                   "--data-dir", str(home)], env)
    t = Terminal(pid, fd)
    terminal.append(t)
    t.expect(r"Password for dora: ")
    t.type("password\r")
    t.expect(r"too easy to guess.*Try another\.\n")
    t.expect(r"Password for dora: ")
    t.type("lantern quietly folds maps\r")
    t.expect(r"Repeat password: ")
    t.type("lantern quietly folds maps\r")
    assert t.wait() == 0 and "Created user dora" in t.screen
    assert "lantern" not in t.screen  # never echoed
