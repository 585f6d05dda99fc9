"""``mailnode doctor``: audit a node's data dir (stopped or running) and say how to fix it.

The checks are pure functions over facts (file modes, the certificate, the running node's
status file, queue rows...) with the time passed in, so each one is tested on a deliberately
broken fact without a broken machine. ``gather`` is the only part that reads the disk or
opens sockets: it probes this node's own listeners and endpoints and, for the clock, a few
peers' transfer ports, all in parallel or with a short timeout; the database is opened
without migrating it (a migration would hide an old revision).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import imaplib
import ipaddress
import json
import shlex
import smtplib
import socket
import ssl
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailnode.addressing import advertised, unreachable
from mailnode.client_tls import TLS_NAME
from mailnode.config import DB_NAME, NODE_KEY_NAME, Config, ConfigError, is_loopback
from mailnode.logsafe import clean
from mailnode.runstate import PEERS_NAME, load_peers, read_status

BACKUP_NAME = "backup.json"
"""Written by ``mailnode backup``: ``{"last_backup": <POSIX seconds or ISO 8601>}``."""
PROBE_TIMEOUT = 3.0
CERT_RENEW_BEFORE = 30 * 86400
BACKUP_MAX_AGE = 7 * 86400
PENDING_FRIEND_AGE = 86400
STUCK_ATTEMPTS = 10
QUEUE_NEARLY_FULL = 0.9
CLOCK_AHEAD = 300
CLOCK_PEERS = 4
_ANY = {"", "0.0.0.0", "::"}
MISSING = "missing"

Endpoint = tuple[str, int]


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"  # the check could not be made; the finding says why


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was found and, unless OK, what to do about it."""

    name: str
    status: Status
    finding: str
    fix: str = ""

    def line(self) -> str:
        fix = f"  -> {self.fix}" if self.fix and self.status is not Status.OK else ""
        return f"[{self.status.value:4}] {self.name:<12} {self.finding}{fix}"


def exit_status(checks: Sequence[Check]) -> int:
    """Non-zero when something is unsafe or broken (FAIL); warnings are advice."""
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


# --- the checks: pure functions -----------------------------------------------------------


def check_modes(data_dir: Path, modes: dict[str, int | None]) -> Check:
    """``modes``: permission bits by file name in the data dir ("" is the dir itself; None:
    missing). Secrets readable by the group or others are unsafe whatever else holds."""
    name = "file modes"
    loose = [n for n, m in modes.items() if m is not None and m & 0o077]
    missing = [n for n in (NODE_KEY_NAME, DB_NAME) if modes.get(n) is None]
    if loose:
        paths = [str(data_dir / n) if n else str(data_dir) for n in loose]
        shown = ", ".join(f"{p} {modes[n]:04o}" for p, n in zip(paths, loose, strict=True))
        files = [shlex.quote(str(data_dir / n)) for n in loose if n]
        fix = "; ".join(
            ([f"chmod 700 {shlex.quote(str(data_dir))}"] if "" in loose else [])
            + ([f"chmod 600 {' '.join(files)}"] if files else []))
        return Check(name, Status.FAIL, f"open to group or others: {shown}", fix)
    if missing:
        return Check(name, Status.FAIL, f"missing: {', '.join(missing)}",
                     "restore them from a backup (a new node.key is a new node)")
    return Check(name, Status.OK, "data dir 0700, keys and database owner-only")


@dataclass(frozen=True)
class Probe:
    """What a running node's SMTP or IMAP listener said to a client on this machine."""

    protocol: str
    """smtp, imap (STARTTLS), or smtps, imaps (implicit TLS)."""
    starttls: bool = False
    auth_before_tls: bool = False
    tls_error: str | None = None
    failure: str | None = None
    """Why it did not answer at all."""
    certificate: bytes | None = None
    """The DER certificate it presented, once TLS was up."""

    @property
    def implicit(self) -> bool:
        return self.protocol.endswith("s")


def certificate_label(config: Config) -> str:
    """How the findings name the certificate the listeners use."""
    return f"tls_cert {config.tls_cert}" if config.tls_cert else TLS_NAME


def _implicit_ports(config: Config, running: dict[str, Any] | None) -> str:
    def port(name: str) -> int:
        value = running.get(name, getattr(config, name)) if running else getattr(config, name)
        return int(value)

    on = [f"{name[:-5]} {port(name)}" for name in ("smtps_port", "imaps_port") if port(name)]
    return f"implicit TLS {', '.join(on)}" if on else "implicit TLS off"


def check_listeners(config: Config, running: dict[str, Any] | None, tls_error: str | None,
                    probes: Sequence[Probe] = (), busy: Sequence[str] = (),
                    expected: bytes | None = None) -> Check:
    """Clients beyond loopback must get TLS before any password. ``tls_error``: why the
    certificate cannot be loaded; ``probes``: the running listeners' answers (STARTTLS and
    implicit TLS); ``expected``: the DER certificate they should present (the owner's
    ``tls_cert`` when set, else tls.pem; None: unknown), since a replaced file that does not
    load leaves the node serving the old one; ``busy``: for a stopped node, configured ports
    another program holds (``run`` would fail on them)."""
    name = "listeners"
    label = certificate_label(config)
    host = str(running.get("host", config.host)) if running else config.host
    p2p = str(running.get("p2p_host", config.p2p_bind)) if running else config.p2p_bind
    where = (f"smtp/imap on {host} ({_implicit_ports(config, running)}), p2p on {p2p}"
             + ("" if running else " (when running)"))
    if is_loopback(host):
        clients = "clients only from this machine"
    else:
        clients = "clients from other machines, STARTTLS required before passwords"
        if tls_error is not None:
            return Check(name, Status.FAIL, f"{where}: beyond loopback but {label} is "
                         f"unusable ({tls_error})",
                         f"move {TLS_NAME} aside and restart (a new one is made), or set "
                         "host = \"127.0.0.1\"" if not config.tls_cert else
                         "give tls_cert/tls_key a PEM certificate and its key, or empty them")
    if busy:
        return Check(name, Status.FAIL, f"{where}: `run` could not listen on "
                     f"{', '.join(busy)}", "stop the program holding the port (`ss -ltnup` "
                     "names it; or a node still starting), or set host and ports in "
                     "mailnode.toml to this machine's addresses and free ports")
    for probe in probes:
        what = probe.protocol.upper()
        if probe.failure is not None:
            return Check(name, Status.FAIL, f"{where}: the running node's {what} does not "
                         f"answer ({probe.failure})",
                         "restart the node; its log says why the listener stopped")
        if (not probe.implicit and not probe.starttls) or probe.tls_error is not None:
            why = probe.tls_error or "STARTTLS not offered"
            return Check(name, Status.FAIL, f"{where}: {what} TLS broken ({why})",
                         f"move {TLS_NAME} aside and restart the node" if not config.tls_cert
                         else "check tls_cert/tls_key (the log says why), then restart")
        if probe.auth_before_tls and not probe.implicit and not is_loopback(host):
            return Check(name, Status.FAIL, f"{where}: {what} takes passwords before TLS",
                         "set host = \"127.0.0.1\" and restart; report this as a bug")
        if expected is not None and probe.certificate not in (None, expected):
            return Check(name, Status.FAIL, f"{where}: {what} presents a certificate other "
                         f"than {label}", "restart the node to load it; if the file was "
                         "replaced and the node's log says it cannot load it, fix the "
                         "certificate and key (a just-replaced one is picked up within "
                         "seconds: run doctor again)")
    starttls = [p.protocol.upper() for p in probes if not p.implicit]
    implicit = [p.protocol.upper() for p in probes if p.implicit]
    if starttls:
        clients += f"; {' and '.join(starttls)} STARTTLS answered"
    if implicit:
        clients += f"; {' and '.join(implicit)} answered with TLS"
    if expected is not None and any(p.certificate is not None for p in probes):
        clients += f", all presenting {label}"
    if running and (host, p2p) != (config.host, config.p2p_bind):
        return Check(name, Status.WARN, f"{where}, but mailnode.toml now says "
                     f"{config.host} and {config.p2p_bind}", "restart the node to apply it")
    return Check(name, Status.OK, f"{where}: {clients}; transfers always TLS 1.3")


@dataclass(frozen=True)
class CertFacts:
    not_before: float
    not_after: float
    dns_names: tuple[str, ...]
    ip_names: tuple[str, ...]


def cert_facts(certificate: x509.Certificate) -> CertFacts:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    return CertFacts(certificate.not_valid_before_utc.timestamp(),
                     certificate.not_valid_after_utc.timestamp(), dns, ips)


def _named(cert: CertFacts, host: str) -> bool:
    try:
        return str(ipaddress.ip_address(host.strip("[]"))) in cert.ip_names
    except ValueError:
        return host.lower().rstrip(".") in cert.dns_names


def check_certificate(cert: CertFacts | str, config: Config, machine: Sequence[str],
                      now: float) -> Check:
    """``cert``: the facts of the certificate the listeners use (the owner's ``tls_cert``
    when set, else tls.pem), or why it cannot be read. ``machine``: this machine's
    addresses, which phones use when the node listens on every interface."""
    name = "certificate"
    label = certificate_label(config)
    own = bool(config.tls_cert)
    fix_new = ("renew it and replace the file (new connections pick it up, no restart)"
               if own else
               f"move {TLS_NAME} aside and restart: the node makes a new one (clients then "
               "ask once to trust its fingerprint)")
    if cert == MISSING:
        return Check(name, Status.WARN, f"{TLS_NAME} is missing: the node makes a new one at "
                     "start, and mail clients then ask again to trust it",
                     "restart the node, then accept the new fingerprint in the clients")
    if isinstance(cert, str):
        return Check(name, Status.FAIL, f"{label}: {cert}", fix_new)
    day = 86400
    if now < cert.not_before:
        return Check(name, Status.FAIL, f"{label} is not valid yet (from "
                     f"{_date(cert.not_before)}): is this machine's clock wrong?",
                     "set the clock right (timedatectl set-ntp true)")
    if now >= cert.not_after:
        return Check(name, Status.FAIL, f"{label} expired on {_date(cert.not_after)}",
                     fix_new)
    if not is_loopback(config.host) and config.host not in _ANY and \
            not _named(cert, config.host):
        return Check(name, Status.FAIL, f"{label} does not name host {config.host} "
                     "(clients connecting by that name refuse it)",
                     "use a certificate naming it" if own else fix_new)
    unnamed = [a for a in machine if not _named(cert, a)] if config.host in _ANY else []
    if unnamed:
        fix = (f"type a name it carries ({', '.join(cert.dns_names[:2]) or 'none'}) as the "
               "phone's server, resolving to this machine on your network"
               if own else
               f"set host = \"{unnamed[0]}\" in mailnode.toml (the certificate then names "
               f"it), move {TLS_NAME} aside and restart")
        return Check(name, Status.WARN, f"{label} does not name this machine's "
                     f"address(es) {', '.join(unnamed)} (phones on the LAN will complain)",
                     fix)
    left = int((cert.not_after - now) // day)
    if cert.not_after - now < CERT_RENEW_BEFORE:
        return Check(name, Status.WARN, f"{label} expires in {left} day(s)", fix_new)
    return Check(name, Status.OK, f"{label} valid until {_date(cert.not_after)}, names "
                 f"{', '.join((*cert.dns_names, *cert.ip_names)) or 'nothing'}")


DialResult = tuple[Endpoint, str | None]
"""A published endpoint and None when it answered TLS with our key, else what went wrong."""

Dialback = tuple[str, bool, str]
"""A friend's node asked to dial our endpoints: its name, whether it reached us, and what it
said (or why it could not be asked)."""


def check_endpoint(config: Config, running: dict[str, Any] | None,
                   dials: Sequence[DialResult], dialback: Dialback | None = None) -> Check:
    name = "endpoint"
    if not config.accept_inbound:
        return Check(name, Status.OK, "accept_inbound = false: peers never dial this node; "
                     "its friends hold its mail")
    if running is None:
        return Check(name, Status.SKIP, "node not running: nothing is published yet",
                     "start the node and run doctor again")
    published = [(str(h), int(p)) for h, p in running.get("endpoints", [])]
    peers = [(str(h), int(p)) for h, p in running.get("peers", [])]
    if not published:
        return Check(name, Status.WARN, "no endpoint published yet (the node just started?)",
                     "wait a minute and run doctor again")
    problems = unreachable(published, peers)
    if problems:
        return Check(name, Status.FAIL, clean("; ".join(problems), 300),
                     "set p2p_host or advertise_host in mailnode.toml and restart")
    failed = [(e, why) for e, why in dials if why is not None]
    shown = ", ".join(_hostport(e) for e in published)
    if dialback is not None:  # from outside: what peers will see
        friend, reached, said = dialback
        if reached:
            return Check(name, Status.OK, clean(f"{friend}'s node dialled {shown} from where "
                                                f"it is: {said}", 300))
        return Check(name, Status.FAIL, clean(f"{friend}'s node could not reach {shown}: "
                                              f"{said}", 300),
                     "open the p2p port (TCP and UDP) in the firewall or forward it on the "
                     "router, or set advertise_host; without it friends hold your mail")
    if failed:
        endpoint, why = failed[0]
        finding = clean(f"{_hostport(endpoint)} published but a TLS dial from this machine "
                        f"failed: {why}", 300)
        if endpoint == advertised(config, int(running.get("p2p_port", 0))):
            # A router's public address: many routers cannot loop back to it from inside.
            return Check(name, Status.WARN, finding + " (routers often cannot loop back to "
                         "their public address)", "ask a friend to connect to it, or check "
                         "the port forward")
        return Check(name, Status.FAIL, finding, "open the p2p port (TCP and UDP) in the "
                     "firewall or forward it, or set advertise_host")
    return Check(name, Status.OK, clean(f"{shown} answers TLS with this node's key "
                                        "(dialled from this machine only: with a friend, "
                                        "doctor asks its node to dial back)", 300))


def check_peers(running: dict[str, Any] | None, saved: int, bootstrap: int,
                friends: int) -> Check:
    name = "peers"
    fix = ("add a bootstrap peer in mailnode.toml, or join a friend: they run `mailnode "
           "invite`, you run `mailnode friend add TOKEN`")
    if running is not None:
        count = int(running.get("dht_peers", 0))
        if count == 0:
            return Check(name, Status.WARN, "the running node knows no DHT peer: mail to "
                         "other nodes waits in the queue", fix)
        return Check(name, Status.OK, f"{count} DHT peer(s) known")
    if saved + bootstrap + friends == 0:
        return Check(name, Status.WARN, "no saved peer, bootstrap peer or friend: the node "
                     "will start alone", fix)
    return Check(name, Status.OK, f"node stopped; it rejoins through {saved} saved peer(s), "
                 f"{bootstrap} bootstrap peer(s), {friends} friend(s)")


PeerStart = tuple[Endpoint, float]
"""A peer's transfer endpoint and when its node started, by its own clock: the transfer
certificate is made at start, valid from ``CLOCK_SKEW`` before it."""


def check_clock(starts: Sequence[PeerStart], now: float) -> Check:
    """Only a clock ahead of ours shows: a peer that started in our future. One behind is
    indistinguishable from a node that started long ago, and no protocol message carries a
    peer's time yet, so the finding says how little it proves."""
    name = "clock"
    fix = "keep NTP on here (timedatectl set-ntp true) and ask the peer's owner to do so"
    if not starts:
        return Check(name, Status.SKIP, "no peer's transfer port answered (or none known): "
                     "skew cannot be estimated", "keep NTP on: timedatectl set-ntp true")
    endpoint, started = max(starts, key=lambda s: s[1])
    ahead = started - now
    if ahead > CLOCK_AHEAD:
        return Check(name, Status.WARN, clean(f"{_hostport(endpoint)} started {_age(ahead)} "
                                              "in our future: one of the two clocks is "
                                              "wrong", 200), fix)
    return Check(name, Status.OK, f"{len(starts)} peer(s) dialled, none ahead of this clock "
                 "(one behind cannot be seen: certificates are dated at node start)")


def check_disk(free: int, queued: int | None, config: Config) -> Check:
    """``queued``: bytes in the outbound queue, None when the database cannot tell."""
    name = "disk"
    mb = 1024 * 1024
    floor = 2 * config.max_message_size  # below this the node refuses submissions
    figures = (f"{free // mb} MB free; queue " + ("unknown" if queued is None else
                                                  f"{queued // mb}") +
               f" of {config.max_queue_size // mb} MB")
    queued = queued or 0
    if free < floor:
        return Check(name, Status.FAIL, f"{figures}: below {floor // mb} MB the node refuses "
                     "new mail", "free space on the data dir's disk")
    if queued >= QUEUE_NEARLY_FULL * config.max_queue_size:
        return Check(name, Status.WARN, f"{figures}: the queue is nearly full (new mail is "
                     "refused when it is)", "`mailnode queue` shows what waits; raise "
                     "max_queue_size or bring the peers back")
    if free < config.max_queue_size - queued:
        return Check(name, Status.WARN, f"{figures}: a full queue would not fit on the disk",
                     "free space, or lower max_queue_size in mailnode.toml")
    return Check(name, Status.OK, figures)


def check_revision(current: str | None, head: str, known: bool) -> Check:
    """``known``: whether ``current`` is a revision this version has a migration for."""
    name = "database"
    if current == head:
        return Check(name, Status.OK, f"schema at the newest revision {head}")
    if current is None or not known:
        return Check(name, Status.FAIL, f"schema revision {current or 'none'} is not one this "
                     f"version knows (newest {head}): made by a newer mailnode?",
                     "run the mailnode version that made it, or restore a backup")
    return Check(name, Status.WARN, f"schema at revision {current}, newest is {head}",
                 "back up, then `mailnode run` migrates it at start")


@dataclass(frozen=True)
class Queued:
    created_at: int
    attempts: int
    last_error: str | None


def check_queue(entries: Sequence[Queued], config: Config, now: float) -> Check:
    name = "queue"
    if not entries:
        return Check(name, Status.OK, "empty")
    oldest = min(entries, key=lambda e: e.created_at)
    age = now - oldest.created_at
    tries = max(entries, key=lambda e: e.attempts)
    fix = ("`mailnode queue` shows each error; check `peers` above, then `mailnode queue "
           "retry`")
    error = f" (last error: {clean(oldest.last_error, 80)})" if oldest.last_error else ""
    if age > config.delay_notice_after:
        return Check(name, Status.WARN, f"{len(entries)} waiting; the oldest for "
                     f"{_age(age)}{error}", fix)
    if tries.attempts >= STUCK_ATTEMPTS:
        return Check(name, Status.WARN, f"{len(entries)} waiting; one tried "
                     f"{tries.attempts} times", fix)
    return Check(name, Status.OK, f"{len(entries)} waiting, the oldest for {_age(age)}")


def check_backup(text: str | None, now: float) -> Check:
    """``text``: the content of backup.json, None when there is none."""
    name = "backup"
    fix = "run `mailnode backup FILE` and keep the file on another disk"
    if text is None:
        return Check(name, Status.WARN, "never backed up: a lost disk loses keys and mail",
                     fix)
    try:
        raw = json.loads(text)["last_backup"]
        when = (float(raw) if isinstance(raw, int | float)
                else datetime.datetime.fromisoformat(str(raw)).timestamp())
    except (ValueError, KeyError, TypeError):
        return Check(name, Status.WARN, f"{BACKUP_NAME} is unreadable", fix)
    if now - when > BACKUP_MAX_AGE:
        return Check(name, Status.WARN, f"last backup {_age(now - when)} ago", fix)
    return Check(name, Status.OK, f"last backup {_age(now - when)} ago")


@dataclass(frozen=True)
class PendingFriend:
    name: str
    created_at: int
    last_error: str | None


def check_friends(pending: Sequence[PendingFriend], now: float) -> Check:
    name = "friends"
    old = [f for f in pending if now - f.created_at > PENDING_FRIEND_AGE]
    if old:
        f = old[0]
        error = f": {f.last_error}" if f.last_error else ""
        return Check(name, Status.WARN, clean(
            f"{len(old)} invite(s) accepted but not redeemed for over a day, e.g. {f.name} "
            f"({_age(now - f.created_at)}{error})", 300),
            "ask the friend whether their node runs and is reachable; `mailnode friend "
            "remove NAME` drops it")
    return Check(name, Status.OK, f"{len(pending)} pending invite(s), none older than a day"
                 if pending else "no invite waiting to be redeemed")


def _hostport(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- gathering the facts: the only I/O ----------------------------------------------------


@dataclass
class Facts:
    data_dir: Path
    config: Config | str
    modes: dict[str, int | None]
    running: dict[str, Any] | None
    tls_error: str | None = None
    cert: CertFacts | str = MISSING
    cert_der: bytes | None = None
    machine: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    dials: list[DialResult] = field(default_factory=list)
    dialback: Dialback | None = None
    starts: list[PeerStart] = field(default_factory=list)
    saved_peers: int = 0
    revision: tuple[str | None, str, bool] | str = "not checked"
    queue: list[Queued] | str = "not checked"
    queued_bytes: int = 0
    free: int = 0
    backup: str | None = None
    pending: list[PendingFriend] | str = "not checked"
    friends: int = 0


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host


def _unverified() -> ssl.SSLContext:
    """Our own listener's certificate is self-signed; the probe checks TLS works, not trust."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def probe_smtp(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> Probe:
    """EHLO, then STARTTLS, against our own SMTP listener."""
    try:
        with smtplib.SMTP(_connect_host(host), port, timeout=timeout) as smtp:
            smtp.ehlo("doctor.invalid")
            starttls, auth = smtp.has_extn("starttls"), smtp.has_extn("auth")
            if not starttls:
                return Probe("smtp", False, auth)
            try:
                smtp.starttls(context=_unverified())
            except (ssl.SSLError, smtplib.SMTPException) as exc:
                return Probe("smtp", True, auth, clean(exc, 120))
            return Probe("smtp", True, auth, certificate=_presented(smtp.sock))
    except (OSError, smtplib.SMTPException) as exc:
        return Probe("smtp", failure=clean(exc, 120))


def _presented(sock: object) -> bytes | None:
    return sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None


def probe_smtps(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> Probe:
    """A TLS handshake, then EHLO, on our own implicit-TLS SMTP listener."""
    try:
        with smtplib.SMTP_SSL(_connect_host(host), port, timeout=timeout,
                              context=_unverified()) as smtp:
            smtp.ehlo("doctor.invalid")
            return Probe("smtps", certificate=_presented(smtp.sock))
    except ssl.SSLError as exc:
        return Probe("smtps", tls_error=clean(exc, 120))
    except (OSError, smtplib.SMTPException) as exc:
        return Probe("smtps", failure=clean(exc, 120))


def probe_imaps(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> Probe:
    """A TLS handshake, then the greeting, on our own implicit-TLS IMAP listener."""
    try:
        imap = imaplib.IMAP4_SSL(_connect_host(host), port, ssl_context=_unverified(),
                                 timeout=timeout)
    except ssl.SSLError as exc:
        return Probe("imaps", tls_error=clean(exc, 120))
    except (OSError, imaplib.IMAP4.error) as exc:
        return Probe("imaps", failure=clean(exc, 120))
    try:
        return Probe("imaps", certificate=_presented(imap.sock))
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


def probe_imap(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> Probe:
    """CAPABILITY, then STARTTLS, against our own IMAP listener."""
    try:
        imap = imaplib.IMAP4(_connect_host(host), port, timeout=timeout)
    except (OSError, imaplib.IMAP4.error) as exc:
        return Probe("imap", failure=clean(exc, 120))
    try:
        caps = set(imap.capabilities)
        starttls, login = "STARTTLS" in caps, "LOGINDISABLED" not in caps
        if not starttls:
            return Probe("imap", False, login)
        try:
            imap.starttls(ssl_context=_unverified())
        except (ssl.SSLError, imaplib.IMAP4.error) as exc:
            return Probe("imap", True, login, clean(exc, 120))
        return Probe("imap", True, login, certificate=_presented(imap.sock))
    except (OSError, imaplib.IMAP4.error) as exc:
        return Probe("imap", failure=clean(exc, 120))
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


def busy_ports(config: Config) -> list[str]:
    """The configured ports another program holds (bound as the node would bind them)."""
    wanted = [("smtp", config.host, config.smtp_port, socket.SOCK_STREAM),
              ("imap", config.host, config.imap_port, socket.SOCK_STREAM),
              ("smtps", config.host, config.smtps_port, socket.SOCK_STREAM),
              ("imaps", config.host, config.imaps_port, socket.SOCK_STREAM),
              ("p2p", config.p2p_bind, config.p2p_port, socket.SOCK_STREAM),
              ("p2p/udp", config.p2p_bind, config.p2p_port, socket.SOCK_DGRAM)]
    busy = []
    for label, host, port, kind in wanted:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, kind) as sock:
                if kind == socket.SOCK_STREAM:  # as asyncio's servers do
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError as exc:
            busy.append(f"{label} {_hostport((host, port))} ({exc.strerror or exc})")
    return busy


def _transfer_certificate(endpoint: Endpoint, timeout: float) -> bytes | str:
    """The DER certificate a transfer endpoint presents (TCP + TLS 1.3), or why none."""
    from mailnode.transfer.tls import client_context

    try:
        with socket.create_connection(endpoint, timeout=timeout) as raw, \
                client_context().wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        return clean(exc, 120)
    return der or "no certificate presented"


def dial(endpoint: Endpoint, node_key: bytes, timeout: float = PROBE_TIMEOUT) -> str | None:
    """A TCP + TLS 1.3 connect to a published transfer endpoint: None when the node that
    answers is this one (its certificate carries our key), else what went wrong."""
    from mailnode.transfer.session import PinMismatchError
    from mailnode.transfer.tls import certificate_node_key

    der = _transfer_certificate(endpoint, timeout)
    if isinstance(der, str):
        return der
    try:
        presented = certificate_node_key(der)
    except PinMismatchError as exc:
        return clean(exc, 120)
    return None if presented == node_key else "another node answers there"


def peer_starts(peers: Sequence[Endpoint], timeout: float = PROBE_TIMEOUT) -> list[PeerStart]:
    """When each peer's node started by its clock, from its transfer certificate (dialled
    in parallel: a few seconds at most however many peers do not answer)."""
    from mailnode.certificates import CLOCK_SKEW

    def start(endpoint: Endpoint) -> PeerStart | None:
        der = _transfer_certificate(endpoint, timeout)
        if isinstance(der, str):
            return None
        try:
            valid_from = x509.load_der_x509_certificate(der).not_valid_before_utc
        except ValueError:
            return None
        return endpoint, (valid_from + CLOCK_SKEW).timestamp()

    if not peers:
        return []
    with ThreadPoolExecutor(max_workers=len(peers)) as pool:
        return [s for s in pool.map(start, peers) if s is not None]


def _read_tls(path: Path, key: Path) -> tuple[str | None, CertFacts | str, bytes | None]:
    """(why the listeners could not load it, its facts, its DER) for the certificate file
    the listeners use (its first certificate is the one they present)."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None, MISSING, None  # made at start, like at init
    except OSError as exc:
        return clean(exc, 120), clean(exc, 120), None
    der = None
    try:
        loaded = x509.load_pem_x509_certificate(pem)
        cert: CertFacts | str = cert_facts(loaded)
        der = loaded.public_bytes(serialization.Encoding.DER)
    except ValueError as exc:
        cert = f"no readable certificate ({clean(exc, 80)})"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path, key)
    except (ssl.SSLError, OSError) as exc:
        return f"key and certificate do not load ({clean(exc, 80)})", cert, der
    return None, cert, der


def _read_database(facts: Facts) -> None:
    """Revision, queue and pending friends, without migrating (or creating) the database."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from mailnode.store.database import MIGRATIONS_DIR, Database
    from mailnode.store.friends import FriendStore
    from mailnode.store.notify import ChangeNotifier
    from mailnode.store.sqlite import SqlStore

    path = facts.data_dir / DB_NAME
    if not path.exists():
        facts.revision = facts.queue = facts.pending = f"{DB_NAME} is missing"
        return
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None
    engine = create_engine(f"sqlite:///{path}")  # only reads; exists, so nothing is created
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:  # not SQLite, corrupt, unreadable: say so
        facts.revision = facts.queue = facts.pending = \
            f"cannot read {DB_NAME}: {clean(exc, 120)}"
        return
    finally:
        engine.dispose()
    known = current is not None and current in {r.revision for r in script.walk_revisions()}
    facts.revision = (current, head, known)
    if current != head:
        facts.queue = facts.pending = "the schema is not current"
        return
    db = Database(path)
    try:
        store = SqlStore(db, ChangeNotifier())

        async def read() -> None:
            entries = await store.queue_entries()
            facts.queue = [Queued(e.created_at, e.attempts, e.last_error) for e in entries]
            facts.queued_bytes = await store.queued_bytes()
            friends = await FriendStore(db).list_friends()
            facts.friends = len(friends)
            facts.pending = [PendingFriend(f.name, f.created_at, f.last_error)
                             for f in friends if f.pending]
            facts.dialback = await _ask_dial_back(facts, FriendStore(db),
                                                  [f for f in friends if not f.pending])
        asyncio.run(read())
    finally:
        db.close()


async def _ask_dial_back(facts: Facts, store: Any, friends: Sequence[Any]) -> Dialback | None:
    """Ask a friend's node (the first that answers) to dial our published endpoints."""
    from mailnode.friends.service import FriendsService, no_mail, node_name
    from mailnode.keys import load_node_key
    from mailnode.transfer import TransferError, Verdict

    running, config = facts.running, facts.config
    if running is None or not isinstance(config, Config) or not config.accept_inbound:
        return None
    published = tuple((str(h), int(p)) for h, p in running.get("endpoints", []))[:4]
    callers = [f for f in friends if f.endpoints]
    if not published or not callers:
        return None

    service = FriendsService(store, load_node_key(facts.data_dir / NODE_KEY_NAME),
                             node_name(config.node_name), accept=no_mail,
                             endpoints=lambda: list(published), inbound=True,
                             max_message_size=0, timeout=PROBE_TIMEOUT)
    for friend in callers[:2]:
        try:
            outcome = await asyncio.wait_for(service.ask_dial_back(friend, published),
                                             PROBE_TIMEOUT * 3)
        except (TransferError, OSError):  # its node is away: try another friend
            continue
        if outcome.verdict is Verdict.PERMANENT:  # it does not know us (any more)
            continue
        return (friend.name, outcome.verdict is Verdict.ACCEPTED, outcome.reason)
    return None  # no friend could be asked: that says nothing about our reachability


def gather(data_dir: Path, config: Config | str) -> Facts:
    """Every fact the checks need; modes first, before anything opens the database."""
    from mailnode.delivery.submit import free_bytes

    names = ["", NODE_KEY_NAME, TLS_NAME, DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"]
    modes = {n: _mode(data_dir / n) for n in names}
    facts = Facts(data_dir, config, modes, read_status(data_dir))
    from mailnode.client_tls import certificate_files, lan_addresses

    files = (certificate_files(config, data_dir) if isinstance(config, Config)
             else (data_dir / TLS_NAME, data_dir / TLS_NAME))
    facts.tls_error, facts.cert, facts.cert_der = _read_tls(*files)
    if isinstance(config, Config) and config.host in _ANY:
        # of the bound family only: a listener on 0.0.0.0 serves no IPv6 address
        facts.machine = lan_addresses(config.host)
    facts.saved_peers = len(load_peers(data_dir)) if (data_dir / PEERS_NAME).exists() else 0
    running = facts.running
    known = load_peers(data_dir)
    if running is not None:
        try:
            host, key = str(running["host"]), bytes.fromhex(str(running["node_key"]))
            ports = int(running["smtp_port"]), int(running["imap_port"])
            implicit = [(int(running.get(name, getattr(config, name, 0))), probe)
                        for name, probe in (("smtps_port", probe_smtps),
                                            ("imaps_port", probe_imaps))]
            published = [(str(h), int(p)) for h, p in running.get("endpoints", [])]
            known = [(str(h), int(p)) for h, p in running.get("peers", [])]
        except (KeyError, ValueError, TypeError):  # written by another version
            facts.running = None
        else:
            facts.probes = [probe_smtp(host, ports[0]), probe_imap(host, ports[1]),
                            *(probe(host, port) for port, probe in implicit if port)]
            with ThreadPoolExecutor(max_workers=3) as pool:
                facts.dials = list(zip(published[:3], pool.map(
                    lambda e: dial(e, key), published[:3]), strict=True))
    facts.starts = peer_starts([p for p in known if not is_loopback(p[0])][:CLOCK_PEERS]
                               or known[:CLOCK_PEERS])
    if facts.running is None and isinstance(config, Config):
        facts.busy = busy_ports(config)
    _read_database(facts)
    try:
        facts.free = free_bytes(data_dir)
    except OSError:
        facts.free = 0
    try:
        facts.backup = (data_dir / BACKUP_NAME).read_text()
    except FileNotFoundError:
        facts.backup = None
    except OSError as exc:
        facts.backup = f"unreadable: {exc}"
    return facts


def _skip(name: str, why: str) -> Check:
    return Check(name, Status.SKIP, why)


def audit(facts: Facts, now: float) -> list[Check]:
    """The checklist, one entry per check, in a fixed order."""
    checks = [check_modes(facts.data_dir, facts.modes)]
    config = facts.config
    if isinstance(config, str):
        checks.append(Check("config", Status.FAIL, config, "fix mailnode.toml as the "
                            "message says"))
        why = "mailnode.toml is invalid"
        checks += [_skip(n, why) for n in ("listeners", "certificate", "endpoint")]
    else:
        checks.append(Check("config", Status.OK, "mailnode.toml valid"))
        checks += [check_listeners(config, facts.running, facts.tls_error, facts.probes,
                                   facts.busy, facts.cert_der),
                   check_certificate(facts.cert, config, facts.machine, now),
                   check_endpoint(config, facts.running, facts.dials, facts.dialback)]
    bootstrap = 0 if isinstance(config, str) else len(config.bootstrap)
    checks += [check_peers(facts.running, facts.saved_peers, bootstrap, facts.friends),
               check_clock(facts.starts, now)]
    if isinstance(facts.revision, str):
        checks.append(Check("database", Status.FAIL, facts.revision,
                            "restore the database from a backup"))
    else:
        checks.append(check_revision(*facts.revision))
    if isinstance(config, str):
        checks += [_skip("disk", "mailnode.toml is invalid"),
                   _skip("queue", "mailnode.toml is invalid")]
    else:
        queue = facts.queue
        checks += [check_disk(facts.free, None if isinstance(queue, str) else
                              facts.queued_bytes, config),
                   _skip("queue", queue) if isinstance(queue, str)
                   else check_queue(queue, config, now)]
    checks.append(check_backup(facts.backup, now))
    checks.append(_skip("friends", facts.pending) if isinstance(facts.pending, str)
                  else check_friends(facts.pending, now))
    return checks


def load_config(path: Path) -> Config | str:
    from mailnode.config import load

    try:
        return load(path)
    except ConfigError as exc:
        return str(exc)


def doctor(data_dir: Path, now: float) -> list[Check]:
    from mailnode.config import CONFIG_NAME

    return audit(gather(data_dir, load_config(data_dir / CONFIG_NAME)), now)

