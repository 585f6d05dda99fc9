"""TLS 1.3 for node-to-node transfer: self-signed node certificates and key pinning.

Trust does not come from a CA but from the DHT: a user's record names the node key that serves
them, and the client accepts the connection only if the server certificate carries that exact
Ed25519 key. TLS 1.3's CertificateVerify proves the server holds the matching private key, so
the pin alone authenticates the server. (Clients authenticate inside the channel; see
``session.py``.)
"""

from __future__ import annotations

import datetime
import hmac
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from crypto.keys import Identity
from mailnode.certificates import self_signed
from mailnode.transfer.session import PinMismatchError

CERTIFICATE_VALIDITY = datetime.timedelta(days=365 * 30)
"""Nobody checks the dates (the pin is the trust anchor), so they must never get in the way."""


def node_certificate(identity: Identity, now: float) -> bytes:
    """A PEM certificate for the node key, self-signed by that key.

    ``now`` is a POSIX timestamp passed in so certificate building stays free of clock reads.
    """
    key = Ed25519PrivateKey.from_private_bytes(identity.seed)
    certificate = self_signed(key, "mailnode transfer node", now, CERTIFICATE_VALIDITY)
    return certificate.public_bytes(serialization.Encoding.PEM)


def server_context(identity: Identity, now: float) -> ssl.SSLContext:
    """A TLS 1.3-only server context presenting the node certificate.

    The stdlib can only load keys from files, so the key goes through a private temporary
    directory, encrypted under a one-time password, and is deleted right after loading.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_NONE  # clients prove their key inside the channel
    context.num_tickets = 0  # no resumption: every connection re-authenticates
    password = os.urandom(32).hex().encode("ascii")
    key_pem = Ed25519PrivateKey.from_private_bytes(identity.seed).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="mailnode-tls-") as directory:
        path = os.path.join(directory, "node.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(node_certificate(identity, now) + key_pem)
        context.load_cert_chain(path, password=password)
    return context


def client_context() -> ssl.SSLContext:
    """A TLS 1.3-only client context without CA checks: ``check_pin`` replaces them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def certificate_node_key(der: bytes) -> bytes:
    """The raw Ed25519 public key of a DER certificate; PinMismatchError if it has none."""
    try:
        public_key = x509.load_der_x509_certificate(der).public_key()
    except ValueError as exc:
        raise PinMismatchError("server certificate cannot be parsed") from exc
    if not isinstance(public_key, Ed25519PublicKey):
        raise PinMismatchError("server certificate does not carry an Ed25519 key")
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, node_key: bytes) -> None:
    """Raise PinMismatchError unless the handshake's server certificate carries ``node_key``."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PinMismatchError("server presented no certificate")
    presented = certificate_node_key(der)
    if not hmac.compare_digest(presented, node_key):
        raise PinMismatchError(
            f"server key {presented[:8].hex()}… is not the pinned {node_key[:8].hex()}…"
        )
