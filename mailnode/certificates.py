"""Self-signed X.509 certificates, for node transfer (Ed25519) and mail clients (ECDSA)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported where used: a serving node does not load it
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

CLOCK_SKEW = datetime.timedelta(days=1)


def self_signed(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, common_name: str,
                now: float, validity: datetime.timedelta,
                alt_names: list[x509.GeneralName] | None = None) -> x509.Certificate:
    """A leaf certificate signed by its own key, valid from a day before ``now``.

    ``now`` is passed in (POSIX seconds) so building certificates reads no clock.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issued = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued - CLOCK_SKEW)
        .not_valid_after(issued + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    # Ed25519 signs without a separate hash; ECDSA needs one.
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)
