"""TLS 1.3 for node-to-node transfer: self-signed node certificates and key pinning.

Trust does not come from a CA but from the DHT: a user's record names the node key that serves
them, and the client accepts the connection only if the server certificate carries that exact
Ed25519 key. TLS 1.3's CertificateVerify proves the server holds the matching private key, so
the pin alone authenticates the server. (Clients authenticate inside the channel; see
``session.py``.)
"""

from __future__ import annotations

import base64
import datetime
import hmac
import os
import ssl
import tempfile

from crypto.keys import Identity
from mailnode.certificates import CLOCK_SKEW
from mailnode.transfer.session import PinMismatchError

CERTIFICATE_VALIDITY = datetime.timedelta(days=365 * 30)
"""Nobody checks the dates (the pin is the trust anchor), so they must never get in the way."""
COMMON_NAME = "mailnode transfer node"

# DER pieces (X.509, RFC 5280; Ed25519 in X.509, RFC 8410).
_ED25519 = b"\x30\x05\x06\x03\x2b\x65\x70"  # AlgorithmIdentifier: id-Ed25519, no parameters
_CN = b"\x06\x03\x55\x04\x03"  # id-at-commonName
_NOT_A_CA = (b"\x30\x0c\x06\x03\x55\x1d\x13"  # basicConstraints,
             b"\x01\x01\xff\x04\x02\x30\x00")  # critical, cA false


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


def _time(moment: datetime.datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5)."""
    if moment.year < 2050:
        return _der(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return _der(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())


def _pem(label: str, der: bytes) -> bytes:
    text = base64.b64encode(der).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def node_certificate(identity: Identity, now: float) -> bytes:
    """A PEM certificate for the node key, self-signed by that key: a random serial, the
    common name, the validity period and a critical "not a CA", nothing else.

    Encoded here (with PyNaCl's signature) rather than by ``cryptography``, which a serving
    node would otherwise load for this alone: ~10 MB of its memory. ``now`` is a POSIX
    timestamp passed in so certificate building stays free of clock reads.
    """
    issued = datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC)
    name = _der(0x30, _der(0x31, _der(0x30, _CN + _der(0x0C, COMMON_NAME.encode()))))
    serial = bytes((os.urandom(1)[0] | 0x80,)) + os.urandom(15)  # 128 bits, top one set
    tbs = _der(0x30, b"".join((
        b"\xa0\x03\x02\x01\x02",  # version 3
        _der(0x02, b"\x00" + serial),  # positive INTEGER: a zero byte before the top bit
        _ED25519,
        name,  # issuer
        _der(0x30, _time(issued - CLOCK_SKEW) + _time(issued + CERTIFICATE_VALIDITY)),
        name,  # subject
        _der(0x30, _ED25519 + _der(0x03, b"\x00" + identity.verify_key)),
        _der(0xA3, _der(0x30, _NOT_A_CA)),  # extensions
    )))
    signature = identity.signing_key.sign(tbs).signature
    return _pem("CERTIFICATE", _der(0x30, tbs + _ED25519 + _der(0x03, b"\x00" + signature)))


def _private_key_pem(identity: Identity) -> bytes:
    """The seed as an unencrypted PKCS #8 OneAsymmetricKey (RFC 8410 §7)."""
    return _pem("PRIVATE KEY", _der(0x30, b"\x02\x01\x00" + _ED25519
                                    + _der(0x04, _der(0x04, identity.seed))))


def server_context(identity: Identity, now: float) -> ssl.SSLContext:
    """A TLS 1.3-only server context presenting the node certificate.

    The stdlib can only load keys from files, so the key goes through a private temporary
    directory (mode 0700, the file 0600) and is deleted right after loading. It is not
    encrypted there: the same seed sits in the data directory's ``node.key`` under the same
    permissions, and encrypting it took ``cryptography``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_NONE  # clients prove their key inside the channel
    context.num_tickets = 0  # no resumption: every connection re-authenticates
    with tempfile.TemporaryDirectory(prefix="mailnode-tls-") as directory:
        path = os.path.join(directory, "node.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(node_certificate(identity, now) + _private_key_pem(identity))
        context.load_cert_chain(path)
    return context


def client_context() -> ssl.SSLContext:
    """A TLS 1.3-only client context without CA checks: ``check_pin`` replaces them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _element(der: bytes, at: int, limit: int) -> tuple[int, int, int]:
    """(tag, where its contents start, where it ends) of the DER element at ``at``, which must
    end by ``limit``. ValueError for lengths DER does not allow (indefinite, not minimal)."""
    if at + 2 > limit:
        raise ValueError("truncated")
    tag, first, start = der[at], der[at + 1], at + 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3 or start + count > limit or der[start] == 0:
            raise ValueError("length not in DER")
        size = int.from_bytes(der[start:start + count], "big")
        start += count
        if size < 0x80:
            raise ValueError("length not in DER")
    if start + size > limit:
        raise ValueError("truncated")
    return tag, start, start + size


_SEQUENCE, _INTEGER, _VERSION = 0x30, 0x02, 0xA0
_ED25519_KEY = b"\x30\x2a" + _ED25519 + b"\x03\x21\x00"  # SubjectPublicKeyInfo, 32 bytes follow


def certificate_node_key(der: bytes) -> bytes:
    """The raw Ed25519 public key of a DER certificate; PinMismatchError if it has none.

    Read by walking the DER (RFC 5280 §4.1: the key is the seventh field of tbsCertificate,
    after the optional version) instead of with ``cryptography``, which a node would load for
    this alone. Only the elements before the key are stepped over, each checked to lie inside
    its parent, so the key found is the one the TLS stack verified the handshake against.
    """
    try:
        tag, start, end = _element(der, 0, len(der))
        if tag != _SEQUENCE or end != len(der):
            raise ValueError("not a certificate")
        tag, at, tbs_end = _element(der, start, end)
        if tag != _SEQUENCE:
            raise ValueError("no tbsCertificate")
        if _element(der, at, tbs_end)[0] == _VERSION:
            at = _element(der, at, tbs_end)[2]
        # serialNumber, signature, issuer, validity, subject
        for expected in (_INTEGER, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE):
            tag, _, after = _element(der, at, tbs_end)
            if tag != expected:
                raise ValueError("not a certificate")
            at = after
        tag, _, key_end = _element(der, at, tbs_end)
    except ValueError as exc:
        raise PinMismatchError("server certificate cannot be parsed") from exc
    key = der[at:key_end]
    if tag != _SEQUENCE or len(key) != len(_ED25519_KEY) + 32 or not key.startswith(
            _ED25519_KEY):
        raise PinMismatchError("server certificate does not carry an Ed25519 key")
    return key[len(_ED25519_KEY):]


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
