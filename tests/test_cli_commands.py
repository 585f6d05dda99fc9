"""The command line people expect (issue 8): help, --version, options after the command,
user list / passwd / remove, settings, password strength, and a one-line error, never a
traceback, for every mistake a new user makes."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from crypto.address import address_for, key_of
from crypto.keys import Identity
from mailnode.cli import main
from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME, Config, ConfigError, validate
from mailnode.passwords import judge
from mailnode.store.database import Database
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import Outgoing, SqlStore, Submission

T = TypeVar("T")
STRONG = "violet anchor drifts slowly"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 1 and err.startswith("mailnode: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def node(tmp_path: Path, capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised node with the user alice; stdin is not a terminal."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    d = tmp_path / "node"
    assert run(capsys, "init", "--data-dir", str(d))[0] == 0
    monkeypatch.setenv("MAILNODE_PASSWORD", STRONG)
    assert run(capsys, "user", "add", "alice", "--data-dir", str(d))[0] == 0
    return d


def with_store(d: Path, job: Callable[[SqlStore, Database], Awaitable[T]]) -> T:
    async def go() -> T:
        db = Database.open(d / DB_NAME)
        try:
            return await job(SqlStore(db, ChangeNotifier()), db)
        finally:
            db.close()
    return asyncio.run(go())


def test_bare_command_prints_help_and_version_is_shown(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 0 and out.startswith("usage: mailnode") and "quickstart" in out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("mailnode ")


def test_global_options_are_accepted_after_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(tmp_path / "n")
    monkeypatch.setenv("MAILNODE_PASSWORD", STRONG)
    assert run(capsys, "init", "--data-dir", d, "--smtp-port", "4025")[0] == 0
    assert (Path(d) / CONFIG_NAME).exists()
    code, out, _ = run(capsys, "user", "add", "bob", "--data-dir", d, "-v")
    assert code == 0
    key_of(out.strip().splitlines()[-1])
    assert "bob" in run(capsys, "user", "list", "--data-dir", d)[1]
    assert "bob" in run(capsys, "--data-dir", d, "user", "list")[1]  # before it still works
    assert "state        : stopped" in run(capsys, "status", "--data-dir", d)[1]
    # given before the command and not after it, the value is not reset by the subcommand
    assert run(capsys, "--data-dir", d, "status", "-v")[0] == 0


def test_user_list_passwd_and_remove(node: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(node)
    monkeypatch.setenv("MAILNODE_PASSWORD", "other violet anchors drift")
    assert run(capsys, "user", "add", "bob", "--data-dir", d)[0] == 0
    code, out, _ = run(capsys, "user", "list", "--data-dir", d)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["alice", "bob"]

    monkeypatch.setenv("MAILNODE_PASSWORD", "a brand new passphrase here")
    code, out, _ = run(capsys, "user", "passwd", "alice", "--data-dir", d)
    assert code == 0 and "Changed the password of alice" in out

    async def logins(store: SqlStore, _: Database) -> tuple[bool, bool]:
        return (await store.authenticate("alice", "a brand new passphrase here") is not None,
                await store.authenticate("alice", STRONG) is not None)
    assert with_store(node, logins) == (True, False)

    async def give_bob_mail(store: SqlStore, _: Database) -> None:
        bob = await store.find_user("bob")
        assert bob is not None
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert inbox is not None
        await store.append(inbox.id, b"Subject: hi\r\n\r\nfor bob only\r\n", frozenset(), None)
        far = address_for(Identity.generate().verify_key)
        await store.submit(Submission(bob.id, b"", (), b"From: b\r\n\r\nqueued\r\n", b"",
                                      (Outgoing(os.urandom(16), far),)))
    with_store(node, give_bob_mail)

    async def queued(store: SqlStore, db: Database) -> tuple[int, int]:
        payloads = await db.run(lambda conn: conn.execute(
            "SELECT count(*) FROM outbound_payloads").fetchone()[0])
        return await store.queue_length(), int(payloads)
    assert with_store(node, queued) == (1, 1)

    async def bodies(_: SqlStore, db: Database) -> list[bytes]:
        return await db.run(lambda conn: [bytes(b) for (b,) in conn.execute(
            "SELECT data FROM bodies")])
    assert any(b"for bob only" in body for body in with_store(node, bodies))

    code, _, err = run(capsys, "user", "remove", "bob", "--data-dir", d)
    assert "--yes" in one_line_error(code, err)
    assert "bob" in run(capsys, "user", "list", "--data-dir", d)[1]  # not without --yes
    code, out, _ = run(capsys, "user", "remove", "bob", "--yes", "--data-dir", d)
    assert code == 0 and "Removed bob" in out
    assert run(capsys, "user", "list", "--data-dir", d)[1].split()[0] == "alice"

    assert not any(b"for bob only" in body for body in with_store(node, bodies))

    assert with_store(node, queued) == (0, 0)  # bob's queued copy and its payload are gone

    for action in (("passwd",), ("remove", "--yes")):
        code, _, err = run(capsys, "user", *action, "zed", "--data-dir", d)
        assert "no user 'zed'" in one_line_error(code, err) and "user list" in err


def test_weak_passwords_are_refused_unless_allowed(
        node: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(node)
    monkeypatch.setenv("MAILNODE_PASSWORD", "bob-pass")
    code, _, err = run(capsys, "user", "add", "bob", "--data-dir", d)
    assert "weak" in one_line_error(code, err) and "--allow-weak" in err
    assert run(capsys, "user", "add", "bob", "--allow-weak", "--data-dir", d)[0] == 0
    for hopeless in ("password", "carol", "123456789"):  # common, or the user's own name
        monkeypatch.setenv("MAILNODE_PASSWORD", hopeless)
        code, _, err = run(capsys, "user", "add", "carol", "--allow-weak", "--data-dir", d)
        assert "too easy to guess" in one_line_error(code, err)
        assert "--allow-weak" not in err
    monkeypatch.setenv("MAILNODE_PASSWORD", "")
    code, _, err = run(capsys, "user", "add", "carol", "--data-dir", d)
    assert "MAILNODE_PASSWORD is set but empty" in one_line_error(code, err)
    monkeypatch.setenv("MAILNODE_PASSWORD", "password")
    code, _, err = run(capsys, "user", "passwd", "alice", "--allow-weak", "--data-dir", d)
    one_line_error(code, err)
    assert "carol" not in run(capsys, "user", "list", "--data-dir", d)[1]


def test_the_estimator_judges_long_passwords_by_their_start() -> None:
    assert judge("q" * 1000).never  # beyond zxcvbn's 72 characters: no error, still judged
    assert judge("violet anchor drifts slowly" + "x" * 100).ok
    assert not judge("").ok and judge("").never


def test_quickstart_checks_the_password_before_creating_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    d = tmp_path / "q"
    for value, says in (("", "set but empty"), ("password", "too easy"), ("bob-pass", "weak")):
        monkeypatch.setenv("MAILNODE_PASSWORD", value)
        code, out, err = run(capsys, "quickstart", "--data-dir", str(d))
        assert says in one_line_error(code, err) and not d.exists()
        assert "(from MAILNODE_PASSWORD)" not in out


def test_init_onto_a_file_or_below_one_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = run(capsys, "init", "--data-dir", str(f))
    assert "is a file" in one_line_error(code, err)
    code, _, err = run(capsys, "init", "--data-dir", str(f / "below"))
    assert "is a file" in one_line_error(code, err) and f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_init_onto_an_unwritable_path_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run(capsys, "init", "--data-dir", str(locked / "node"))
    assert "not writable" in one_line_error(code, err)


def test_one_port_for_two_listeners_is_refused_by_validation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="smtp_port and imap_port are both 2587"):
        validate(Config(imap_port=2587))
    with pytest.raises(ConfigError, match="imap_port and p2p_port are both 2143"):
        validate(Config(p2p_port=2143))
    with pytest.raises(ConfigError, match="p2p_port"):
        validate(Config(p2p_host="0.0.0.0", p2p_port=2587))
    validate(Config(host="127.0.0.1", p2p_host="10.0.0.5", p2p_port=2587))  # other address
    validate(Config(smtp_port=0, imap_port=0, p2p_port=0))  # 0: each picks a free one
    code, _, err = run(capsys, "init", "--data-dir", str(tmp_path / "n"), "--p2p-port", "2587")
    assert "smtp_port and p2p_port are both 2587" in one_line_error(code, err)
    assert not (tmp_path / "n").exists()


def test_status_and_init_agree_after_the_config_is_deleted(
        node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(node)
    key = (node / NODE_KEY_NAME).read_bytes()
    (node / CONFIG_NAME).unlink()
    for command in ("status", "settings", "run", "quickstart"):
        code, _, err = run(capsys, command, "--data-dir", d)
        assert f"mailnode --data-dir {d} init" in one_line_error(code, err)
        assert "keys and mail are kept" in err
    code, out, _ = run(capsys, "init", "--data-dir", d, "--smtp-port", "4025")
    assert code == 0 and "keys and mail already there are kept" in out
    assert (node / NODE_KEY_NAME).read_bytes() == key
    code, out, _ = run(capsys, "status", "--data-dir", d)
    assert code == 0 and "alice" in out and "smtp 127.0.0.1:4025" in out
    code, _, err = run(capsys, "init", "--data-dir", d)
    assert "already holds a node" in one_line_error(code, err)


def test_listening_beyond_loopback_needs_a_confirmation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    d = tmp_path / "lan"
    code, _, err = run(capsys, "init", "--data-dir", str(d), "--host", "0.0.0.0")
    assert "--yes" in one_line_error(code, err) and not d.exists()
    monkeypatch.setenv("MAILNODE_PASSWORD", STRONG)
    code, _, err = run(capsys, "quickstart", "--data-dir", str(d), "--host", "0.0.0.0")
    assert "--yes" in one_line_error(code, err) and not d.exists()
    code, out, _ = run(capsys, "init", "--data-dir", str(d), "--host", "0.0.0.0", "--yes")
    assert code == 0 and "STARTTLS" in out


def test_init_explains_its_choices_and_how_to_join_friends(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init", "--data-dir", str(tmp_path / "n"))
    assert code == 0
    for choice in ("data directory :", "mail clients   :", "other nodes    :",
                   "network        :"):
        assert choice in out
    assert "mailnode invite" in out and "mailnode friend add TOKEN" in out


def test_settings_reprints_client_settings(node: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(node)
    monkeypatch.setenv("MAILNODE_PASSWORD", "other violet anchors drift")
    run(capsys, "user", "add", "bob", "--data-dir", d)
    code, out, _ = run(capsys, "settings", "--data-dir", d)
    assert code == 0 and out.count("Mail client settings for") == 2
    assert "IMAP (incoming): server 127.0.0.1  port 2143" in out
    code, out, _ = run(capsys, "settings", "bob", "--data-dir", d)
    assert out.count("Mail client settings for bob") == 1 and "alice" not in out
    code, _, err = run(capsys, "settings", "zed", "--data-dir", d)
    assert "no user 'zed'" in one_line_error(code, err)


def test_settings_qr_shows_the_delta_chat_code_after_checking_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mailnode.client_tls import lan_addresses

    if not lan_addresses("0.0.0.0"):
        pytest.skip("this machine has no LAN address for a phone to use")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    d = str(tmp_path / "lan")
    assert run(capsys, "init", "--data-dir", d, "--host", "0.0.0.0", "--yes")[0] == 0
    monkeypatch.setenv("MAILNODE_PASSWORD", STRONG)
    assert run(capsys, "user", "add", "alice", "--data-dir", d)[0] == 0
    code, out, _ = run(capsys, "settings", "alice", "--qr", "--data-dir", d)
    assert code == 0 and "dclogin:" in out and "&v=1" in out
    monkeypatch.setenv("MAILNODE_PASSWORD", "not alices password at all")
    code, out, err = run(capsys, "settings", "alice", "--qr", "--data-dir", d)
    assert "not alice's password" in one_line_error(code, err) and "dclogin" not in out
    code, _, err = run(capsys, "settings", "--qr", "--data-dir", d)
    assert "needs a user name" in one_line_error(code, err)
