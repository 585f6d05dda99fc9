"""Real mailnode processes started through the CLI, on loopback ports."""

from __future__ import annotations

import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from mailnode.config import CONFIG_NAME, load, render

READY = "mailnode ready:"


_handed_out: set[int] = set()


def _port_slice() -> range:
    """This test process's own share of the ports below the kernel's ephemeral range.

    A port taken from the ephemeral range (bind to port 0) can be handed by the kernel to
    any other socket, an outgoing connection included, before the node binds it; ports
    below that range are only ever taken by name, and each xdist worker names its own.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first, last = 10000, max(low, 10000 + 2048)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker) % workers if worker.isdigit() else 0
    width = (last - first) // workers
    return range(first + width * index, first + width * (index + 1))


def free_port() -> int:
    """A port free for both TCP and UDP (the DHT and the transfer listener share it)."""
    ports = [p for p in _port_slice() if p not in _handed_out]
    random.shuffle(ports)
    for port in ports[:200]:
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port")


def cli(data_dir: Path, *args: str, password: str | None = None, timeout: float = 60) -> str:
    env = dict(os.environ)
    if password is not None:  # for `user add`: test passwords are weak on purpose
        env["MAILNODE_PASSWORD"] = password
        args = (*args, "--allow-weak")
    done = subprocess.run([sys.executable, "-m", "mailnode", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"mailnode {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass
class NodeProcess:
    data_dir: Path
    smtp_port: int = 0
    imap_port: int = 0
    p2p_port: int = 0
    proc: subprocess.Popen[str] | None = None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    log: list[str] = field(default_factory=list)

    @classmethod
    def init(cls, data_dir: Path, bootstrap: list[int], **settings: object) -> NodeProcess:
        node = cls(data_dir, free_port(), free_port(), free_port())
        args = ["init", "--smtp-port", str(node.smtp_port), "--imap-port", str(node.imap_port),
                "--p2p-port", str(node.p2p_port), "--smtps-port", str(free_port()),
                "--imaps-port", str(free_port())]
        if bootstrap:
            args += ["--bootstrap", *(f"127.0.0.1:{p}" for p in bootstrap)]
        cli(data_dir, *args)
        path = data_dir / CONFIG_NAME
        path.write_text(render(replace(load(path), **settings)))  # type: ignore[arg-type]
        return node

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailnode", "--data-dir", str(self.data_dir), "run"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith(READY):
                return
        self.stop()
        raise RuntimeError(f"node in {self.data_dir} did not start:\n" + "".join(self.log))

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.append(line)
            self.lines.put(line)

    def stop(self) -> int:
        """SIGTERM and wait: a clean stop exits 0."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll a condition with a deadline (for state visible only from another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
