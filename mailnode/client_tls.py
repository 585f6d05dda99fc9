"""TLS for mail clients: STARTTLS and implicit TLS on SMTP and IMAP.

The node makes a self-signed certificate at init (``tls.pem``, key and certificate, mode
0600) naming every name and address a client on this machine or its LAN may use to reach it.
Mail clients show its fingerprint once and remember it. The owner may instead give their own
certificate (``tls_cert`` / ``tls_key``); replaced files are picked up by new handshakes, so
a renewed certificate needs no restart. When the node listens beyond loopback, both protocols
refuse to take a password outside TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailnode.addressing import route_from
from mailnode.config import Config, tls_files
from mailnode.logsafe import clean

if TYPE_CHECKING:  # cryptography is imported where a certificate is made or read: a
    from cryptography import x509  # serving node whose tls.pem exists never loads it

log = logging.getLogger(__name__)

TLS_NAME = "tls.pem"
VALIDITY = datetime.timedelta(days=3650)
_ANY = {"", "0.0.0.0", "::"}
# Documentation addresses (RFC 5737 / 3849): asking the routing table for them tells the
# address of the default route without sending anything.
_ELSEWHERE = ("192.0.2.1", "2001:db8::1")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class Machine:
    """What this machine is called and where clients beyond it reach it."""

    names: tuple[str, ...]
    addresses: tuple[str, ...]


def lan_addresses(host: str) -> list[str]:
    """The addresses clients elsewhere reach the listeners at: the bound one when specific,
    else (bound to every interface) those of the routes out of this machine, of the family
    the listeners are bound to."""
    if host not in _ANY:
        return [host]
    # asyncio binds 0.0.0.0 to IPv4 only and :: to IPv6 only (V6ONLY); "" to both.
    targets = {"0.0.0.0": _ELSEWHERE[:1], "::": _ELSEWHERE[1:]}.get(host, _ELSEWHERE)
    found = []
    for target in targets:
        local = route_from(target)
        if local is not None and local not in _ANY and not ipaddress.ip_address(
                local).is_loopback and local not in found:
            found.append(local)
    return found


def this_machine(host: str) -> Machine:
    """The host name, its fully qualified form and the LAN addresses (see lan_addresses)."""
    names = []
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names:
            names.append(name)
    return Machine(tuple(names), tuple(lan_addresses(host)))


def alt_names(host: str, machine: Machine) -> list[x509.GeneralName]:
    """localhost, the loopback addresses, the configured host if specific, and the machine's
    names and addresses: whatever a client puts in its server field, the name matches."""
    from cryptography import x509

    found: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    for text in (host, *machine.names, *machine.addresses):
        name: x509.GeneralName
        try:
            address = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            if not _DNS_NAME.match(text):
                continue  # not a name a client could type, nor one a certificate may carry
            name = x509.DNSName(text.lower())
        else:
            if address.is_unspecified:
                continue
            name = x509.IPAddress(address)
        if name not in found:
            found.append(name)
    return found


def ensure_certificate(data_dir: Path, host: str, now: float,
                       machine: Machine | None = None) -> Path:
    """Create ``tls.pem`` if it is missing (ECDSA P-256: every mail client accepts it)."""
    path = data_dir / TLS_NAME
    if path.exists():
        return path
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from mailnode.certificates import self_signed

    key = ec.generate_private_key(ec.SECP256R1())
    names = alt_names(host, machine if machine is not None else this_machine(host))
    certificate = self_signed(key, "mailnode", now, VALIDITY, names)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem += certificate.public_bytes(serialization.Encoding.PEM)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def certificate_files(config: Config, data_dir: Path) -> tuple[Path, Path]:
    """(certificate, key) the listeners use: the owner's, else the node's ``tls.pem``."""
    return tls_files(config, data_dir) or (data_dir / TLS_NAME, data_dir / TLS_NAME)


def server_context(path: Path, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(path, key)
    return context


def _stamp(paths: Iterable[Path]) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in map(os.stat, paths))
    except OSError:
        return None


class ReloadingContext(ssl.SSLContext):
    """A server context whose certificate follows its files.

    asyncio makes every TLS connection (implicit or STARTTLS, SMTP and IMAP) through
    ``wrap_bio``; here that first checks, at most every ``check_every`` seconds, whether the
    files changed, and hands the handshake to a context loaded from the newest files that
    load. Connections already open keep their certificate; a half-replaced pair (new
    certificate, old key) is skipped until it matches.
    """

    def __new__(cls, cert: Path, key: Path, *, check_every: float = 2.0) -> ReloadingContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, cert: Path, key: Path, *, check_every: float = 2.0) -> None:
        self.files = (cert, key)
        self.check_every = check_every
        self._stamp = _stamp(self.files)
        self.current = server_context(cert, key)
        self._checked = time.monotonic()
        self._failed: object = None

    def refresh(self, now: float) -> bool:
        """Load the files again if they changed; True when the certificate was replaced."""
        if now - self._checked < self.check_every:
            return False
        self._checked = now
        stamp = _stamp(self.files)
        if stamp is None or stamp == self._stamp or stamp == self._failed:
            return False
        try:
            self.current = server_context(*self.files)
        except (OSError, ssl.SSLError) as exc:
            self._failed = stamp
            log.warning("cannot load the changed TLS certificate %s (%s); still using the "
                        "previous one", self.files[0], clean(exc))
            return False
        self._stamp = stamp
        log.info("TLS certificate %s reloaded", self.files[0])
        return True

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        self.refresh(time.monotonic())
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname,
                                     session)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.refresh(time.monotonic())
        return self.current.wrap_socket(*args, **kwargs)


def listener_context(config: Config, data_dir: Path) -> ReloadingContext:
    return ReloadingContext(*certificate_files(config, data_dir))


def fingerprint(path: Path) -> str:
    """SHA-256 fingerprint, as mail clients show it when asked to trust the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
