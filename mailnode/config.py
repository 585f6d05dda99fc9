"""``mailnode.toml``: every setting, its default and its meaning, in one place.

The same table drives the file ``init`` writes, the loader's validation and the README.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dht.limits import MAX_RECORD_TTL

CONFIG_NAME = "mailnode.toml"
DB_NAME = "mailnode.db"
NODE_KEY_NAME = "node.key"


class ConfigError(ValueError):
    """A setting that is missing, mistyped or unsafe; the message says what to change."""


@dataclass(frozen=True)
class Config:
    """Every setting of mailnode.toml; fields are documented once, in ``SECTIONS``."""

    # [network]
    host: str = "127.0.0.1"
    p2p_host: str = ""
    advertise_host: str = ""
    smtp_port: int = 2587
    imap_port: int = 2143
    smtps_port: int = 2465
    imaps_port: int = 2993
    p2p_port: int = 2700
    bootstrap: tuple[str, ...] = ()
    node_name: str = ""
    accept_inbound: bool = True
    # [tls]
    tls_cert: str = ""
    tls_key: str = ""
    # [limits]
    max_message_size: int = 25 * 1024 * 1024
    max_connections: int = 1000
    max_peer_connections: int = 64
    max_connections_per_source: int = 20
    max_sessions_per_user: int = 20
    login_timeout: float = 60.0
    failed_login_delay: float = 1.0
    login_lockout_after: int = 10
    login_lockout: float = 900.0
    max_messages_per_minute: int = 60
    max_inbound_per_minute: int = 120
    user_quota_mb: int = 0
    # [queue]
    retry_initial: float = 60.0
    retry_max: float = 3600.0
    give_up_after: float = 5 * 86400.0
    delay_notice_after: float = 4 * 3600.0
    transfer_timeout: float = 60.0
    max_queue_size: int = 1 << 30
    # [dht]
    record_ttl: float = 86400.0
    republish_interval: float = 3600.0
    # [logs]
    log_format: str = "text"

    @property
    def p2p_bind(self) -> str:
        return self.p2p_host or self.host

    def bootstrap_peers(self) -> list[tuple[str, int]]:
        return [parse_hostport(b) for b in self.bootstrap]


SECTIONS: dict[str, list[tuple[str, str]]] = {
    "network": [
        ("host", "address the listeners bind to (all of them unless p2p_host is set); "
                 "127.0.0.1 keeps the node private to this machine"),
        ("p2p_host", "address the DHT and transfer listeners bind to; empty means host. Set "
                     "0.0.0.0 to federate with other machines while SMTP and IMAP stay on "
                     "host"),
        ("advertise_host", "address (HOST or HOST:PORT, e.g. a forwarded port) published in "
                           "the DHT for peers to reach this node's transfer port; empty "
                           "means p2p_host, or when that is 0.0.0.0 the address peers are "
                           "routed to (never a loopback one for peers elsewhere)"),
        ("smtp_port", "SMTP submission port for your mail client (AUTH required)"),
        ("imap_port", "IMAP port for your mail client"),
        ("smtps_port", "SMTP submission port with implicit TLS (RFC 8314, like 465) for "
                       "clients beyond loopback, e.g. a phone; 0 disables it"),
        ("imaps_port", "IMAP port with implicit TLS (like 993); 0 disables it"),
        ("p2p_port", "DHT port (UDP); mail transfer between nodes uses TCP on the same number"),
        ("bootstrap", "other nodes' DHT addresses as \"host:port\" strings, to join the network"),
        ("node_name", "this node's name as friends see it (a-z, 0-9, - _ ., at most 32); "
                      "empty means the machine's host name"),
        ("accept_inbound", "false when other machines cannot connect to this node (behind NAT "
                           "without a port forward): its records say so, peers never dial it, "
                           "and it fetches its mail from its friends' nodes"),
    ],
    "tls": [
        ("tls_cert", "your own certificate for SMTP and IMAP (PEM file, chain included; "
                     "relative to the data directory); empty means the node's self-signed "
                     "tls.pem. Replaced files are picked up by new connections, no restart"),
        ("tls_key", "the private key of tls_cert (PEM file); empty means tls_cert holds it"),
    ],
    "limits": [
        ("max_message_size", "largest message accepted, in bytes (SMTP SIZE, IMAP APPEND, "
                             "transfer)"),
        ("max_connections", "simultaneous connections to SMTP and to IMAP (each, its "
                            "implicit-TLS port included); when full, "
                            "the oldest connection that has not logged in (and is more than "
                            "3 s old) is closed to make room"),
        ("max_peer_connections", "simultaneous connections from other nodes to the transfer "
                                 "port (each TLS connection holds about 300 KiB of buffers)"),
        ("max_connections_per_source", "simultaneous connections per listener from one "
                                       "address (IPv6: one /64) that have not logged in "
                                       "(transfer: all of them)"),
        ("max_sessions_per_user", "simultaneous sessions of one user per listener (transfer: "
                                  "of one peer node)"),
        ("login_timeout", "seconds a connection has to log in (transfer: TLS and AUTH), "
                          "however busily it sends; then it is closed"),
        ("failed_login_delay", "seconds an address that failed a login waits before its next "
                               "attempt is checked; doubles with every further failure "
                               "(at most 30)"),
        ("login_lockout_after", "failed logins after which an address is refused unchecked "
                                "for login_lockout seconds; an account failed that often "
                                "refuses the addresses that failed on it (only those)"),
        ("login_lockout", "seconds a lockout lasts after the last failure; failures are "
                          "forgotten after the same time"),
        ("max_messages_per_minute", "messages a user may submit per minute (bursts up to the "
                                    "same number); more are refused with a temporary error"),
        ("max_inbound_per_minute", "messages other nodes at one address (IPv6: one /64) may "
                                   "deliver per minute (bursts up to the same number); more "
                                   "are told to retry later"),
        ("user_quota_mb", "MiB of mail each user may keep (IMAP QUOTA); an APPEND or COPY past "
                          "it is refused with OVERQUOTA and mail from other nodes is deferred; "
                          "0 means no limit"),
    ],
    "queue": [
        ("retry_initial", "seconds before the first retry of an undelivered message; "
                          "doubles every attempt"),
        ("retry_max", "longest wait between two retries, in seconds"),
        ("give_up_after", "seconds after which an undelivered message is returned to its "
                          "sender with a delivery status notification"),
        ("delay_notice_after", "seconds after which the sender is told, once, that a message "
                               "is still waiting for its recipient's node (a \"delayed\" "
                               "delivery status notification)"),
        ("transfer_timeout", "seconds a node-to-node transfer may take before it is retried"),
        ("max_queue_size", "bytes of outbound mail the queue may hold; when full (or when the "
                           "data directory's disk has less than twice max_message_size free) "
                           "submission is refused at once with 452 4.3.1"),
    ],
    "dht": [
        ("record_ttl", "seconds a published address record stays valid"),
        ("republish_interval", "seconds between republications of this node's records"),
    ],
    "logs": [
        ("log_format", "\"text\" (one line per event) or \"json\" (one JSON object per "
                       "line), on the terminal and in mailnode.log in the data directory "
                       "(rotated at 10 MB, 5 old files kept)"),
    ],
}

_FIELDS = {f.name: f for f in fields(Config)}


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(config: Config) -> str:
    """The commented TOML that ``init`` writes."""
    lines = ["# mailnode configuration. Every setting is shown with its current value.",
             "# Edit, then restart the node. Documentation: README.md, section Configuration.",
             ""]
    for section, items in SECTIONS.items():
        lines.append(f"[{section}]")
        for name, doc in items:
            lines.append(f"# {doc}")
            lines.append(f"{name} = {_toml_value(getattr(config, name))}")
        lines.append("")
    return "\n".join(lines)


def _coerce(name: str, value: Any) -> Any:
    default = getattr(Config(), name)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings")
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        kind = {bool: "true or false", int: "an integer", float: "a number",
                str: "a string"}[type(default)]
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return value


def validate(config: Config) -> Config:
    for port_name in ("smtp_port", "imap_port", "smtps_port", "imaps_port", "p2p_port"):
        port = getattr(config, port_name)
        if not 0 <= port < 65536:
            raise ConfigError(f"{port_name} {port} is not a port number")
    _distinct_ports(config)
    for peer in config.bootstrap:
        parse_hostport(peer)
    if config.advertise_host.count(":") == 1 or config.advertise_host.startswith("["):
        parse_hostport(config.advertise_host)  # HOST:PORT must have a valid port
    for name in ("max_connections", "max_peer_connections", "max_connections_per_source",
                 "max_sessions_per_user", "login_lockout_after"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if config.login_timeout <= 0 or config.login_lockout <= 0 or config.failed_login_delay < 0:
        raise ConfigError("login_timeout and login_lockout must be positive, "
                          "failed_login_delay not negative")
    for name in ("max_messages_per_minute", "max_inbound_per_minute"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if config.user_quota_mb < 0:
        raise ConfigError("user_quota_mb must not be negative (0: no limit)")
    if config.max_queue_size < 1:
        raise ConfigError("max_queue_size must be at least 1")
    if config.max_message_size < 1024:
        raise ConfigError("max_message_size must be at least 1024 bytes")
    if config.retry_initial <= 0 or config.retry_max < config.retry_initial:
        raise ConfigError("retry_initial must be positive and no larger than retry_max")
    if config.record_ttl > MAX_RECORD_TTL:
        raise ConfigError(f"record_ttl may be at most {MAX_RECORD_TTL} seconds: DHT nodes "
                          "refuse records that expire later")
    if config.node_name and not re.fullmatch(r"[a-z0-9_.-]{1,32}", config.node_name):
        raise ConfigError("node_name may only hold a-z, 0-9, '-', '_', '.' (at most 32)")
    if config.log_format not in ("text", "json"):
        raise ConfigError("log_format must be \"text\" or \"json\"")
    if config.republish_interval >= config.record_ttl:
        raise ConfigError("republish_interval must be shorter than record_ttl, or records "
                          "expire before they are renewed")
    return config


def _distinct_ports(config: Config) -> None:
    """Two listeners on one TCP port fail at start with "address in use", which reads as
    another program's fault; say here which settings collide (0 picks a free port)."""
    def overlap(a: str, b: str) -> bool:
        return a == b or {a, b} & {"0.0.0.0", "::", ""} != set()
    listeners = [("smtp_port", config.smtp_port, config.host),
                 ("imap_port", config.imap_port, config.host),
                 ("smtps_port", config.smtps_port, config.host),
                 ("imaps_port", config.imaps_port, config.host),
                 ("p2p_port", config.p2p_port, config.p2p_bind)]
    for i, (name, port, host) in enumerate(listeners):
        for other, other_port, other_host in listeners[i + 1:]:
            if port and port == other_port and overlap(host, other_host):
                raise ConfigError(f"{name} and {other} are both {port}: each listener needs "
                                  "its own port; change one (--smtp-port, --imap-port, "
                                  "--smtps-port, --imaps-port, --p2p-port, or in "
                                  "mailnode.toml)")


def load(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist; run `mailnode init` first") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for section, table in raw.items():
        known = {name for name, _ in SECTIONS.get(section, [])}
        if not known:
            raise ConfigError(f"{path}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for name, value in table.items():
            if name not in known:
                raise ConfigError(f"{path}: unknown setting {section}.{name}")
            values[name] = _coerce(name, value)
    config = validate(replace(Config(), **values))
    check_tls_files(config, path.parent)
    return config


def tls_files(config: Config, data_dir: Path) -> tuple[Path, Path] | None:
    """The owner's certificate and key files (relative paths are in the data directory), or
    None when the node uses its own self-signed certificate."""
    if not config.tls_cert:
        return None
    cert = data_dir / Path(config.tls_cert).expanduser()
    key = data_dir / Path(config.tls_key).expanduser() if config.tls_key else cert
    return cert, key


def check_tls_files(config: Config, data_dir: Path) -> None:
    """Refuse, at load, a certificate the listeners could not use: a typo would otherwise
    only show as failed handshakes on the owner's phone."""
    if config.tls_key and not config.tls_cert:
        raise ConfigError("tls_key is set but tls_cert is not: set tls_cert too")
    files = tls_files(config, data_dir)
    if files is None:
        return
    for name, path in zip(("tls_cert", "tls_key"), files, strict=True):
        if not path.is_file():
            raise ConfigError(f"{name} {path} does not exist or is not a file; fix the path "
                              "or empty the setting to use the node's own certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files[0], files[1])
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ConfigError(f"tls_cert {files[0]} with tls_key {files[1]} cannot be used "
                          f"({reason}): give a PEM certificate and its matching private key"
                          ) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_data_dir() -> Path:
    """``$MAILNODE_HOME``, else the XDG data directory, else ``~/.local/share/mailnode``."""
    if env := os.environ.get("MAILNODE_HOME"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mailnode"
