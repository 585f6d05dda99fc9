"""Friends' nodes as real processes through the CLI: `invite` on one, `friend add` on the
other, then mail for a node that is off waits at its friend and arrives when it is back.

alice's node A is the relay; bob's node B goes away; carol's node C sends.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailnode.runstate import read_status
from tests.e2e.nodes import NodeProcess, cli, wait_until
from tests.e2e.test_three_nodes import FAST, compose, inbox_bodies, settled

pytestmark = pytest.mark.xdist_group("e2e")


@dataclass
class Friends:
    a: NodeProcess
    b: NodeProcess
    c: NodeProcess
    bob: str
    carol: str


@pytest.fixture
def friends(tmp_path: Path) -> Iterator[Friends]:
    a = NodeProcess.init(tmp_path / "a", [], **FAST)
    b = NodeProcess.init(tmp_path / "b", [a.p2p_port], **FAST)
    c = NodeProcess.init(tmp_path / "c", [a.p2p_port], **FAST)
    bob = cli(b.data_dir, "user", "add", "bob", password="bob-pass").splitlines()[-1]
    carol = cli(c.data_dir, "user", "add", "carol", password="carol-pass").splitlines()[-1]
    started = []
    try:
        for node in (a, b, c):
            node.start()
            started.append(node)
        yield Friends(a, b, c, bob, carol)
    finally:
        for node in started:
            node.stop()


def logged_after(node: NodeProcess, first: str, then: str) -> bool:
    lines = list(node.log)
    start = next((i for i, line in enumerate(lines) if first in line), None)
    return start is not None and any(then in line for line in lines[start:])


def friend_lines(node: NodeProcess) -> list[str]:
    return cli(node.data_dir, "friend", "list").splitlines()


def test_invite_then_mail_waits_at_the_friend_while_the_node_is_off(friends: Friends) -> None:
    a, b, c = friends.a, friends.b, friends.c
    wait_until(lambda: settled(b, peers=1, published=1) and settled(c, peers=1, published=1),
               60, "the nodes to join and publish")
    token = cli(a.data_dir, "invite", "--hold-mb", "50").splitlines()[-1]
    assert token.startswith("mn1:")
    out = cli(b.data_dir, "friend", "add", token)
    assert out.startswith("Friends with"), out
    [line] = friend_lines(a)
    assert re.search(r"\s(online|friend)\s", line) and "50 MB" in line, line
    [line] = friend_lines(b)
    assert "pending" not in line, line
    # The token is single-use.
    with pytest.raises(RuntimeError, match="used"):
        cli(c.data_dir, "friend", "add", token)
    # bob's record now names A as a relay (B's node notices the friend and republishes).
    wait_until(lambda: logged_after(b, "publishing 1 relay", "published record of user=bob"),
               30, "bob's record naming the relay to reach a peer")

    b.stop()  # bob's machine is off
    data = compose(friends.carol, friends.bob, "sent while you were away")
    with smtplib.SMTP("127.0.0.1", c.smtp_port, timeout=30) as smtp:
        smtp.login("carol", "carol-pass")
        smtp.sendmail(friends.carol, [friends.bob], data)
    wait_until(lambda: "queue is empty" in cli(c.data_dir, "queue"), 30,
               "carol's node to hand the message to bob's relay")
    wait_until(lambda: "hold 1 message(s)" in friend_lines(a)[0], 10, "A to hold it")

    b.start()  # back: B pulls from its relay at start
    wait_until(lambda: len(inbox_bodies(b, "bob", "bob-pass")) == 1, 30,
               "the held message to reach bob")
    [body] = inbox_bodies(b, "bob", "bob-pass")
    assert b"sent while you were away" in body
    wait_until(lambda: "hold 0 message(s)" in friend_lines(a)[0], 10,
               "the relay to drop the handed-over copy")


def test_friend_add_while_the_inviting_node_is_stopped(tmp_path: Path) -> None:
    """Both commands work on a stopped node; the running one completes the friendship as
    soon as the other is up, and `status` names the friend as a relay."""
    a = NodeProcess.init(tmp_path / "a", [], **FAST, node_name="alice-pi")
    b = NodeProcess.init(tmp_path / "b", [a.p2p_port], **FAST, node_name="bob-laptop")
    token = cli(a.data_dir, "invite").splitlines()[-1]  # A has never run
    b.start()
    try:
        out = cli(b.data_dir, "friend", "add", token, "--hold-mb", "10")
        assert "did not answer" in out, out
        assert " pending " in cli(b.data_dir, "friend", "list")
        a.start()
        wait_until(lambda: " pending " not in cli(b.data_dir, "friend", "list"), 30,
                   "bob's node to redeem the invite once alice's is up")
        [line] = cli(a.data_dir, "friend", "list").splitlines()
        assert line.startswith("bob-laptop ") and "10 MB" in line, line
        assert "relays for your users: alice-pi" in cli(b.data_dir, "status")
        # Removing is local: bob's records stop naming alice's node as a relay.
        assert "Removed alice-pi" in cli(b.data_dir, "friend", "remove", "alice-pi")
        assert cli(b.data_dir, "friend", "list").startswith("no friends")
        with pytest.raises(RuntimeError, match="no friend named"):
            cli(b.data_dir, "friend", "remove", "alice-pi")
    finally:
        b.stop()
        a.stop()


def test_bad_tokens_get_one_line_errors(tmp_path: Path) -> None:
    a = NodeProcess.init(tmp_path / "a", [])
    token = cli(a.data_dir, "invite").splitlines()[-1]
    with pytest.raises(RuntimeError, match="own") as own:
        cli(a.data_dir, "friend", "add", token)
    assert "Traceback" not in str(own.value)
    with pytest.raises(RuntimeError, match="damaged"):
        cli(a.data_dir, "friend", "add", token[:-6])


def test_doctor_asks_a_friend_to_dial_back(tmp_path: Path) -> None:
    import subprocess
    import sys

    a = NodeProcess.init(tmp_path / "a", [], **FAST, node_name="anna-pi")
    b = NodeProcess.init(tmp_path / "b", [a.p2p_port], **FAST, node_name="bob-laptop")
    a.start()
    b.start()
    try:
        wait_until(lambda: settled(b, peers=1, published=0)
                   and bool((read_status(b.data_dir) or {}).get("endpoints")), 60,
                   "b to join and publish its endpoint")
        token = cli(a.data_dir, "invite").splitlines()[-1]
        assert cli(b.data_dir, "friend", "add", token).startswith("Friends with")
        done = subprocess.run([sys.executable, "-m", "mailnode", "--data-dir", str(b.data_dir),
                               "doctor"], capture_output=True, text=True, timeout=60)
        [line] = [x for x in done.stdout.splitlines() if "endpoint" in x]
        assert line.startswith("[OK") and "anna-pi's node dialled" in line, done.stdout
    finally:
        b.stop()
        a.stop()
