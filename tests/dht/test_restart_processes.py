"""Several DHT nodes, each in its own process on loopback: a node restarted while its bootstrap
node is gone (killed without warning) rejoins through the peers it saved and still finds every
recipient's record."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from crypto.keys import Identity
from tests.e2e.nodes import free_port

NODES = 6  # the bootstrap node and five others
ANSWER_TIMEOUT = 30.0


@dataclass
class Proc:
    seed: bytes
    port: int
    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # the process exited

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._line()

    def _line(self) -> str:
        try:
            answer = self.lines.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"node on port {self.port} did not answer") from None
        if not answer:
            raise AssertionError(f"node on port {self.port} exited: {self.proc.poll()}")
        return answer.strip()

    def quit(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            assert self.proc.wait(timeout=ANSWER_TIMEOUT) == 0


class Procs:
    def __init__(self) -> None:
        self.started: list[Proc] = []

    def start(self, seed: bytes, port: int, bootstrap: list[tuple[str, int]]) -> Proc:
        args = [sys.executable, "-m", "tests.dht.procnode", seed.hex(), str(port)]
        args += [f"{host}:{p}" for host, p in bootstrap]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=dict(os.environ))
        node = Proc(seed, port, proc)
        self.started.append(node)
        assert node._line() == "ready"
        return node

    def close(self) -> None:
        for node in self.started:
            if node.proc.poll() is None:
                node.proc.kill()
            node.proc.wait()
            if node.proc.stdin is not None:
                node.proc.stdin.close()


@pytest.fixture
def procs() -> Iterator[Procs]:
    started = Procs()
    try:
        yield started
    finally:
        started.close()


def test_a_restarted_node_finds_recipients_without_its_bootstrap_node(procs: Procs) -> None:
    boot = procs.start(os.urandom(32), free_port(), [])
    others = [procs.start(os.urandom(32), free_port(), [("127.0.0.1", boot.port)])
              for _ in range(NODES - 1)]
    users = [Identity(os.urandom(32)) for _ in others]
    for node, user in zip(others, users, strict=True):
        assert int(node.ask(f"publish {user.seed.hex()}").split()[1]) >= 1
    leaving = others[0]
    answer = leaving.ask("peers")
    assert answer.startswith("peers ")
    saved = [(host, port) for host, port in json.loads(answer.removeprefix("peers "))]
    assert ("127.0.0.1", boot.port) in saved and len(saved) >= 3
    leaving.quit()
    boot.proc.kill()  # the bootstrap node vanishes without a word
    boot.proc.wait()
    back = procs.start(leaving.seed, leaving.port, saved)  # same key, same port
    for node, user in zip(others, users, strict=True):
        assert back.ask(f"lookup {user.verify_key.hex()}") == f"found 1 127.0.0.1:{node.port}"
    # and the others still find the restarted node's user
    assert others[1].ask(f"lookup {users[0].verify_key.hex()}") == (
        f"found 1 127.0.0.1:{leaving.port}"
    )
    back.quit()
