"""The ``mailnode`` command line, in-process (the e2e tests run it as real processes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from crypto.address import key_of
from mailnode.cli import main
from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME, Config, ConfigError, load
from mailnode.store.database import Database, is_current


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_writes_config_keys_and_current_database(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "node"
    code, out, _ = run(capsys, "--data-dir", str(d), "init", "--smtp-port", "1025",
                       "--bootstrap", "127.0.0.1:4000", "10.0.0.1:4001")
    assert code == 0 and "mailnode.toml" in out
    config = load(d / CONFIG_NAME)
    assert config.smtp_port == 1025 and config.host == "127.0.0.1"
    assert config.bootstrap == ("127.0.0.1:4000", "10.0.0.1:4001")
    assert stat.S_IMODE(os.stat(d / NODE_KEY_NAME).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d / DB_NAME).st_mode) == 0o600
    db = Database(d / DB_NAME)
    try:
        assert is_current(db.engine)
    finally:
        db.close()
    code, _, err = run(capsys, "--data-dir", str(d), "init")
    assert code == 1 and "refusing" in err and "Traceback" not in err


def test_user_add_prints_the_address_last(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(tmp_path / "node")
    run(capsys, "--data-dir", d, "init")
    monkeypatch.setenv("MAILNODE_PASSWORD", "long enough, and uncommon")
    code, out, _ = run(capsys, "--data-dir", d, "user", "add", "alice")
    assert code == 0
    key_of(out.strip().splitlines()[-1])  # a valid mailnode address
    code, _, err = run(capsys, "--data-dir", d, "user", "add", "alice")
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "--data-dir", d, "user", "add", "Bad Name!")
    assert code == 1 and "not a valid user name" in err
    monkeypatch.setenv("MAILNODE_PASSWORD", "short")
    code, _, err = run(capsys, "--data-dir", d, "user", "add", "bob")
    assert code == 1 and "too easy to guess" in err


def test_mailnode_home_and_status_of_a_stopped_node(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILNODE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAILNODE_PASSWORD", "long enough, and uncommon")
    assert run(capsys, "init")[0] == 0
    address = run(capsys, "user", "add", "carol")[1].strip().splitlines()[-1]
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "state        : stopped" in out and "queue        : 0" in out and address in out


def test_commands_on_a_missing_node_say_what_to_do(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--data-dir", str(tmp_path / "none"), "status")
    assert code == 1 and "init" in err


def test_config_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_text("[network]\nsmtp_prot = 25\n")
    with pytest.raises(ConfigError, match=r"unknown setting network\.smtp_prot"):
        load(path)
    path.write_text("[network]\nsmtp_port = 'x'\n")
    with pytest.raises(ConfigError, match="smtp_port must be an integer"):
        load(path)
    path.write_text("[dht]\nrecord_ttl = 10\nrepublish_interval = 20\n")
    with pytest.raises(ConfigError, match="republish_interval"):
        load(path)
    path.write_text("[dht]\nrecord_ttl = 691201\n")  # DHT nodes refuse records beyond 7 days
    with pytest.raises(ConfigError, match="record_ttl may be at most 604800"):
        load(path)
    path.write_text("not toml ===")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)
    with pytest.raises(ConfigError, match=r"run `mailnode init`"):
        load(tmp_path / "missing.toml")
    assert Config().host == "127.0.0.1"  # safe default


def test_p2p_listeners_can_be_public_while_clients_stay_on_loopback() -> None:
    from dataclasses import replace

    from mailnode.addressing import endpoints

    config = Config()
    assert config.p2p_bind == "127.0.0.1" and endpoints(config, 2700, []) == [
        ("127.0.0.1", 2700)]
    public = replace(config, p2p_host="0.0.0.0", advertise_host="198.51.100.7")
    assert public.host == "127.0.0.1"  # SMTP and IMAP stay private
    assert public.p2p_bind == "0.0.0.0" and endpoints(public, 2700, []) == [
        ("198.51.100.7", 2700)]


def test_queue_lists_waiting_recipients_and_retry_makes_them_due(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from crypto.address import address_for
    from crypto.keys import Identity
    from mailnode.store.notify import ChangeNotifier
    from mailnode.store.sqlite import Outgoing, SqlStore, Submission

    d = tmp_path / "node"
    run(capsys, "--data-dir", str(d), "init")
    monkeypatch.setenv("MAILNODE_PASSWORD", "a-long-enough-password")
    run(capsys, "--data-dir", str(d), "user", "add", "alice")
    assert run(capsys, "--data-dir", str(d), "queue")[1] == "queue is empty\n"
    carol, dave = (address_for(Identity.generate().verify_key) for _ in range(2))

    async def queue_two() -> None:
        db = Database.open(d / DB_NAME)
        try:
            store = SqlStore(db, ChangeNotifier())
            alice = await store.find_user("alice")
            assert alice is not None
            await store.submit(Submission(alice.id, b"", (), b"From: a\r\n\r\nx\r\n", b"",
                                          (Outgoing(os.urandom(16), carol),
                                           Outgoing(os.urandom(16), dave))))
            for item in await store.due_outbound(now=2**40):
                await store.outbound_retry(item.id, 2**40, "peer \x1b[31mdown\r\n")
        finally:
            db.close()
    asyncio.run(queue_two())
    code, out, _ = run(capsys, "--data-dir", str(d), "queue")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2  # one line per waiting recipient
    assert {carol, dave} == {line.split()[1] for line in lines}
    assert all("attempts 1" in line and "next in " in line for line in lines)
    assert "\x1b" not in out and "down\\r\\n" in out  # a peer's words, escaped
    first_id = lines[0].split()[0]
    code, out, _ = run(capsys, "--data-dir", str(d), "queue", "retry", first_id)
    assert code == 0 and out.startswith("1 queued message(s) due now")
    code, out, _ = run(capsys, "--data-dir", str(d), "queue")
    assert sum("next now" in line for line in out.splitlines()) == 1
    code, out, _ = run(capsys, "--data-dir", str(d), "queue", "retry")
    assert out.startswith("2 queued")
    code, _, err = run(capsys, "--data-dir", str(d), "queue", "retry", "999999")
    assert code == 1 and "not in the queue" in err
