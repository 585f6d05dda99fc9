"""The systemd unit (checked as a file) and the Docker entrypoint (run without Docker)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mailnode.cli import main
from mailnode.config import CONFIG_NAME, load
from mailnode.ops.service import ServiceError, unit
from tests.e2e.nodes import READY, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_install_service_writes_a_sandboxed_unit(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "node"
    assert main(["--data-dir", str(data), "init"]) == 0
    target = tmp_path / "mailnode.service"
    assert main(["--data-dir", str(data), "install-service", str(target),
                 "--user", "mailnode"]) == 0
    out = capsys.readouterr().out
    assert f"useradd --system --home-dir {data}" in out and "systemctl enable --now" in out
    parsed = configparser.ConfigParser(interpolation=None, strict=True)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read_string(target.read_text())
    service = parsed["Service"]
    assert (service["User"], service["Group"]) == ("mailnode", "mailnode")
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert service["ReadWritePaths"] == str(data)  # the one writable path
    assert shlex.split(service["ExecStart"]) == [sys.executable, "-m", "mailnode",
                                                 "--data-dir", str(data), "run"]
    assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert service["PrivateTmp"] == service["PrivateDevices"] == "yes"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    if shutil.which("systemd-analyze"):  # systemd's own parser: no unknown or bad setting
        verified = subprocess.run(["systemd-analyze", "verify", str(target)],
                                  capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0 and str(target) not in verified.stderr, \
            verified.stderr
    # Not overwritten without --force; a bad name is one line, not a unit.
    assert main(["--data-dir", str(data), "install-service", str(target)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["--data-dir", str(data), "install-service", str(target), "--force",
                 "--user", "root\nExecStartPre=/bin/evil"]) == 1
    assert "ExecStartPre" not in target.read_text()


def test_unsafe_paths_cannot_reach_the_unit() -> None:
    for data in ("/srv/mail node", "/srv/x\nExecStartPre=/bin/sh", "/srv/$HOME", "/srv/%h"):
        with pytest.raises(ServiceError):
            unit(Path(data), "mailnode", "/usr/bin/python3")
    with pytest.raises(ServiceError):
        unit(Path("/srv/node"), "mailnode", "/opt/my python/bin/python3")


@pytest.fixture
def image_env(tmp_path: Path) -> dict[str, str]:
    """What the image provides, without Docker: `mailnode` on PATH and MAILNODE_HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "mailnode"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m mailnode "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               MAILNODE_HOME=str(tmp_path / "data"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return env


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_compose_run_user_add_reaches_mailnode(image_env: dict[str, str]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = dict(image_env, **compose["services"]["node-a"]["environment"],
               MAILNODE_PASSWORD="a-long-enough-password")
    # `docker compose run node-a user add alice` on a fresh volume.
    added = entrypoint(env, "user", "add", "alice")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[-1].endswith("@mailnode.invalid")
    config = load(Path(env["MAILNODE_HOME"]) / CONFIG_NAME)
    assert (config.host, config.bootstrap) == ("0.0.0.0", ("bootstrap:2700",))
    # The node exists now: not created again, and other commands reach it.
    status = entrypoint(env, "status")
    assert status.returncode == 0 and "alice" in status.stdout
    again = entrypoint(env, "user", "add", "alice")
    assert again.returncode == 1 and again.stderr.startswith("mailnode: ")


def test_restore_into_a_fresh_volume_is_not_preceded_by_init(
        image_env: dict[str, str], tmp_path: Path) -> None:
    done = entrypoint(dict(image_env, MAILNODE_BACKUP_PASSPHRASE="pw"), "restore",
                      str(tmp_path / "missing.backup"))
    assert done.returncode == 1 and "cannot read" in done.stderr
    assert not Path(image_env["MAILNODE_HOME"]).exists()


def test_no_arguments_creates_and_runs_the_node(image_env: dict[str, str]) -> None:
    ports = [free_port() for _ in range(3)]
    env = dict(image_env, MAILNODE_INIT_ARGS=(f"--smtp-port {ports[0]} --imap-port {ports[1]}"
                                              f" --p2p-port {ports[2]}"))
    proc = subprocess.Popen(["sh", str(ROOT / "docker" / "entrypoint.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        seen = []
        for line in proc.stdout:  # ends when the process does
            seen.append(line)
            if line.startswith(READY):
                break
        assert any(line.startswith(READY) and f"smtp=127.0.0.1:{ports[0]}" in line
                   for line in seen), "".join(seen)
    finally:
        proc.terminate()  # the shell exec'd mailnode: this is the node, which stops cleanly
        assert proc.wait(timeout=30) == 0
