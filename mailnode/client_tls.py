"""TLS for mail clients: STARTTLS on SMTP and IMAP with a self-signed certificate.

The certificate lives in the data directory (``tls.pem``, key and certificate, mode 0600).
Mail clients show its fingerprint once and remember it. When the node listens beyond
loopback, both protocols refuse to take a password before STARTTLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailnode.certificates import self_signed

TLS_NAME = "tls.pem"
VALIDITY = datetime.timedelta(days=3650)


def _alt_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    else:
        if not address.is_loopback and not address.is_unspecified:
            names.append(x509.IPAddress(address))
    return names


def ensure_certificate(data_dir: Path, host: str, now: float) -> Path:
    """Create ``tls.pem`` if it is missing (ECDSA P-256: every mail client accepts it)."""
    path = data_dir / TLS_NAME
    if path.exists():
        return path
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(key, "mailnode", now, VALIDITY, _alt_names(host))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem += certificate.public_bytes(serialization.Encoding.PEM)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def server_context(path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(path)
    return context


def fingerprint(path: Path) -> str:
    """SHA-256 fingerprint, as mail clients show it when asked to trust the certificate."""
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
