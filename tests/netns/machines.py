"""Machines for multi-machine tests: nodes in separate network namespaces (each its own
network stack), driven through the CLI with the documented `--p2p-host 0.0.0.0`.

Each namespace gets a Debian-style /etc/hosts that maps the host name to 127.0.1.1 (`ip netns
exec` mounts /etc/netns/NAME/hosts over /etc/hosts): the address nodes used to publish, which
made peers dial themselves. Tests using these skip where namespaces cannot be made.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from mailnode.runstate import read_status
from tests.e2e.nodes import READY, cli, wait_until

needs_namespaces = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                      reason="network namespaces need root and iproute2")

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

    def cli(self, *args: str, timeout: float = 60) -> str:
        """``mailnode --data-dir DIR ARGS`` inside this machine (it may dial other nodes)."""
        return self.run(sys.executable, "-m", "mailnode", "--data-dir", str(self.data_dir),
                        *args, timeout=timeout)

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

    def kill(self) -> None:
        """``kill -9`` (``ip netns exec`` execs the node, so this is the node's pid)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def make_namespace(name: str) -> None:
    ip("netns", "add", name)
    hosts = Path("/etc/netns") / name
    hosts.mkdir(parents=True, exist_ok=True)
    # What Debian and Ubuntu write: the machine's own name on 127.0.1.1.
    (hosts / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {socket.gethostname()}\n")
    ip("-n", name, "link", "set", "lo", "up")


@contextmanager
def bridged(tmp_path: Path, count: int, subnet: str) -> Iterator[list[Machine]]:
    """``count`` machines on one LAN (``subnet``.1, .2, ...): a bridge in a switch namespace
    and a veth cable to each machine. Everything is removed afterwards."""
    tag = f"{os.getpid() % 100000}{subnet.split('.')[1]}"
    names = tuple(f"mn{tag}{chr(97 + i)}" for i in range(count))
    switch = f"mn{tag}s"
    try:
        ip("netns", "add", switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for i, name in enumerate(names):
            make_namespace(name)
            dev, port = f"v{tag}{i}", f"p{tag}{i}"
            ip("link", "add", dev, "type", "veth", "peer", "name", port)
            ip("link", "set", dev, "netns", name)
            ip("link", "set", port, "netns", switch)
            ip("-n", switch, "link", "set", port, "master", "br0")
            ip("-n", switch, "link", "set", port, "up")
            ip("-n", name, "addr", "add", f"{subnet}.{i + 1}/24", "dev", dev)
            ip("-n", name, "link", "set", dev, "up")
    except subprocess.CalledProcessError as exc:
        remove_namespaces((*names, switch))
        pytest.skip(f"cannot create network namespaces here: {exc.stderr!r}")
    machines = [Machine(name, f"{subnet}.{i + 1}", tmp_path / chr(97 + i))
                for i, name in enumerate(names)]
    try:
        yield machines
    finally:
        for m in reversed(machines):
            m.stop()
        remove_namespaces((*names, switch))


def remove_namespaces(names: tuple[str, ...]) -> None:
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
