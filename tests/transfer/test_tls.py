"""Node certificates and the pin check, without sockets."""

from __future__ import annotations

import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.keys import Identity
from mailnode.certificates import CLOCK_SKEW
from mailnode.transfer.session import PinMismatchError
from mailnode.transfer.tls import (
    CERTIFICATE_VALIDITY,
    COMMON_NAME,
    _private_key_pem,
    certificate_node_key,
    check_pin,
    client_context,
    node_certificate,
    server_context,
)

NOW = 1_750_000_000.0


def test_certificate_carries_the_node_key() -> None:
    identity = Identity.generate()
    cert = x509.load_pem_x509_certificate(node_certificate(identity, NOW))
    der = cert.public_bytes(encoding=Encoding.DER)
    assert certificate_node_key(der) == identity.verify_key
    assert cert.not_valid_before_utc.timestamp() < NOW < cert.not_valid_after_utc.timestamp()
    assert (cert.not_valid_after_utc.timestamp() - NOW) > 20 * 365 * 86400


def test_certificate_is_what_x509_says_a_self_signed_ed25519_leaf_is() -> None:
    """Encoded by hand (no cryptography in a serving node): cryptography's strict DER parser
    reads every field back, and the signature verifies under the node key."""
    identity = Identity.generate()
    cert = x509.load_pem_x509_certificate(node_certificate(identity, NOW))
    assert cert.version is x509.Version.v3
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    assert cert.subject == cert.issuer == name
    assert cert.serial_number > 0
    [extension] = cert.extensions
    assert extension.critical
    assert extension.value == x509.BasicConstraints(ca=False, path_length=None)
    assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ED25519
    public = cert.public_key()
    assert isinstance(public, Ed25519PublicKey)
    public.verify(cert.signature, cert.tbs_certificate_bytes)  # raises if it does not
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw) == identity.verify_key


@settings(max_examples=50, deadline=None)
@given(now=st.one_of(st.floats(min_value=86_400, max_value=4_000_000_000),
                     st.integers(2_524_608_000 - 40 * 86_400, 2_524_608_000 + 40 * 86_400)
                     .map(float)))  # around 2050-01-01, where UTCTime gives way
def test_certificate_validity_from_any_time(now: float) -> None:
    cert = x509.load_pem_x509_certificate(node_certificate(Identity.generate(), now))
    issued = datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC)
    assert cert.not_valid_before_utc == issued - CLOCK_SKEW
    assert cert.not_valid_after_utc == issued + CERTIFICATE_VALIDITY


def test_private_key_is_the_node_seed() -> None:
    identity = Identity.generate()
    key = load_pem_private_key(_private_key_pem(identity), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == identity.verify_key


def test_certificate_is_deterministic_in_key_not_in_serial() -> None:
    identity = Identity.generate()
    a = x509.load_pem_x509_certificate(node_certificate(identity, NOW))
    b = x509.load_pem_x509_certificate(node_certificate(identity, NOW))
    assert a.public_key() == b.public_key()
    assert a.serial_number != b.serial_number


def test_non_ed25519_certificate_is_a_pin_mismatch() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    now = datetime.datetime.fromtimestamp(NOW, tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(PinMismatchError):
        certificate_node_key(cert.public_bytes(Encoding.DER))
    with pytest.raises(PinMismatchError):
        certificate_node_key(b"not a certificate")


class FakeSSLObject:
    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form
        return self.der


def test_check_pin() -> None:
    identity = Identity.generate()
    der = x509.load_pem_x509_certificate(node_certificate(identity, NOW)).public_bytes(Encoding.DER)
    check_pin(FakeSSLObject(der), identity.verify_key)  # type: ignore[arg-type]
    with pytest.raises(PinMismatchError):
        check_pin(FakeSSLObject(der), Identity.generate().verify_key)  # type: ignore[arg-type]
    with pytest.raises(PinMismatchError):
        check_pin(FakeSSLObject(None), identity.verify_key)  # type: ignore[arg-type]
    with pytest.raises(PinMismatchError):
        check_pin(None, identity.verify_key)


def test_contexts_are_tls13_only() -> None:
    assert client_context().minimum_version is ssl.TLSVersion.TLSv1_3
    assert server_context(Identity.generate(), NOW).minimum_version is ssl.TLSVersion.TLSv1_3
