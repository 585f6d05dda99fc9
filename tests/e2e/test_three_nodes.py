"""Three real nodes on loopback, driven through the CLI and stock Python clients.

A bootstrap node and nodes A and B form a DHT; alice (on A) writes to bob (on B) with smtplib,
bob reads with imaplib and is notified through aioimaplib's IDLE.
"""

from __future__ import annotations

import asyncio
import email.utils
import imaplib
import os
import signal
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aioimaplib
import pytest

from crypto.address import address_for, key_of
from crypto.keys import Identity
from mailnode.config import NODE_KEY_NAME
from mailnode.delivery.headers import authentication_results, authserv_id
from mailnode.keys import load_node_key
from mailnode.runstate import load_peers, read_status
from mailnode.transfer.frames import Challenge, FrameDecoder
from mailnode.transfer.frames import Error as FrameError
from tests.e2e.nodes import NodeProcess, cli, free_port, wait_until

# One worker runs the group; it may interleave other modules, which tears the module-scoped
# network down and up again, so each test stands on its own.
pytestmark = pytest.mark.xdist_group("e2e")

FAST = {"retry_initial": 0.5, "retry_max": 1.0, "failed_login_delay": 0.05,
        "transfer_timeout": 10.0}


@dataclass
class Network:
    boot: NodeProcess
    a: NodeProcess
    b: NodeProcess
    alice: str
    bob: str


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root: Path = tmp_path_factory.mktemp("net")
    boot = NodeProcess.init(root / "boot", [], **FAST)
    a = NodeProcess.init(root / "a", [boot.p2p_port], **FAST)
    b = NodeProcess.init(root / "b", [boot.p2p_port], **FAST)
    alice = cli(a.data_dir, "user", "add", "alice", password="alice-pass").splitlines()[-1]
    bob = cli(b.data_dir, "user", "add", "bob", password="bob-pass").splitlines()[-1]
    started: list[NodeProcess] = []
    try:
        for node in (boot, a, b):
            node.start()
            started.append(node)
        # "ready" means listening; the DHT joins and publishes beside that. Tests start from a
        # settled network: every node knows the other two, and each user's record is out.
        wait_until(lambda: all(settled(node, peers=2, published=1) for node in (a, b)), 60,
                   "the three nodes to join and publish")
        yield Network(boot, a, b, alice, bob)
    finally:
        codes = [node.stop() for node in reversed(started)]
    assert codes == [0] * len(started), "a node did not stop cleanly on SIGTERM"


def settled(node: NodeProcess, peers: int, published: int) -> bool:
    """What the running node reports in its status file (as ``mailnode status`` prints it)."""
    status = read_status(node.data_dir)
    return (status is not None and status["dht_peers"] >= peers
            and status["records_published"] >= published)


def compose(sender: str, to: str, subject: str) -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: Bob <{to}>\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{time.time_ns()}@test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            f"Hello Bob, this is {subject}.\r\nÜnïcödé and trailing spaces   \r\n"
            "..a line starting with a dot\r\n").encode()


def send(node: NodeProcess, sender: str, to: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=30) as smtp:
        smtp.login("alice", "alice-pass")
        smtp.sendmail(sender, [to], data)


def inbox_bodies(node: NodeProcess, user: str, password: str) -> list[bytes]:
    imap = imaplib.IMAP4("127.0.0.1", node.imap_port, timeout=30)
    try:
        imap.login(user, password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK"
        if int(data[0] or 0) == 0:
            return []
        typ, items = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        return [item[1] for item in items if isinstance(item, tuple)]
    finally:
        imap.logout()


def strip_trace(body: bytes) -> bytes:
    """Remove the trace headers the nodes add on top (and only those)."""
    lines = body.split(b"\r\n")
    while lines and (lines[0].startswith((b"Received:", b"Authentication-Results:"))
                     or lines[0].startswith((b"\t", b" "))):
        lines.pop(0)
    return b"\r\n".join(lines)


def test_status_shows_peers_and_users(net: Network) -> None:
    wait_until(lambda: "DHT peers    : 2" in cli(net.a.data_dir, "status"), 30, "DHT peers")
    out = cli(net.b.data_dir, "status")
    assert "state        : running" in out and net.bob in out


async def test_mail_crosses_nodes_sealed_and_idle_sees_it(net: Network) -> None:
    imap = aioimaplib.IMAP4("127.0.0.1", net.b.imap_port, timeout=30)
    await imap.wait_hello_from_server()
    assert (await imap.login("bob", "bob-pass")).result == "OK"
    latencies = []
    sent: list[bytes] = []
    for i in range(5):
        selected = await imap.select("INBOX")
        assert selected.result == "OK"
        idle = await imap.idle_start(timeout=60)
        data = compose(net.alice, net.bob, f"message {i}")
        sent.append(data)
        accepted_at = 0.0

        def submit(data: bytes = data) -> None:
            nonlocal accepted_at
            send(net.a, net.alice, net.bob, data)
            accepted_at = time.monotonic()
        submitting = asyncio.create_task(asyncio.to_thread(submit))
        while True:
            push = await imap.wait_server_push(timeout=60)
            if any(b"EXISTS" in (line if isinstance(line, bytes) else line.encode())
                   for line in push):
                notified_at = time.monotonic()
                break
        await submitting
        imap.idle_done()
        await asyncio.wait_for(idle, 10)
        latencies.append(notified_at - accepted_at)
    await imap.logout()
    bodies = inbox_bodies(net.b, "bob", "bob-pass")
    for data in sent:
        matches = [b for b in bodies if strip_trace(b) == data]
        assert len(matches) == 1, "message not delivered byte-identical (or twice)"
        assert authentication_results(authserv_id(load_node_key(net.b.data_dir / NODE_KEY_NAME)
                                                  .verify_key), net.alice,
                                      "signed by the sender's key") in matches[0]
    print(f"\n250 -> IDLE EXISTS latency over {len(latencies)} messages: median "
          f"{statistics.median(latencies) * 1000:.1f} ms, all "
          + ", ".join(f"{x * 1000:.1f}" for x in latencies) + " ms")


def test_malformed_recipients_are_refused_and_unknown_ones_queued(net: Network) -> None:
    stranger = address_for(Identity.generate().verify_key)
    with smtplib.SMTP("127.0.0.1", net.a.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail(net.alice)
        assert code == 530  # not logged in yet
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("alice", "wrong")
        smtp.login("alice", "alice-pass")
        assert smtp.mail(net.bob)[0] == 553  # someone else's sender address
        assert smtp.mail(net.alice)[0] == 250
        assert smtp.rcpt("bob@example.com")[0] == 553
        # Valid but published by no node (yet, or no longer): accepted and queued; the
        # sender hears of a delay and then of a failure by DSN, never a refusal now.
        assert smtp.rcpt(stranger)[0] == 250
        assert smtp.rcpt(net.bob)[0] == 250
        smtp.rset()
        limit = int(smtp.esmtp_features["size"])
        assert smtp.mail(net.alice, [f"SIZE={limit + 1}"])[0] == 552  # oversize, before DATA
        smtp.rset()
        assert smtp.noop()[0] == 250  # the session is still served


def test_queue_retries_until_recipient_node_returns(net: Network) -> None:
    net.b.stop()
    try:
        data = compose(net.alice, net.bob, "sent while B was down")
        send(net.a, net.alice, net.bob, data)  # 250: durably queued on A
        assert "queue        : 1 message" in cli(net.a.data_dir, "status")
    finally:
        net.b.start()
    wait_until(lambda: any(strip_trace(b) == data
                           for b in inbox_bodies(net.b, "bob", "bob-pass")), 60,
               "queued message to arrive after B restarted")
    wait_until(lambda: "queue        : 0 message" in cli(net.a.data_dir, "status"), 30,
               "A's queue to drain")


def test_queued_mail_survives_kill_9_of_the_sender(net: Network) -> None:
    net.b.stop()
    try:
        data = compose(net.alice, net.bob, "queued, then the sender was killed")
        send(net.a, net.alice, net.bob, data)  # 250 means it is in A's SQLite
        net.a.kill()
        net.a.start()
    finally:
        net.b.start()
    wait_until(lambda: any(strip_trace(b) == data
                           for b in inbox_bodies(net.b, "bob", "bob-pass")), 60,
               "message queued before kill -9 to arrive")


def test_a_restart_rejoins_through_saved_peers_when_bootstrap_is_down(net: Network) -> None:
    wait_until(lambda: ("127.0.0.1", net.b.p2p_port) in load_peers(net.a.data_dir), 30,
               "A to save B among its peers")
    assert net.boot.stop() == 0
    try:
        assert net.a.stop() == 0
        net.a.start()  # its only configured bootstrap node is down
        wait_until(lambda: "DHT peers    : 0" not in cli(net.a.data_dir, "status"), 30,
                   "A to rejoin through the peers it saved")
        data = compose(net.alice, net.bob, "after rejoining without the bootstrap node")
        send(net.a, net.alice, net.bob, data)
        wait_until(lambda: any(strip_trace(b) == data
                               for b in inbox_bodies(net.b, "bob", "bob-pass")), 60,
                   "delivery without the bootstrap node")
    finally:
        net.boot.start()


def test_messages_survive_a_restart_and_kill(net: Network) -> None:
    data = compose(net.alice, net.bob, "kept across restarts")
    send(net.a, net.alice, net.bob, data)
    wait_until(lambda: any(strip_trace(b) == data
                           for b in inbox_bodies(net.b, "bob", "bob-pass")), 60, "delivery")
    before = inbox_bodies(net.b, "bob", "bob-pass")
    assert net.b.stop() == 0
    net.b.start()
    assert inbox_bodies(net.b, "bob", "bob-pass") == before
    net.b.kill()
    net.b.start()
    assert inbox_bodies(net.b, "bob", "bob-pass") == before


def test_logs_name_messages_but_never_content_or_secrets(net: Network) -> None:
    marker = f"secret-content-{time.time_ns()}"
    data = compose(net.alice, net.bob, marker)
    send(net.a, net.alice, net.bob, data)
    wait_until(lambda: any(strip_trace(b) == data
                           for b in inbox_bodies(net.b, "bob", "bob-pass")), 60, "delivery")
    logs = "".join(net.a.log + net.b.log + net.boot.log)
    assert "delivered" in logs  # the logs do talk about the message ...
    for secret in (marker, "alice-pass", "bob-pass"):  # ... but not its content or passwords
        assert secret not in logs
    for node in (net.a, net.b):
        seed = (node.data_dir / "node.key").read_bytes()
        assert seed.hex() not in logs


def test_garbage_on_imap_and_transfer_ports_leaves_the_node_serving(net: Network) -> None:
    with socket.create_connection(("127.0.0.1", net.b.imap_port), timeout=10) as sock:
        greeting = sock.recv(4096)
        assert greeting.startswith(b"* OK")
        sock.sendall(b"\x00\xff garbage {5}\r\n")
        reply = sock.recv(4096)
        assert b"BAD" in reply
        sock.sendall(b"a1 NOOP\r\n")
        assert b"a1 OK" in sock.recv(4096)
    for junk in (b"GET / HTTP/1.0\r\n\r\n", bytes(range(256)) * 4):
        with socket.create_connection(("127.0.0.1", net.b.p2p_port), timeout=10) as sock:
            sock.sendall(junk)
            try:
                while sock.recv(4096):
                    pass  # a TLS alert, then the node closes: no hanging until our timeout
            except ConnectionResetError:
                pass
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", net.b.p2p_port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as tls:
        tls.sendall(b"\xff" * 64)  # junk frames after a good TLS handshake
        received = b""
        try:
            while chunk := tls.recv(4096):
                received += chunk
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            pass
    decoder = FrameDecoder()
    decoder.feed(received)
    frames = []
    while (event := decoder.next_event()) is not None:
        frames.append(event)
    assert isinstance(frames[0], Challenge)  # the node greeted us ...
    assert isinstance(frames[-1], FrameError)  # ... and said why it hung up
    data = compose(net.alice, net.bob, "after the garbage")
    send(net.a, net.alice, net.bob, data)
    wait_until(lambda: any(strip_trace(b) == data
                           for b in inbox_bodies(net.b, "bob", "bob-pass")), 60,
               "delivery after garbage")


def test_quickstart_creates_a_node_prints_settings_and_serves(tmp_path: Path) -> None:
    """The README's first command on an empty home (with free ports instead of the defaults)."""
    env = {**os.environ, "MAILNODE_HOME": str(tmp_path / "home"),
           "MAILNODE_PASSWORD": "quickstart-pass"}
    smtp_port, imap_port, p2p_port = free_port(), free_port(), free_port()
    smtps_port, imaps_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailnode", "quickstart", "--smtp-port", str(smtp_port),
         "--imap-port", str(imap_port), "--p2p-port", str(p2p_port),
         "--smtps-port", str(smtps_port), "--imaps-port", str(imaps_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("mailnode ready:"):
                break
        out = "".join(lines)
        assert "mailnode ready:" in out, out
        address = next(line.split(":", 1)[1].strip() for line in lines
                       if "Email address" in line)
        key_of(address)
        assert f"IMAP (incoming): server 127.0.0.1  port {imap_port}" in out
        assert f"SMTP (outgoing): server 127.0.0.1  port {smtp_port}" in out
        name = next(line.split(":", 1)[1].split()[0] for line in lines if "User name" in line)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            smtp.login(name, "quickstart-pass")  # the printed settings work
        # The implicit-TLS listeners serve the node's certificate, which names 127.0.0.1.
        trust = ssl.create_default_context(cafile=str(tmp_path / "home" / "tls.pem"))
        with smtplib.SMTP_SSL("127.0.0.1", smtps_port, context=trust, timeout=30) as smtp:
            smtp.login(name, "quickstart-pass")
        with imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=trust, timeout=30) as imap:
            assert imap.login(name, "quickstart-pass")[0] == "OK"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
