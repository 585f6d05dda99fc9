"""Identity derivation: one 32-byte seed gives the Ed25519 and the X25519 keys."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey

from crypto.keys import Identity, KeyError_, PublicIdentity

# RFC 8032, section 7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

seeds = st.binary(min_size=32, max_size=32)


def test_rfc8032_vector() -> None:
    ident = Identity(RFC8032_SEED)
    assert ident.verify_key == RFC8032_PUBLIC
    assert ident.public == PublicIdentity(RFC8032_PUBLIC)
    assert bytes(ident.signing_key.sign(b"").signature) == RFC8032_SIG_EMPTY


@given(seeds)
def test_derivation_is_deterministic(seed: bytes) -> None:
    a, b = Identity(seed), Identity(seed)
    assert a.verify_key == b.verify_key
    assert bytes(a.box_private_key) == bytes(b.box_private_key)
    assert a == b


@given(seeds)
def test_box_keys_match(seed: bytes) -> None:
    ident = Identity(seed)
    assert isinstance(ident.box_private_key, PrivateKey)
    assert isinstance(ident.public.box_public_key, PublicKey)
    # The X25519 public key others derive from the verify key pairs with our private key.
    assert bytes(ident.public.box_public_key) == bytes(ident.box_private_key.public_key)
    assert len(ident.verify_key) == 32


def test_signing_key_is_the_seed() -> None:
    ident = Identity(RFC8032_SEED)
    assert isinstance(ident.signing_key, SigningKey)
    assert bytes(ident.signing_key) == RFC8032_SEED


def test_generate_gives_distinct_identities() -> None:
    keys = {Identity.generate().verify_key for _ in range(20)}
    assert len(keys) == 20


def test_different_seeds_different_keys() -> None:
    a, b = Identity(b"\x00" * 32), Identity(b"\x01" + b"\x00" * 31)
    assert a.verify_key != b.verify_key
    assert bytes(a.box_private_key) != bytes(b.box_private_key)


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_wrong_seed_size(size: int) -> None:
    with pytest.raises(KeyError_):
        Identity(b"\x00" * size)


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_wrong_public_key_size(size: int) -> None:
    with pytest.raises(KeyError_):
        PublicIdentity(b"\x00" * size)


def test_key_error_is_value_error() -> None:
    assert issubclass(KeyError_, ValueError)


def test_seed_not_in_repr() -> None:
    ident = Identity(RFC8032_SEED)
    assert RFC8032_SEED.hex() not in repr(ident)
    assert repr(RFC8032_SEED) not in repr(ident)


def test_identities_are_frozen() -> None:
    ident = Identity(RFC8032_SEED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.seed = b"\x00" * 32  # type: ignore[misc]
    pub = ident.public
    with pytest.raises(dataclasses.FrozenInstanceError):
        pub.verify_key = b"\x00" * 32  # type: ignore[misc]
