"""Context-separated detached signatures."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crypto.keys import Identity
from crypto.signing import SIGNATURE_SIZE, SignatureError, sign, verify

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))

contexts = st.binary(max_size=24).filter(lambda c: b"\0" not in c)


def test_round_trip() -> None:
    sig = sign(ALICE, b"dht-record", b"hello")
    assert len(sig) == SIGNATURE_SIZE
    verify(ALICE.verify_key, b"dht-record", b"hello", sig)


def test_deterministic() -> None:
    assert sign(ALICE, b"ctx", b"data") == sign(ALICE, b"ctx", b"data")


def test_signature_for_one_context_fails_for_another() -> None:
    sig = sign(ALICE, b"dht-record", b"payload")
    for other in (b"envelope-v1", b"transfer", b"", b"dht-recorD", b"dht-record "):
        with pytest.raises(SignatureError):
            verify(ALICE.verify_key, other, b"payload", sig)


@given(contexts, contexts, st.binary(max_size=64))
def test_context_separation_property(ctx_a: bytes, ctx_b: bytes, data: bytes) -> None:
    assume(ctx_a != ctx_b)
    sig = sign(ALICE, ctx_a, data)
    verify(ALICE.verify_key, ctx_a, data, sig)
    with pytest.raises(SignatureError):
        verify(ALICE.verify_key, ctx_b, data, sig)


def test_framing_is_unambiguous() -> None:
    # Moving bytes between the context and the data must not keep a signature valid.
    sig = sign(ALICE, b"ab", b"c")
    with pytest.raises(SignatureError):
        verify(ALICE.verify_key, b"a", b"bc", sig)
    with pytest.raises(SignatureError):
        verify(ALICE.verify_key, b"abc", b"", sig)
    sig = sign(ALICE, b"a", b"\0b")
    with pytest.raises(ValueError, match="NUL"):
        verify(ALICE.verify_key, b"a\0", b"b", sig)  # rejected outright: NUL in context
    with pytest.raises(SignatureError):
        verify(ALICE.verify_key, b"a", b"b", sig)


def test_not_a_raw_signature_over_the_data() -> None:
    # A plain Ed25519 signature of the data (made for another protocol) is not accepted.
    raw = bytes(ALICE.signing_key.sign(b"data").signature)
    with pytest.raises(SignatureError):
        verify(ALICE.verify_key, b"", b"data", raw)


def test_wrong_data() -> None:
    sig = sign(ALICE, b"ctx", b"data")
    for data in (b"dat", b"datA", b"data\0", b""):
        with pytest.raises(SignatureError):
            verify(ALICE.verify_key, b"ctx", data, sig)


def test_wrong_key() -> None:
    sig = sign(ALICE, b"ctx", b"data")
    with pytest.raises(SignatureError):
        verify(BOB.verify_key, b"ctx", b"data", sig)


def test_every_bit_of_the_signature_matters() -> None:
    sig = sign(ALICE, b"ctx", b"data")
    for i in range(len(sig)):
        for bit in (0x01, 0x80):
            bad = bytearray(sig)
            bad[i] ^= bit
            with pytest.raises(SignatureError):
                verify(ALICE.verify_key, b"ctx", b"data", bytes(bad))


@pytest.mark.parametrize("key_size", [0, 31, 33])
def test_malformed_key(key_size: int) -> None:
    sig = sign(ALICE, b"ctx", b"data")
    with pytest.raises(SignatureError):
        verify(b"\x01" * key_size, b"ctx", b"data", sig)


@pytest.mark.parametrize("sig_size", [0, 63, 65, 128])
def test_malformed_signature(sig_size: int) -> None:
    with pytest.raises(SignatureError):
        verify(ALICE.verify_key, b"ctx", b"data", b"\x01" * sig_size)


@pytest.mark.parametrize("key", [b"\x00" * 32, b"\xff" * 32, bytes([1] + [0] * 31)])
def test_degenerate_keys_fail_cleanly(key: bytes) -> None:
    with pytest.raises(SignatureError):
        verify(key, b"ctx", b"data", b"\x00" * 64)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64))
def test_garbage_key_and_signature_raise_only_signature_error(key: bytes, sig: bytes) -> None:
    with pytest.raises(SignatureError):
        verify(key, b"ctx", b"data", sig)


def test_nul_in_context_is_refused_when_signing() -> None:
    with pytest.raises(ValueError):
        sign(ALICE, b"a\0b", b"data")


def test_signature_error_is_value_error() -> None:
    assert issubclass(SignatureError, ValueError)
