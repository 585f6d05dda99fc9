"""Keys two identities share without a handshake, and MACs under them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_core_ed25519_add

from crypto import pairing
from crypto.keys import Identity
from crypto.pairing import TAG_SIZE, PairError, PairKeys, check, derive, mac

ALICE, BOB, CAROL = (Identity(bytes([n]) * 32) for n in (1, 2, 3))
CTX = b"test-pair"
ORDER_TWO = bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
"""(0, -1) on Ed25519: a point of order 2."""


def test_both_ends_derive_the_same_key_and_nobody_else_does() -> None:
    ab = derive(ALICE, BOB.verify_key, CTX)
    assert len(ab) == 32
    assert ab == derive(BOB, ALICE.verify_key, CTX)
    assert ab not in (derive(CAROL, ALICE.verify_key, CTX), derive(CAROL, BOB.verify_key, CTX))
    assert ab != derive(ALICE, CAROL.verify_key, CTX)


def test_a_key_is_for_its_context_only() -> None:
    assert derive(ALICE, BOB.verify_key, CTX) != derive(ALICE, BOB.verify_key, b"test-other")
    with pytest.raises(ValueError):
        derive(ALICE, BOB.verify_key, b"a\0b")


@pytest.mark.parametrize(
    "key",
    [
        bytes(32),  # (sqrt(-1), 0): a point of order 4
        bytes([1]) + bytes(31),  # the neutral element
        ORDER_TWO,
        b"\xff" * 32,  # not canonical
        b"short",
    ],
)
def test_keys_no_secret_stands_behind_are_refused(key: bytes) -> None:
    with pytest.raises(PairError):
        derive(ALICE, key, CTX)


def test_a_key_with_a_torsion_component_is_refused() -> None:
    """Bob's key plus a point of order 2 is another encoding (another node id) that Bob's
    secret would also answer for: only prime-order-subgroup keys are accepted."""
    twisted = crypto_core_ed25519_add(BOB.verify_key, ORDER_TWO)
    assert twisted != BOB.verify_key
    with pytest.raises(PairError):
        derive(ALICE, twisted, CTX)


@given(st.binary(max_size=300), st.integers(0, 299), st.integers(1, 255))
def test_a_mac_checks_only_for_its_key_context_and_bytes(
    data: bytes, position: int, flip: int
) -> None:
    key = derive(ALICE, BOB.verify_key, CTX)
    tag = mac(key, b"one", data)
    assert len(tag) == TAG_SIZE
    assert check(key, b"one", tag, data)
    assert check(key, b"one", tag, data[:7], data[7:])  # parts are concatenated
    assert not check(key, b"two", tag, data)
    assert not check(derive(ALICE, CAROL.verify_key, CTX), b"one", tag, data)
    if data:
        at = position % len(data)
        changed = data[:at] + bytes([data[at] ^ flip]) + data[at + 1 :]
        assert not check(key, b"one", tag, changed)
    assert not check(key, b"one", tag, data + b"\0")


def test_pair_keys_cache_is_bounded_and_lookup_never_derives() -> None:
    pairs = PairKeys(ALICE, CTX, size=3)
    others = [Identity(bytes([n]) * 32).verify_key for n in range(10, 16)]
    assert pairs.lookup(others[0]) is None and pairs.derivations == 0
    key = pairs.derive(others[0])
    assert pairs.lookup(others[0]) is None  # derive alone does not keep it
    pairs.remember(others[0], key)
    assert pairs.lookup(others[0]) == key == derive(ALICE, others[0], CTX)
    for other in others[1:]:
        pairs.shared(other)
        assert len(pairs) <= 3
    assert pairs.derivations == len(others)
    assert pairs.lookup(others[0]) is None  # the least recently used went first
    assert pairs.lookup(others[-1]) is not None
    pairs.shared(others[-1])
    assert pairs.derivations == len(others)  # cached: no new derivation


def test_converted_peer_keys_are_cached_per_process_but_refusals_are_not() -> None:
    """The Ed25519 -> X25519 conversion (with its subgroup check) depends on the public key
    only: a second derivation with the same peer, by any identity, does not convert again;
    a key that is refused is refused every time (never cached as usable)."""
    peer = Identity(bytes([9]) * 32).verify_key
    derive(ALICE, peer, CTX)
    before = pairing._curve_key.cache_info()
    derive(BOB, peer, CTX)
    after = pairing._curve_key.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    for _ in range(2):
        with pytest.raises(PairError):
            derive(ALICE, ORDER_TWO, CTX)
    assert pairing._curve_key.cache_info().currsize == after.currsize
