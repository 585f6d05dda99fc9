"""The README, docker-compose.yml and Dockerfile agree with the code they describe."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import yaml

from mailnode.cli import build_parser
from mailnode.config import SECTIONS, Config, _toml_value

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    defaults = Config()
    for items in SECTIONS.values():
        for name, _ in items:
            value = _toml_value(getattr(defaults, name))
            assert f"| `{name}` | `{value}` |" in readme, name


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = "pip install -q -e '.[test]' && pytest -n auto"
    assert command in readme
    assert command in (ROOT / ".ci" / "run").read_text()


def _invocations(service: dict[str, object]) -> list[list[str]]:
    """What the image's entrypoint runs for ``docker compose up``: init (on first start,
    with MAILNODE_INIT_ARGS) and the default command, run."""
    init_args = service["environment"]["MAILNODE_INIT_ARGS"]  # type: ignore[index]
    assert "command" not in service and "entrypoint" not in service  # the image's own
    return [["init", *shlex.split(init_args)], ["run"]]


def test_compose_commands_parse_with_the_cli_and_ports_agree() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = set(re.findall(r"(\d+)/(tcp|udp)", dockerfile))
    services = compose["services"]
    assert len(services) == 3
    p2p_ports = {}
    for name, service in services.items():
        invocations = _invocations(service)
        commands = [build_parser().parse_args(argv) for argv in invocations]
        assert [c.command for c in commands] == ["init", "run"], name
        init = commands[0]
        assert init.host == "0.0.0.0"  # inside the container; only loopback is published
        p2p_ports[name] = init.p2p_port
        assert {(str(init.p2p_port), "udp"), (str(init.p2p_port), "tcp")} <= exposed
        for mapping in service.get("ports", []):
            host_ip, _, container = mapping.split(":")
            assert host_ip == "127.0.0.1"
            assert int(container) in (init.smtp_port, init.imap_port)
            assert (container, "tcp") in exposed
        service["_bootstrap"] = init.bootstrap
    for name, service in services.items():
        for peer in service["_bootstrap"]:
            host, port = peer.split(":")
            assert host in services and int(port) == p2p_ports[host], (name, peer)


def test_dockerfile_installs_every_package_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile
    # Arguments reach `mailnode` through the entrypoint script (tests/ops/test_service.py
    # runs it): `docker compose run node-a user add alice` is `mailnode user add alice`.
    assert "COPY docker/entrypoint.sh /usr/local/bin/mailnode-entrypoint" in dockerfile
    assert 'ENTRYPOINT ["sh", "/usr/local/bin/mailnode-entrypoint"]' in dockerfile
    assert 'CMD ["run"]' in dockerfile
    assert (ROOT / "docker" / "entrypoint.sh").read_text().rstrip().endswith(
        'exec mailnode "$@"')
    assert pyproject["project"]["scripts"]["mailnode"] == "mailnode.cli:main"
    assert "pip install --no-cache-dir ." in dockerfile
