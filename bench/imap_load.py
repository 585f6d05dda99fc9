"""imaptest's load mode against a real mailnode node and against Debian's Dovecot, same run.

imaptest (Dovecot's own stress tester) drives N clients that log in, select, fetch, store,
expunge and append at random, and checks every reply against its model of the mailbox: its
"Error:" lines are protocol or consistency errors. ``checkpoint=N`` makes it stop every N seconds
and compare what all sessions see. Prints commands/s, error counts and the ratio to Dovecot,
plus the node's RSS: idle before the first run, and the peak of each run (the node is one
process: no children to add). Needs imaptest (built as tests/imap/test_imaptest.py does, with
the patch that lets ``checkpoint=`` run) and, for the baseline, dovecot-imapd.
Run: ``python -m bench.imap_load [--secs 15] [--checkpoint-clients 10,50]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.imap_commands import start_dovecot
from tests.e2e.nodes import NodeProcess, cli, free_port
from tests.imap.test_imaptest import find_or_build

USER, PASSWORD = "loaduser", "load-password"
MESSAGES = 200
_ERROR_TAG = re.compile(r"\d+\.\d+ ")
_CHECKPOINT_CLIENT = re.compile(r"client \d+")


@dataclass(frozen=True)
class Load:
    """One imaptest load run: commands done, the errors it reported, grouped by kind."""

    commands: int
    secs: float
    errors: Counter[str]
    crash: str = ""
    peak_rss_mb: float = 0.0
    checks: int = 0
    """Session views compared at checkpoints without a difference (imaptest's ChkP)."""

    @property
    def rate(self) -> float:
        return self.commands / self.secs


def write_mbox(path: Path) -> None:
    """The messages imaptest appends from: plain, small, all different."""
    with path.open("w") as out:
        for i in range(MESSAGES):
            out.write(f"From a{i}@example.org Mon Jan  1 10:00:00 2024\n"
                      f"From: A {i} <a{i}@example.org>\nTo: b@example.org\n"
                      f"Subject: message {i}\nMessage-ID: <{i}@bench>\n"
                      f"Date: Mon, 01 Jan 2024 10:{i % 60:02d}:00 +0000\n\n"
                      + "body line\n" * (5 + i % 40) + "\n")


def parse(stdout: str, stderr: str, secs: float, returncode: int = 0) -> Load:
    """Sum imaptest's final "Totals" row; group its "Error:" lines by their text."""
    if returncode < 0:  # imaptest itself died (its checkpoint code can assert)
        panic = next((line for line in stderr.splitlines() if "Panic" in line), "")
        return Load(0, secs, Counter(), f"imaptest died (signal {-returncode}) {panic[:120]}")
    totals = stdout.rsplit("Totals:", 1)[-1].splitlines()
    rows = [line for line in totals if line.strip() and re.fullmatch(r"[\s\d]+", line)]
    commands = sum(int(n) for n in rows[-1].split()) if rows else 0
    names = next((line.split() for line in totals if "ChkP" in line), [])
    counts = rows[-1].split() if rows else []
    checks = int(counts[names.index("ChkP")]) if "ChkP" in names and counts else 0
    errors: Counter[str] = Counter()
    for line in stderr.splitlines():
        if line.startswith("Error:"):
            text = line.split("]: ", 1)[-1].split(": * ", 1)[0]  # kind, not the reply
            text = _CHECKPOINT_CLIENT.sub("client N", _ERROR_TAG.sub("", text))
            errors[text[:100]] += 1
    return Load(commands, secs, errors, checks=checks)


def run_load(binary: Path, port: int, mbox: Path, clients: int, secs: int,
             checkpoint: int | None) -> Load:
    args = [str(binary), "host=127.0.0.1", f"port={port}", f"user={USER}", f"pass={PASSWORD}",
            f"mbox={mbox}", f"clients={clients}", f"secs={secs}"]
    if checkpoint:
        args.append(f"checkpoint={checkpoint}")
    done = subprocess.run(args, capture_output=True, text=True, errors="replace",
                          timeout=secs + 120, stdin=subprocess.DEVNULL)
    return parse(done.stdout, done.stderr, secs, done.returncode)


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM: the peak resident set since start or the last reset_peak; VmRSS: now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: ``5`` to clear_refs), so that each
    run's peak is its own."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


Scenario = tuple[int, int | None]


def against_mailnode(binary: Path, mbox: Path, tmp: Path, scenarios: list[Scenario],
                     secs: int) -> tuple[list[Load], float, float]:
    node = NodeProcess.init(tmp, [], max_messages_per_minute=1_000_000,
                            max_connections_per_source=1000, max_sessions_per_user=1000,
                            failed_login_delay=0.0)
    cli(tmp, "user", "add", USER, password=PASSWORD)
    node.start()
    try:
        assert node.proc is not None
        pid = node.proc.pid
        time.sleep(1.0)  # settled: what a node holds before any client came
        idle = rss_mb(pid, "VmRSS")
        loads = []
        for clients, checkpoint in scenarios:
            reset_peak(pid)
            load = run_load(binary, node.imap_port, mbox, clients, secs, checkpoint)
            loads.append(dataclasses.replace(load, peak_rss_mb=rss_mb(pid)))
        return loads, idle, rss_mb(pid, "VmRSS")
    finally:
        node.stop()


def against_dovecot(binary: Path, mbox: Path, tmp: Path, scenarios: list[Scenario],
                    secs: int) -> list[Load] | None:
    port = free_port()
    proc = start_dovecot(tmp, port, USER, PASSWORD, extra="""
protocol imap {
  mail_max_userip_connections = 1000
}
service imap {
  process_limit = 1000
}
""")
    if proc is None:
        return None
    try:
        wait_listening(port)
        return [run_load(binary, port, mbox, c, secs, cp) for c, cp in scenarios]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def describe(load: Load, checkpoint: int | None = None) -> str:
    if load.crash:
        return load.crash
    errors = sum(load.errors.values())
    text = f"{load.rate:7.0f} commands/s ({load.commands} in {load.secs:.0f} s), {errors} errors"
    if checkpoint:
        text += f", {load.checks} session views agreed at checkpoints"
    for kind, n in load.errors.most_common(3):
        text += f"\n      {n:5d} x {kind}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--secs", type=int, default=15, help="seconds per run")
    parser.add_argument("--checkpoint", type=int, default=5, metavar="SECS",
                        help="imaptest's checkpoint= interval for the checkpoint runs")
    parser.add_argument("--checkpoint-clients", default="50", metavar="N[,N...]",
                        help="client counts to run with checkpoint= (after 10 and 50 without)")
    args = parser.parse_args()
    secs = args.secs
    try:
        with_checkpoint = [int(n) for n in args.checkpoint_clients.split(",") if n.strip()]
    except ValueError:
        parser.error("--checkpoint-clients: comma-separated client counts")
    binary = find_or_build()
    if binary is None:
        raise SystemExit("imaptest not available: run ../shared/imaptest/build.sh DIR "
                         "and set IMAPTEST=DIR/bin/imaptest")
    scenarios: list[Scenario] = [(10, None), (50, None)]
    scenarios += [(n, args.checkpoint) for n in with_checkpoint]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        mbox = Path(a) / "load.mbox"
        write_mbox(mbox)
        base = against_dovecot(binary, mbox, Path(b), scenarios, secs)
        (Path(a) / "node").mkdir()
        ours, idle, after = against_mailnode(binary, mbox, Path(a) / "node", scenarios, secs)
    for i, (clients, checkpoint) in enumerate(scenarios):
        label = f"clients={clients}" + (f" checkpoint={checkpoint}" if checkpoint else "")
        print(f"imaptest {label}, {secs} s, {MESSAGES}-message mbox")
        if base is None:
            print("  dovecot : not installed (apt-get install dovecot-imapd): no baseline")
        else:
            print(f"  dovecot : {describe(base[i], checkpoint)}")
        print(f"  mailnode: {describe(ours[i], checkpoint)}, "
              f"peak RSS {ours[i].peak_rss_mb:.0f} MB")
        if base is not None and base[i].rate and ours[i].rate:
            print(f"  ratio   : {ours[i].rate / base[i].rate:.2f}x dovecot's commands/s")
    print(f"mailnode node RSS: {idle:.0f} MB idle before the runs, {after:.0f} MB after them, "
          f"peak {max(load.peak_rss_mb for load in ours):.0f} MB")


if __name__ == "__main__":
    main()
