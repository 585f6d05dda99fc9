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


def _cryptography_key(der: bytes) -> bytes | None:
    """What cryptography's X.509 parser says the certificate's Ed25519 key is (None: it
    rejects the certificate or its key is not Ed25519)."""
    try:
        public = x509.load_der_x509_certificate(der).public_key()
    except (ValueError, x509.InvalidVersion):
        return None
    if not isinstance(public, Ed25519PublicKey):
        return None
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


# X.509 caps a common name at 64 UTF-8 octets (cryptography checks octets, not characters):
# 16 characters of at most 4 octets each always fit.
_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=16)


@settings(max_examples=40, deadline=None)
@given(ed25519=st.booleans(), common_name=_names, alt=st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,20}(\.[a-z][a-z0-9]{0,20}){0,3}", fullmatch=True),
    max_size=40), serial=st.integers(1, 2**159 - 1), days=st.integers(1, 40_000))
def test_node_key_read_as_cryptography_reads_it(ed25519: bool, common_name: str,
                                                alt: list[str], serial: int,
                                                days: int) -> None:
    """Certificates of every size and shape (long names push lengths past one byte; EC keys
    are not node keys): the DER walk finds exactly the key cryptography finds."""
    key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
        Ed25519PrivateKey.generate() if ed25519 else ec.generate_private_key(ec.SECP256R1()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime.fromtimestamp(NOW, tz=datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(serial).not_valid_before(start)
               .not_valid_after(start + datetime.timedelta(days=days)))
    if alt:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(a) for a in alt]), critical=False)
    der = builder.sign(key, None if ed25519 else hashes.SHA256()).public_bytes(Encoding.DER)
    expected = _cryptography_key(der)
    assert (expected is not None) == ed25519
    if expected is None:
        with pytest.raises(PinMismatchError):
            certificate_node_key(der)
    else:
        assert certificate_node_key(der) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_damaged_certificates_never_yield_another_key(data: st.DataObject) -> None:
    """Hostile bytes: truncated, with bytes changed, cut out or put in. The walk either
    refuses (PinMismatchError, never another exception) or, where cryptography's strict
    parser also accepts the bytes, finds the key it finds."""
    der = bytearray(x509.load_pem_x509_certificate(node_certificate(Identity.generate(), NOW))
                    .public_bytes(Encoding.DER))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(der) - 1))
        change = data.draw(st.sampled_from(["set", "cut", "put", "truncate"]))
        if change == "set":
            der[at] = data.draw(st.integers(0, 255))
        elif change == "cut":
            del der[at]
        elif change == "put":
            der.insert(at, data.draw(st.integers(0, 255)))
        else:
            del der[at:]
        if not der:
            break
    try:
        found = certificate_node_key(bytes(der))
    except PinMismatchError:
        return
    expected = _cryptography_key(bytes(der))
    assert expected is None or found == expected
