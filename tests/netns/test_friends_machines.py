"""Three machines on one LAN (network namespaces and a bridge), driven through the CLI:
A and B become friends with `invite` / `friend add`; carol on C writes to bob on B.

- B is off, then C is off too: A holds the sealed message and B gets it when it is back.
- B takes no connections at all (accept_inbound = false): nobody dials it, it pulls from A.
- `kill -9` of any of the three, again and again, during a stream of messages: every message
  C acknowledged with 250 reaches bob exactly once.

Run with `-s` to see the transcript of the commands and their output.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailnode.runstate import read_status
from tests.e2e.nodes import wait_until
from tests.netns.machines import CHECK_INBOX, PASSWORD, SEND, Machine, bridged, needs_namespaces

pytestmark = [pytest.mark.xdist_group("netns"), needs_namespaces]

QUICK = {"retry_initial = 60.0": "retry_initial = 1.0", "retry_max = 3600.0": "retry_max = 2.0",
         "max_messages_per_minute = 60": "max_messages_per_minute = 6000",
         "max_inbound_per_minute = 120": "max_inbound_per_minute = 6000",
         "transfer_timeout = 60.0": "transfer_timeout = 15.0"}


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[tuple[Machine, Machine, Machine]]:
    with bridged(tmp_path, 3, "10.89.0") as (a, b, c):
        yield a, b, c


def say(machine: Machine, *args: str) -> str:
    """Run a CLI command on a machine and print it as a transcript line."""
    out = machine.cli(*args)
    shown = " ".join(a if len(a) < 60 else a[:40] + "..." for a in args)
    print(f"[{machine.address}]$ mailnode {shown}\n" + textwrap.indent(out.rstrip(), "    "))
    return out


def setup(a: Machine, b: Machine, c: Machine, b_settings: dict[str, str] | None = None,
          ) -> tuple[str, str]:
    """Three nodes as the README says (B and C join through A); bob on B, alice on C."""
    a.cli("init", "--p2p-host", "0.0.0.0")
    for m in (b, c):
        m.cli("init", "--p2p-host", "0.0.0.0", "--bootstrap", f"{a.address}:2700")
    for m, name, extra in ((a, "anna-pi", {}), (b, "bob-laptop", b_settings or {}),
                           (c, "carol-pc", {})):
        path = m.data_dir / "mailnode.toml"
        config = path.read_text()
        for old, new in {**QUICK, 'node_name = ""': f'node_name = "{name}"', **extra}.items():
            assert old in config, old
            config = config.replace(old, new)
        path.write_text(config)
    bob = _add_user(b, "bob")
    alice = _add_user(c, "alice")
    for m in (a, b, c):
        m.start()

    def joined(m: Machine) -> bool:
        status = read_status(m.data_dir)
        return bool(status and status["dht_peers"] >= 2)
    wait_until(lambda: all(joined(m) for m in (a, b, c)), 60, "the three machines to join")
    return alice, bob


def _add_user(m: Machine, name: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", m.ns, sys.executable, "-m", "mailnode",
                           "--data-dir", str(m.data_dir), "user", "add", name],
                          capture_output=True, text=True, timeout=60,
                          env={"MAILNODE_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def befriend(a: Machine, b: Machine) -> None:
    token = say(a, "invite", "--hold-mb", "100", "--hold-days", "7").splitlines()[-1]
    out = say(b, "friend", "add", token)
    assert out.startswith("Friends with"), out
    assert "pending" not in say(a, "friend", "list")
    say(b, "friend", "list")
    # B republishes bob's record naming A as a relay; wait until it reached a peer.
    wait_until(lambda: logged_after(b, "publishing 1 relay", "published record of user=bob"),
               30, "bob's record naming the relay")


def logged_after(m: Machine, first: str, then: str) -> bool:
    lines = list(m.log)
    start = next((i for i, line in enumerate(lines) if first in line), None)
    return start is not None and any(then in line for line in lines[start:])


def test_friend_holds_mail_while_recipient_and_then_sender_are_off(
        lan: tuple[Machine, Machine, Machine]) -> None:
    a, b, c = lan
    alice, bob = setup(a, b, c)
    befriend(a, b)
    b.stop()
    print(f"[{b.address}] stopped")
    c.run(sys.executable, "-c", SEND, "2587", alice, bob, PASSWORD)  # 250
    wait_until(lambda: "queue is empty" in c.cli("queue"), 30,
               "C to hand the message to bob's relay")
    say(c, "queue")
    assert "hold 1 message(s)" in say(a, "friend", "list")
    c.stop()
    print(f"[{c.address}] stopped")
    b.start()
    print(f"[{b.address}] started")
    got = b.run(sys.executable, "-c", CHECK_INBOX, "2143", "60", PASSWORD, timeout=90)
    assert "Subject: across machines" in got and f"header.from={alice}" in got
    wait_until(lambda: "hold 0 message(s)" in a.cli("friend", "list"), 30,
               "A to drop the handed-over copy")
    say(a, "friend", "list")


def test_a_node_nobody_can_dial_pulls_from_its_relay(
        lan: tuple[Machine, Machine, Machine]) -> None:
    a, b, c = lan
    alice, bob = setup(a, b, c, {"accept_inbound = true": "accept_inbound = false"})
    befriend(a, b)
    c.run(sys.executable, "-c", SEND, "2587", alice, bob, PASSWORD)
    got = b.run(sys.executable, "-c", CHECK_INBOX, "2143", "60", PASSWORD, timeout=90)
    assert "Subject: across machines" in got
    # Nobody dialled B: every transfer connection it served came from nowhere.
    assert not any("transfer peer" in line for line in b.log), \
        [line for line in b.log if "transfer peer" in line]
    assert any(f"message(s) held by {a.cli('friend', 'list').split()[0]}" in line
               or "pulled 1 message" in line for line in b.log)


STREAM = textwrap.dedent("""
    import smtplib, sys
    port, frm, to, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    for attempt, _ in enumerate(sys.stdin):  # one attempt per line the test releases
        subject = f"stream {attempt}"
        body = f"From: <{frm}>\\r\\nTo: <{to}>\\r\\nSubject: {subject}\\r\\n\\r\\nn\\r\\n"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.login("alice", password)
                smtp.sendmail(frm, [to], body)
        except (OSError, smtplib.SMTPException) as exc:
            print("failed", subject, type(exc).__name__, flush=True)
            continue
        print("250", subject, flush=True)
""")


SUBJECTS = textwrap.dedent("""
    import imaplib, sys
    with imaplib.IMAP4("127.0.0.1", int(sys.argv[1])) as imap:
        imap.login("bob", sys.argv[2])
        typ, data = imap.select("INBOX", readonly=True)
        if int(data[0]):
            typ, items = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            for item in items:
                if isinstance(item, tuple):
                    print(item[1].decode().strip().removeprefix("Subject: "))
""")


def test_kill_9_cycles_deliver_every_acknowledged_message_exactly_once(
        lan: tuple[Machine, Machine, Machine]) -> None:
    a, b, c = lan
    alice, bob = setup(a, b, c)
    befriend(a, b)
    cycles, burst = 15, 7
    stream = subprocess.Popen(
        ["ip", "netns", "exec", c.ns, sys.executable, "-c", STREAM, "2587", alice, bob,
         PASSWORD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert stream.stdin is not None
    accepted: list[str] = []
    failed: list[str] = []

    def read() -> None:
        assert stream.stdout is not None
        for line in stream.stdout:
            verdict, _, rest = line.strip().partition(" ")
            (accepted if verdict == "250" else failed).append(" ".join(rest.split(" ")[:2]))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    rng = random.Random(6)
    victims = [c, b, a] * (cycles // 3)
    rng.shuffle(victims)
    released = 0
    try:
        for victim in victims:
            # A burst of messages, and the kill lands while they are being submitted,
            # queued, handed to the relay or filed: wherever they are.
            stream.stdin.write("go\n" * burst)
            stream.stdin.flush()
            released += burst
            goal = len(accepted) + len(failed) + rng.randint(1, 4)
            wait_until(lambda g=goal: len(accepted) + len(failed) >= g, 60,
                       "the burst to get going")
            victim.kill()
            print(f"kill -9 {victim.address} after {len(accepted)} accepted")
            victim.start()
        stream.stdin.close()
        assert stream.wait(timeout=300) == 0
    finally:
        if stream.poll() is None:
            stream.kill()
    reader.join(10)
    assert len(accepted) + len(failed) == released
    assert len(accepted) >= released // 2

    def subjects() -> list[str]:
        return b.run(sys.executable, "-c", SUBJECTS, "2143", PASSWORD).splitlines()
    wait_until(lambda: set(accepted) <= set(subjects()), 180,
               "every acknowledged message to reach bob", interval=1.0)
    got = subjects()
    duplicates = {s for s in got if got.count(s) > 1}
    assert not duplicates, duplicates
    # Unacknowledged attempts (the sender died mid-DATA) may or may not arrive, never twice.
    assert set(got) <= set(accepted) | set(failed)
    print(f"{cycles} kill -9 cycles, {len(accepted)} acknowledged messages, "
          f"{len(failed)} failed attempts, {len(got)} in bob's INBOX, no duplicates")
