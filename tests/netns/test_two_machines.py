"""Two machines: nodes in separate network namespaces (each its own network stack, joined by
a veth pair), driven through the CLI with the documented `--p2p-host 0.0.0.0`.

Each namespace gets a Debian-style /etc/hosts that maps the host name to 127.0.1.1 (`ip netns
exec` mounts /etc/netns/NAME/hosts over /etc/hosts): the address nodes used to publish, which
made peers dial themselves. Skipped where namespaces cannot be made (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from mailnode.runstate import read_status
from tests.e2e.nodes import READY, cli, wait_until

pytestmark = [
    pytest.mark.xdist_group("netns"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="network namespaces need root and iproute2"),
]

PASSWORD = "correct-horse-battery"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Machine:
    ns: str
    address: str
    data_dir: Path
    proc: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 60) -> str:
        """A command inside this machine's network namespace."""
        done = subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise AssertionError(f"{argv[:3]} in {self.ns} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "mailnode", "--data-dir",
             str(self.data_dir), "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, stdin=subprocess.DEVNULL)
        ready = threading.Event()

        def pump(stream: IO[str]) -> None:  # keep reading, or the node blocks on its log
            for line in stream:
                self.log.append(line)
                if line.startswith(READY):
                    ready.set()
        assert self.proc.stdout is not None
        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        if not ready.wait(60):
            raise AssertionError(f"node in {self.ns} did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _make_namespace(name: str) -> None:
    ip("netns", "add", name)
    hosts = Path("/etc/netns") / name
    hosts.mkdir(parents=True, exist_ok=True)
    # What Debian and Ubuntu write: the machine's own name on 127.0.1.1.
    (hosts / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {socket.gethostname()}\n")
    ip("-n", name, "link", "set", "lo", "up")


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[Machine, Machine]]:
    tag = f"{os.getpid() % 100000}"
    names = (f"mn{tag}a", f"mn{tag}b")
    try:
        for name in names:
            _make_namespace(name)
        ip("link", "add", f"v{tag}a", "type", "veth", "peer", "name", f"v{tag}b")
        for name, dev, address in ((names[0], f"v{tag}a", "10.87.0.1"),
                                   (names[1], f"v{tag}b", "10.87.0.2")):
            ip("link", "set", dev, "netns", name)
            ip("-n", name, "addr", "add", f"{address}/24", "dev", dev)
            ip("-n", name, "link", "set", dev, "up")
    except subprocess.CalledProcessError as exc:
        _remove(names)
        pytest.skip(f"cannot create network namespaces here: {exc.stderr!r}")
    a = Machine(names[0], "10.87.0.1", tmp_path / "a")
    b = Machine(names[1], "10.87.0.2", tmp_path / "b")
    try:
        yield a, b
    finally:
        for m in (b, a):
            m.stop()
        _remove(names)


def _remove(names: tuple[str, ...]) -> None:
    for name in names:  # deleting a namespace deletes the veth end inside it, and its peer
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


CHECK_INBOX = textwrap.dedent("""
    import imaplib, sys, time
    deadline = time.monotonic() + float(sys.argv[2])
    while True:
        with imaplib.IMAP4("127.0.0.1", int(sys.argv[1])) as imap:
            imap.login("bob", sys.argv[3])
            typ, data = imap.select("INBOX")
            if int(data[0]) >= 1:
                typ, msg = imap.fetch("1", "(BODY.PEEK[])")
                sys.stdout.write(msg[0][1].decode("utf-8", "replace"))
                break
        if time.monotonic() > deadline:
            sys.exit("no mail arrived")
        time.sleep(0.2)
""")

SEND = textwrap.dedent("""
    import smtplib, sys
    frm, to = sys.argv[2], sys.argv[3]
    body = f"From: <{frm}>\\r\\nTo: <{to}>\\r\\nSubject: across machines\\r\\n\\r\\nhello b\\r\\n"
    with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60) as smtp:
        smtp.login("alice", sys.argv[4])
        smtp.sendmail(frm, [to], body)
""")


def federate(a: Machine, b: Machine, settings: dict[str, str] | None = None,
             ) -> tuple[str, str]:
    """Both machines initialised as the README says (B bootstrapping from A), alice on A and
    bob on B, running and joined; returns their addresses."""
    cli(a.data_dir, "init", "--p2p-host", "0.0.0.0")
    cli(b.data_dir, "init", "--p2p-host", "0.0.0.0", "--bootstrap", f"{a.address}:2700")
    for m in (a, b):
        config = (m.data_dir / "mailnode.toml").read_text()
        for old, new in (settings or {}).items():
            config = config.replace(old, new)
        (m.data_dir / "mailnode.toml").write_text(config)
    alice = cli(a.data_dir, "user", "add", "alice", password=PASSWORD).splitlines()[-1]
    bob = cli(b.data_dir, "user", "add", "bob", password=PASSWORD).splitlines()[-1]
    a.start()
    b.start()

    def settled(m: Machine) -> bool:
        status = read_status(m.data_dir)
        return bool(status and status["dht_peers"] >= 1 and status["records_published"])
    wait_until(lambda: settled(a) and settled(b), 60, "the two machines to join")
    return alice, bob


def test_two_machines_federate_with_defaults(machines: tuple[Machine, Machine]) -> None:
    a, b = machines
    alice, bob = federate(a, b)
    # Each publishes the address the other reaches it at: not 127.0.1.1, not 0.0.0.0.
    for m in (a, b):
        status = read_status(m.data_dir)
        assert status is not None
        assert status["endpoints"] == [[m.address, 2700]], json.dumps(status)
    shown = cli(a.data_dir, "status")
    assert f"{a.address}:2700" in shown and "WARNING" not in shown
    a.run(sys.executable, "-c", SEND, "2587", alice, bob, PASSWORD)
    got = b.run(sys.executable, "-c", CHECK_INBOX, "2143", "60", PASSWORD, timeout=90)
    assert "Subject: across machines" in got and "hello b" in got
    assert f"header.from={alice}" in got


def test_mail_to_a_machine_that_is_off_waits_and_arrives(
        machines: tuple[Machine, Machine]) -> None:
    """B is off when alice writes: the message is accepted (250) and queued on A, and
    reaches bob once B is back."""
    a, b = machines
    # Retry every second, so the test does not wait out a real backoff.
    alice, bob = federate(a, b, {"retry_initial = 60.0": "retry_initial = 1.0",
                                 "retry_max = 3600.0": "retry_max = 2.0"})
    b.stop()
    a.run(sys.executable, "-c", SEND, "2587", alice, bob, PASSWORD)  # 250 while B is off
    queued = cli(a.data_dir, "queue")
    assert bob in queued, queued
    b.start()
    got = b.run(sys.executable, "-c", CHECK_INBOX, "2143", "60", PASSWORD, timeout=90)
    assert "Subject: across machines" in got
    wait_until(lambda: "queue is empty" in cli(a.data_dir, "queue"), 30, "A's queue to empty")
