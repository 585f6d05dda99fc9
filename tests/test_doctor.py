"""``mailnode doctor``: a deliberately broken data dir per check, and a healthy node passing."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from crypto.address import address_for
from crypto.keys import Identity
from mailnode.cli import init_data_dir
from mailnode.client_tls import TLS_NAME
from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME, Config, load, render
from mailnode.doctor import (
    BACKUP_NAME,
    CertFacts,
    Check,
    PendingFriend,
    Probe,
    Queued,
    Status,
    check_backup,
    check_certificate,
    check_clock,
    check_disk,
    check_endpoint,
    check_friends,
    check_listeners,
    check_modes,
    check_peers,
    check_queue,
    check_revision,
    dial,
    doctor,
    exit_status,
    peer_starts,
)
from mailnode.store.database import Database
from mailnode.store.friends import FriendStore
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import Outgoing, SqlStore, Submission
from tests.e2e.nodes import NodeProcess, free_port

CHECKS = ["file modes", "config", "listeners", "certificate", "endpoint", "peers", "clock",
          "database", "disk", "queue", "backup", "friends"]
NOW = 1_800_000_000.0
DAY = 86400


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A fresh node on ports no other test or node holds (doctor checks they are free)."""
    data_dir = tmp_path / "node"
    init_data_dir(data_dir, Config(smtp_port=free_port(), imap_port=free_port(),
                                   smtps_port=free_port(), imaps_port=free_port(),
                                   p2p_port=free_port()))
    return data_dir


def by_name(checks: list[Check]) -> dict[str, Check]:
    assert [c.name for c in checks] == CHECKS  # every check, once, in order
    return {c.name: c for c in checks}


def cli_doctor(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailnode", "--data-dir", str(data_dir),
                           "doctor"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def assert_one_line_per_check(out: str) -> None:
    lines = out.splitlines()
    assert len(lines) == len(CHECKS)
    for line, name in zip(lines, CHECKS, strict=True):
        status = line[1:5].strip()
        assert line.startswith("[") and status in {s.value for s in Status}
        assert line[7:].startswith(name)


def set_config(data_dir: Path, **settings: object) -> None:
    path = data_dir / CONFIG_NAME
    path.write_text(render(replace(load(path), **settings)))  # type: ignore[arg-type]


def test_healthy_stopped_node_passes_through_the_cli(node: Path) -> None:
    (node / BACKUP_NAME).write_text(json.dumps({"last_backup": time.time() - 3600}))
    done = cli_doctor(node)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_one_line_per_check(done.stdout)
    assert "[FAIL]" not in done.stdout
    assert "[OK  ] backup       last backup 60m ago" in done.stdout
    assert "[SKIP] endpoint     node not running" in done.stdout
    assert "[OK  ] database     schema at the newest revision" in done.stdout


def wait_for_status(data_dir: Path, ready: Callable[[dict[str, object]], bool]) -> None:
    path = data_dir / "status.json"
    deadline = time.monotonic() + 30
    while True:
        try:
            if ready(json.loads(path.read_text())):
                return
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, f"no such status in {path}"
        time.sleep(0.05)


def test_healthy_running_nodes_pass_and_dial_their_own_endpoint(tmp_path: Path) -> None:
    first = NodeProcess.init(tmp_path / "a", [])
    first.start()
    second = NodeProcess.init(tmp_path / "b", [first.p2p_port])
    try:
        wait_for_status(tmp_path / "a", lambda s: bool(s.get("endpoints")))
        alone = cli_doctor(tmp_path / "a")
        second.start()
        wait_for_status(tmp_path / "b", lambda s: bool(s.get("endpoints"))
                        and bool(s.get("dht_peers")))
        joined = cli_doctor(tmp_path / "b")
    finally:
        assert second.stop() == 0 and first.stop() == 0
    for done in (alone, joined):
        assert done.returncode == 0, done.stdout + done.stderr
        assert_one_line_per_check(done.stdout)
    checks = {line[7:19].strip(): line for line in alone.stdout.splitlines()}
    assert checks["listeners"].startswith("[OK  ]")
    assert "SMTP and IMAP STARTTLS answered" in checks["listeners"]
    assert "SMTPS and IMAPS answered with TLS, all presenting tls.pem" in checks["listeners"]
    assert checks["endpoint"].startswith("[OK  ]")
    assert f"127.0.0.1:{first.p2p_port} answers TLS with this node's key" in \
        checks["endpoint"]
    assert "dialled from this machine only" in checks["endpoint"]  # says what it did not do
    assert checks["peers"].startswith("[WARN]")  # alone: true, and not a failure
    assert checks["clock"].startswith("[SKIP]")
    checks = {line[7:19].strip(): line for line in joined.stdout.splitlines()}
    assert checks["peers"].startswith("[OK  ] peers        1 DHT peer(s) known")
    assert checks["clock"].startswith("[OK  ] clock        1 peer(s) dialled, none ahead")


@pytest.mark.parametrize("name", [NODE_KEY_NAME, TLS_NAME, DB_NAME, ""])
def test_group_or_world_readable_secrets_fail(node: Path, name: str) -> None:
    path = node / name if name else node
    path.chmod(0o755 if not name else 0o644)
    done = cli_doctor(node)
    assert done.returncode == 1
    assert_one_line_per_check(done.stdout)
    line = done.stdout.splitlines()[0]
    assert line.startswith("[FAIL] file modes") and str(path) in line
    assert (f"chmod 700 {node}" if not name else f"chmod 600 {path}") in line
    assert "some checks failed" in done.stderr and "Traceback" not in done.stderr


def test_a_world_readable_wal_file_fails_too(tmp_path: Path) -> None:
    modes: dict[str, int | None] = {"": 0o700, NODE_KEY_NAME: 0o600, DB_NAME: 0o600,
                                    DB_NAME + "-wal": 0o604}
    check = check_modes(tmp_path, modes)
    assert check.status is Status.FAIL and f"chmod 600 {tmp_path / (DB_NAME + '-wal')}" in \
        check.fix
    del modes[NODE_KEY_NAME]
    modes[DB_NAME + "-wal"] = 0o600
    missing = check_modes(tmp_path, modes)
    assert missing.status is Status.FAIL and NODE_KEY_NAME in missing.finding


@given(st.dictionaries(st.sampled_from([NODE_KEY_NAME, TLS_NAME, DB_NAME, ""]),
                       st.integers(0, 0o777), min_size=4))
def test_modes_fail_exactly_when_group_or_others_have_a_bit(modes: dict[str, int]) -> None:
    check = check_modes(Path("/d"), dict(modes))
    assert (check.status is Status.FAIL) == any(m & 0o077 for m in modes.values())


def write_certificate(data_dir: Path, now: float, days: int, names: list[str],
                      name: str = TLS_NAME) -> None:
    """A tls.pem (or ``name``, e.g. an own tls_cert) made with the project's own helper,
    dated and named as a test wants."""
    import ipaddress

    from cryptography import x509

    from mailnode.certificates import self_signed

    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, "mailnode", now, datetime.timedelta(days=days), alt)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (data_dir / name).write_bytes(pem + cert.public_bytes(serialization.Encoding.PEM))


def test_an_expired_certificate_fails(node: Path) -> None:
    write_certificate(node, time.time() - 400 * DAY, 365, ["localhost", "127.0.0.1"])
    done = cli_doctor(node)
    assert done.returncode == 1
    line = done.stdout.splitlines()[3]
    assert line.startswith("[FAIL] certificate") and "expired on" in line
    assert "move tls.pem aside and restart" in line


def test_a_certificate_not_naming_the_host_fails(node: Path) -> None:
    set_config(node, host="192.0.2.7")
    write_certificate(node, time.time(), 365, ["localhost", "127.0.0.1"])
    checks = by_name(doctor(node, time.time()))
    assert checks["certificate"].status is Status.FAIL
    assert "does not name host 192.0.2.7" in checks["certificate"].finding
    # a documentation address is not this machine's: `run` would fail, and doctor says so
    assert checks["listeners"].status is Status.FAIL
    port = load(node / CONFIG_NAME).smtp_port
    assert f"could not listen on smtp 192.0.2.7:{port} (Cannot assign requested address)" \
        in checks["listeners"].finding


def test_a_loadable_certificate_beyond_loopback_means_starttls(node: Path) -> None:
    set_config(node, host="0.0.0.0")
    listeners = by_name(doctor(node, time.time()))["listeners"]
    assert listeners.status is Status.OK
    assert "clients from other machines, STARTTLS required before passwords" in \
        listeners.finding


def test_an_unloadable_certificate_fails_listeners_beyond_loopback(node: Path) -> None:
    set_config(node, host="0.0.0.0")
    (node / TLS_NAME).write_bytes(b"not a certificate\n")
    checks = by_name(doctor(node, time.time()))
    assert checks["listeners"].status is Status.FAIL and "unusable" in \
        checks["listeners"].finding
    assert checks["certificate"].status is Status.FAIL
    assert exit_status(list(checks.values())) == 1


def test_certificate_dates_and_names() -> None:
    cert = CertFacts(NOW - DAY, NOW + 365 * DAY, ("localhost",), ("127.0.0.1", "::1"))
    assert check_certificate(cert, Config(), [], NOW).status is Status.OK
    assert check_certificate(cert, Config(), [], NOW - 2 * DAY).status is Status.FAIL
    soon = check_certificate(cert, Config(), [], NOW + 350 * DAY)
    assert soon.status is Status.WARN and "expires in 15 day(s)" in soon.finding
    lan = check_certificate(cert, Config(host="0.0.0.0"), ["192.0.2.2"], NOW)
    assert lan.status is Status.WARN and "192.0.2.2" in lan.finding
    assert 'host = "192.0.2.2"' in lan.fix
    named = replace(cert, ip_names=(*cert.ip_names, "192.0.2.2"), dns_names=("mail.example",))
    assert check_certificate(named, Config(host="0.0.0.0"), ["192.0.2.2"], NOW).status \
        is Status.OK
    assert check_certificate(named, Config(host="MAIL.example"), [], NOW).status is Status.OK
    unreadable = check_certificate("no readable certificate (x)", Config(), [], NOW)
    assert unreadable.status is Status.FAIL and "move tls.pem aside" in unreadable.fix


def test_a_missing_certificate_warns_as_the_node_makes_a_new_one(node: Path) -> None:
    set_config(node, host="0.0.0.0")
    (node / TLS_NAME).unlink()
    checks = by_name(doctor(node, time.time()))
    assert checks["certificate"].status is Status.WARN
    assert "makes a new one at start" in checks["certificate"].finding
    assert checks["listeners"].status is Status.OK
    assert checks["file modes"].status is Status.OK


def test_listeners_checks_what_the_running_listeners_say() -> None:
    public = Config(host="0.0.0.0")
    running = {"host": "0.0.0.0", "p2p_host": "0.0.0.0"}
    good = [Probe("smtp", True, False), Probe("imap", True, False)]
    ok = check_listeners(public, running, None, good)
    assert ok.status is Status.OK and "SMTP and IMAP STARTTLS answered" in ok.finding
    leaky = check_listeners(public, running, None, [good[0], Probe("imap", True, True)])
    assert leaky.status is Status.FAIL and "IMAP takes passwords before TLS" in leaky.finding
    # on loopback a password before STARTTLS is the documented behaviour
    assert check_listeners(Config(), {"host": "127.0.0.1", "p2p_host": "127.0.0.1"}, None,
                           [Probe("smtp", True, True)]).status is Status.OK
    broken = check_listeners(public, running, None, [Probe("smtp", True, False, "handshake")])
    assert broken.status is Status.FAIL and "SMTP TLS broken (handshake)" in broken.finding
    plain = check_listeners(public, running, None, [Probe("imap", False, True)])
    assert plain.status is Status.FAIL and "STARTTLS not offered" in plain.finding
    silent = check_listeners(public, running, None, [Probe("smtp", failure="refused")])
    assert silent.status is Status.FAIL and "does not answer (refused)" in silent.finding
    moved = check_listeners(Config(), running, None, good)  # the file says 127.0.0.1 now
    assert moved.status is Status.WARN and "restart the node" in moved.fix


def test_a_port_held_by_another_program_fails_for_a_stopped_node(node: Path) -> None:
    port = free_port()
    set_config(node, smtp_port=port)
    with socket.create_server(("127.0.0.1", port)):
        checks = by_name(doctor(node, time.time()))
    listeners = checks["listeners"]
    assert listeners.status is Status.FAIL
    assert f"smtp 127.0.0.1:{port} (Address already in use)" in listeners.finding
    assert by_name(doctor(node, time.time()))["listeners"].status is Status.OK  # released


def test_endpoint_findings() -> None:
    config = Config()
    assert check_endpoint(config, None, []).status is Status.SKIP
    assert check_endpoint(replace(config, accept_inbound=False), None, []).status is Status.OK
    loopback_to_remote = {"endpoints": [["127.0.0.1", 2700]], "peers": [["198.51.100.4", 2700]]}
    check = check_endpoint(config, loopback_to_remote, [(("127.0.0.1", 2700), None)])
    assert check.status is Status.FAIL and "loopback" in check.finding
    assert "advertise_host" in check.fix
    published = {"endpoints": [["fd00::2", 2700]], "peers": [], "p2p_port": 2700}
    refused = check_endpoint(config, published, [(("fd00::2", 2700), "refused\x1b[2J")])
    assert refused.status is Status.FAIL and "[fd00::2]:2700" in refused.finding
    assert "\x1b" not in refused.line()
    forwarded = replace(config, advertise_host="203.0.113.9:2800")
    behind_nat = {"endpoints": [["203.0.113.9", 2800]], "peers": [], "p2p_port": 2700}
    hairpin = check_endpoint(forwarded, behind_nat, [(("203.0.113.9", 2800), "timed out")])
    assert hairpin.status is Status.WARN and "loop back" in hairpin.finding


@pytest.fixture
def other_node_tls() -> Iterator[Callable[[float], int]]:
    """Start transfer TLS listeners on loopback presenting another node's key, its
    certificate made at the time given (each answers one connection)."""
    from mailnode.transfer.tls import server_context

    started: list[tuple[socket.socket, threading.Thread]] = []

    def start(now: float) -> int:
        context = server_context(Identity.generate(), now)
        listener = socket.create_server(("127.0.0.1", 0))

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started.append((listener, thread))
        return int(listener.getsockname()[1])
    yield start
    for listener, thread in started:
        listener.close()
        thread.join(timeout=5)


def test_dial_tells_our_node_from_another_and_from_nothing(
        other_node_tls: Callable[[float], int]) -> None:
    mine = Identity.generate().verify_key
    assert dial(("127.0.0.1", other_node_tls(time.time())), mine) == \
        "another node answers there"
    refused = dial(("127.0.0.1", free_port()), mine)
    assert refused is not None and "refused" in refused.lower()


def test_a_peer_started_in_our_future_shows_clock_skew(
        other_node_tls: Callable[[float], int]) -> None:
    now = float(int(time.time()))  # certificates count whole seconds
    ahead, fine = other_node_tls(now + 2 * 3600), other_node_tls(now - 3 * DAY)
    closed = free_port()
    starts = peer_starts([("127.0.0.1", ahead), ("127.0.0.1", fine), ("127.0.0.1", closed)])
    assert sorted(e[1] for e, _ in starts) == sorted([ahead, fine])  # the closed one: none
    check = check_clock(starts, now)
    assert check.status is Status.WARN
    assert f"127.0.0.1:{ahead} started 2h in our future" in check.finding


def test_clock_check() -> None:
    assert check_clock([], NOW).status is Status.SKIP
    behind = check_clock([(("192.0.2.1", 1), NOW - 30 * DAY)], NOW)
    assert behind.status is Status.OK and "one behind cannot be seen" in behind.finding
    assert check_clock([(("192.0.2.1", 1), NOW + 60)], NOW).status is Status.OK


def test_peers() -> None:
    assert check_peers({"dht_peers": 0}, 5, 1, 1).status is Status.WARN
    assert check_peers({"dht_peers": 3}, 0, 0, 0).status is Status.OK
    assert check_peers(None, 0, 0, 0).status is Status.WARN
    alone = check_peers(None, 0, 0, 0)
    assert "mailnode friend add" in alone.fix
    assert check_peers(None, 0, 0, 1).status is Status.OK


def test_disk_and_quota_headroom() -> None:
    mb = 1024 * 1024
    config = Config(max_message_size=10 * mb, max_queue_size=100 * mb)
    assert check_disk(1000 * mb, 0, config).status is Status.OK
    full_disk = check_disk(15 * mb, 0, config)
    assert full_disk.status is Status.FAIL and "below 20 MB" in full_disk.finding
    assert check_disk(50 * mb, 0, config).status is Status.WARN  # a full queue cannot fit
    nearly = check_disk(1000 * mb, 95 * mb, config)
    assert nearly.status is Status.WARN and "nearly full" in nearly.finding
    assert "unknown" in check_disk(1000 * mb, None, config).finding


def make_database_at(path: Path, revision: str) -> None:
    from alembic import command

    from mailnode.store.database import _alembic_config, make_engine

    engine = make_engine(path)
    try:
        cfg = _alembic_config(engine)
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def test_an_old_database_revision_warns_and_is_not_migrated(node: Path) -> None:
    (node / DB_NAME).unlink()
    make_database_at(node / DB_NAME, "0005")
    checks = by_name(doctor(node, time.time()))
    assert checks["database"].status is Status.WARN
    from alembic.script import ScriptDirectory

    from mailnode.store.database import MIGRATIONS_DIR
    newest = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()  # whatever it is now
    assert f"revision 0005, newest is {newest}" in checks["database"].finding
    assert checks["queue"].status is Status.SKIP and checks["friends"].status is Status.SKIP
    checks = by_name(doctor(node, time.time()))  # still old: doctor did not migrate it
    assert "revision 0005" in checks["database"].finding


def test_an_unknown_or_unreadable_database_fails(node: Path) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{node / DB_NAME}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    assert by_name(doctor(node, time.time()))["database"].status is Status.FAIL
    (node / DB_NAME).write_bytes(b"garbage" * 100)
    done = cli_doctor(node)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert_one_line_per_check(done.stdout)
    assert done.stdout.splitlines()[7].startswith("[FAIL] database     cannot read")
    assert check_revision(None, "0006", False).status is Status.FAIL


def test_revision_check() -> None:
    assert check_revision("0006", "0006", True).status is Status.OK
    assert check_revision("0004", "0006", True).status is Status.WARN


def test_a_stuck_queue_warns(node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailnode.cli import _add_user

    _add_user(node, "alice", "a-long-enough-password")
    carol = address_for(Identity.generate().verify_key)
    now = int(time.time())

    async def queue_one() -> None:
        db = Database.open(node / DB_NAME)
        try:
            store = SqlStore(db, ChangeNotifier())
            alice = await store.find_user("alice")
            assert alice is not None
            await store.submit(Submission(alice.id, b"", (), b"From: a\r\n\r\nx\r\n", b"",
                                          (Outgoing(os.urandom(16), carol),)))
            for item in await store.due_outbound(now=2**40):
                await store.outbound_retry(item.id, 2**40, "peer \x1b[31mdown")
            await db.run(lambda conn: conn.execute(
                "UPDATE outbound SET created_at = ?", (now - 5 * 3600,)))
        finally:
            db.close()
    asyncio.run(queue_one())
    done = cli_doctor(node)
    line = done.stdout.splitlines()[9]
    assert line.startswith("[WARN] queue") and "1 waiting; the oldest for 5h" in line
    assert "peer \\x1b[31mdown" in line and "\x1b" not in done.stdout
    assert "mailnode queue retry" in line


def test_queue_check() -> None:
    config = Config(delay_notice_after=3600)
    assert check_queue([], config, NOW).status is Status.OK
    fresh = [Queued(int(NOW) - 60, 1, None)]
    assert check_queue(fresh, config, NOW).status is Status.OK
    assert check_queue([Queued(int(NOW) - 7200, 1, None)], config, NOW).status is Status.WARN
    tried = check_queue([Queued(int(NOW) - 60, 12, None)], config, NOW)
    assert tried.status is Status.WARN and "tried 12 times" in tried.finding


def test_backup() -> None:
    never = check_backup(None, NOW)
    assert never.status is Status.WARN and "never backed up" in never.finding
    assert check_backup(json.dumps({"last_backup": NOW - DAY}), NOW).status is Status.OK
    iso = datetime.datetime.fromtimestamp(NOW - DAY, tz=datetime.UTC).isoformat()
    assert check_backup(json.dumps({"last_backup": iso}), NOW).status is Status.OK
    old = check_backup(json.dumps({"last_backup": NOW - 30 * DAY}), NOW)
    assert old.status is Status.WARN and "30d ago" in old.finding
    assert "unreadable" in check_backup("{", NOW).finding
    assert "unreadable" in check_backup("[]", NOW).finding


def test_friends_pending_for_long_warn(node: Path) -> None:
    async def pending() -> None:
        db = Database.open(node / DB_NAME)
        try:
            store = FriendStore(db)
            then = int(time.time()) - 2 * DAY
            await store.add_pending(os.urandom(32), "bob", (("192.0.2.9", 2700),),
                                    os.urandom(16), then + 7 * DAY, 1 << 20, 7, then)
            await store.failed((await store.list_friends())[0].node_key,
                               "timed out\r\nforged line")
        finally:
            db.close()
    asyncio.run(pending())
    checks = by_name(doctor(node, time.time()))
    friends = checks["friends"]
    assert friends.status is Status.WARN and "bob (2d: timed out\\r\\nforged line)" in \
        friends.finding
    assert "\n" not in friends.line()
    assert checks["peers"].status is Status.OK  # a friend is a way back into the network
    assert check_friends([PendingFriend("bob", int(NOW) - 3600, None)], NOW).status \
        is Status.OK


def test_an_invalid_config_fails_and_skips_what_needs_it(node: Path) -> None:
    (node / CONFIG_NAME).write_text("[network]\nhost = 5\n")
    done = cli_doctor(node)
    assert done.returncode == 1
    assert_one_line_per_check(done.stdout)
    lines = {line[7:19].strip(): line for line in done.stdout.splitlines()}
    assert lines["config"].startswith("[FAIL]")
    assert all(lines[n].startswith("[SKIP]") for n in ("listeners", "certificate", "endpoint",
                                                         "disk", "queue"))


def test_a_friends_dial_back_decides_the_endpoint_check() -> None:
    config = Config()
    running = {"endpoints": [["10.0.0.1", 2700]], "peers": [["10.0.0.2", 2700]],
               "p2p_port": 2700}
    fine = check_endpoint(config, running, [(("10.0.0.1", 2700), None)],
                          ("anna-pi", True, "reached your node at 10.0.0.1:2700"))
    assert fine.status is Status.OK and "anna-pi's node dialled" in fine.finding
    # Reachable from this machine, not from the friend's: only the friend's view counts.
    blocked = check_endpoint(config, running, [(("10.0.0.1", 2700), None)],
                             ("anna-pi", False, "10.0.0.1:2700 failed: timed out\x1b[2J"))
    assert blocked.status is Status.FAIL and "\x1b" not in blocked.finding
    assert "firewall" in blocked.fix


def test_implicit_tls_listeners_present_the_configured_certificate(tmp_path: Path) -> None:
    """A running node is probed on its implicit-TLS ports too; tls_cert set in mailnode.toml
    after start is not served until a restart, and doctor says so."""
    data_dir = tmp_path / "a"
    node = NodeProcess.init(data_dir, [])
    ports = load(data_dir / CONFIG_NAME)
    node.start()
    try:
        wait_for_status(data_dir, lambda s: "imaps_port" in s)
        status = json.loads((data_dir / "status.json").read_text())
        assert (status["smtps_port"], status["imaps_port"]) == (ports.smtps_port,
                                                                ports.imaps_port)
        write_certificate(data_dir, time.time(), 365, ["localhost", "127.0.0.1"], "own.pem")
        set_config(data_dir, tls_cert="own.pem")
        stale = by_name(doctor(data_dir, time.time()))
        node.stop()
        node.start()
        wait_for_status(data_dir, lambda s: "imaps_port" in s)
        fresh = by_name(doctor(data_dir, time.time()))
    finally:
        assert node.stop() == 0
    listeners = stale["listeners"]
    assert listeners.status is Status.FAIL
    assert "presents a certificate other than tls_cert own.pem" in listeners.finding
    assert "restart the node" in listeners.fix
    assert f"implicit TLS smtps {ports.smtps_port}, imaps {ports.imaps_port}" in \
        listeners.finding
    assert fresh["listeners"].status is Status.OK, fresh["listeners"]
    assert "SMTPS and IMAPS answered with TLS, all presenting tls_cert own.pem" in \
        fresh["listeners"].finding
    assert fresh["certificate"].status is Status.OK
    assert fresh["certificate"].finding.startswith("tls_cert own.pem valid until")


def test_implicit_tls_listener_findings() -> None:
    public = Config(host="0.0.0.0")
    running = {"host": "0.0.0.0", "p2p_host": "0.0.0.0", "smtps_port": 2465, "imaps_port": 0}
    ours, other = b"our certificate", b"another certificate"
    good = [Probe("smtp", True, False, certificate=ours), Probe("smtps", certificate=ours)]
    ok = check_listeners(public, running, None, good, expected=ours)
    assert ok.status is Status.OK
    assert "implicit TLS smtps 2465)" in ok.finding  # imaps is off: not listed
    assert "SMTPS answered with TLS, all presenting tls.pem" in ok.finding
    # an implicit-TLS listener never offers STARTTLS, nor takes a password outside TLS
    assert check_listeners(public, running, None, [Probe("imaps", auth_before_tls=True)]
                           ).status is Status.OK
    silent = check_listeners(public, running, None, [Probe("imaps", failure="refused")])
    assert silent.status is Status.FAIL and "IMAPS does not answer (refused)" in silent.finding
    broken = check_listeners(public, running, None, [Probe("smtps", tls_error="bad record")])
    assert broken.status is Status.FAIL and "SMTPS TLS broken (bad record)" in broken.finding
    stale = check_listeners(replace(public, tls_cert="own.pem"), running, None,
                            [*good[:1], Probe("smtps", certificate=other)], expected=ours)
    assert stale.status is Status.FAIL
    assert "SMTPS presents a certificate other than tls_cert own.pem" in stale.finding
    # unknown expectation (unreadable file): reported by the certificate check instead
    assert check_listeners(public, running, None, [Probe("smtps", certificate=other)]
                           ).status is Status.OK
    off = check_listeners(Config(smtps_port=0, imaps_port=0), None, None)
    assert "implicit TLS off" in off.finding


def test_an_implicit_tls_port_held_by_another_program_fails(node: Path) -> None:
    port = load(node / CONFIG_NAME).imaps_port
    with socket.create_server(("127.0.0.1", port)):
        listeners = by_name(doctor(node, time.time()))["listeners"]
    assert listeners.status is Status.FAIL
    assert f"imaps 127.0.0.1:{port} (Address already in use)" in listeners.finding
    set_config(node, imaps_port=0)  # off: its port is nobody's business
    with socket.create_server(("127.0.0.1", port)):
        assert by_name(doctor(node, time.time()))["listeners"].status is Status.OK


def test_the_certificate_check_audits_an_own_tls_cert(node: Path) -> None:
    write_certificate(node, time.time() - 400 * DAY, 365, ["mail.example"], "own.pem")
    set_config(node, tls_cert="own.pem")
    done = cli_doctor(node)
    assert done.returncode == 1
    line = done.stdout.splitlines()[3]
    assert line.startswith("[FAIL] certificate  tls_cert own.pem expired on")
    assert "renew it and replace the file" in line and "tls.pem" not in line
    write_certificate(node, time.time(), 20, ["mail.example"], "own.pem")
    soon = by_name(doctor(node, time.time()))["certificate"]
    assert soon.status is Status.WARN and "tls_cert own.pem expires in 19 day(s)" in \
        soon.finding
    write_certificate(node, time.time(), 365, ["mail.example"], "own.pem")
    assert by_name(doctor(node, time.time()))["certificate"].finding.startswith(
        "tls_cert own.pem valid until")


def test_own_certificate_names() -> None:
    own = Config(tls_cert="/etc/ssl/mail.pem", host="192.0.2.7")
    cert = CertFacts(NOW - DAY, NOW + 365 * DAY, ("mail.example",), ())
    wrong = check_certificate(cert, own, [], NOW)
    assert wrong.status is Status.FAIL
    assert "tls_cert /etc/ssl/mail.pem does not name host 192.0.2.7" in wrong.finding
    assert wrong.fix == "use a certificate naming it"
    lan = check_certificate(cert, replace(own, host="0.0.0.0"), ["192.0.2.2"], NOW)
    assert lan.status is Status.WARN and "192.0.2.2" in lan.finding
    assert "mail.example" in lan.fix and "tls.pem" not in lan.fix
    assert check_certificate(cert, replace(own, host="mail.example"), [], NOW).status \
        is Status.OK


def test_lan_addresses_of_the_bound_family_only(node: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """0.0.0.0 serves IPv4 only, :: IPv6 only: the certificate need not name an address of
    the other family (doctor warned about an IPv6 address no listener served)."""
    routes = {"192.0.2.1": "192.0.2.2", "2001:db8::1": "2001:db8::2"}
    monkeypatch.setattr("mailnode.client_tls.route_from", routes.get)
    write_certificate(node, time.time(), 365, ["localhost", "127.0.0.1", "192.0.2.2"])
    set_config(node, host="0.0.0.0")
    assert by_name(doctor(node, time.time()))["certificate"].status is Status.OK
    set_config(node, host="::")
    v6 = by_name(doctor(node, time.time()))["certificate"]
    assert v6.status is Status.WARN and "address(es) 2001:db8::2 " in v6.finding
