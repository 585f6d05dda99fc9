"""Sealed envelopes: sign-then-seal, tamper-evident, bound to sender and recipient."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import SealedBox

from crypto.envelope import (
    MAGIC,
    MESSAGE_ID_SIZE,
    OVERHEAD,
    VERSION,
    EnvelopeError,
    Opened,
    open_envelope,
    seal,
)
from crypto.keys import Identity
from crypto.signing import sign

ALICE = Identity(b"\xa1" * 32)  # sender
BOB = Identity(b"\xb0" * 32)  # recipient
CAROL = Identity(b"\xc0" * 32)  # third party
MALLORY = Identity(b"\xee" * 32)  # attacker

MID = bytes(range(MESSAGE_ID_SIZE))
CREATED = 1_700_000_000
CONTEXT = b"envelope-v1"  # the documented signing context of wire version 1
HEADER = struct.Struct(">32s64s16sQ")  # the documented inner layout


def signed_part(recipient_key: bytes, sender_key: bytes, message_id: bytes, created: int,
                payload: bytes) -> bytes:
    return recipient_key + sender_key + message_id + created.to_bytes(8, "big") + payload


def wrap(recipient: Identity, inner: bytes) -> bytes:
    """Seal arbitrary inner bytes: anyone can do this, SealedBox is anonymous."""
    return MAGIC + bytes([VERSION]) + SealedBox(recipient.public.box_public_key).encrypt(inner)


def unwrap(recipient: Identity, sealed: bytes) -> bytes:
    """What an attacker holding ``recipient``'s secret key sees of an envelope."""
    assert sealed[: len(MAGIC) + 1] == MAGIC + bytes([VERSION])
    return SealedBox(recipient.box_private_key).decrypt(sealed[len(MAGIC) + 1:])


@pytest.fixture(scope="module")
def small() -> bytes:
    return seal(ALICE, BOB.public, MID, CREATED, b"hi!")


# --- round trip -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "payload",
    [b"", b"x", b"hello, world", bytes(range(256)), b"\x00" * 100, b"\r\n.\r\n"],
)
def test_round_trip(payload: bytes) -> None:
    sealed = seal(ALICE, BOB.public, MID, CREATED, payload)
    opened = open_envelope(BOB, sealed)
    assert opened == Opened(ALICE.verify_key, MID, CREATED, payload)
    assert opened.sender_key == ALICE.verify_key
    assert opened.message_id == MID
    assert opened.created == CREATED
    assert opened.payload == payload
    assert type(opened.payload) is bytes


def test_empty_payload() -> None:
    sealed = seal(ALICE, BOB.public, MID, CREATED, b"")
    assert len(sealed) == OVERHEAD
    assert open_envelope(BOB, sealed).payload == b""


def test_one_megabyte_payload() -> None:
    payload = bytes(i % 251 for i in range(1 << 20))
    sealed = seal(ALICE, BOB.public, MID, CREATED, payload)
    assert len(sealed) == OVERHEAD + len(payload)
    opened = open_envelope(BOB, sealed)
    assert opened.payload == payload
    assert opened.sender_key == ALICE.verify_key


@pytest.mark.parametrize("created", [0, 1, 2**32, 2**63, 2**64 - 1])
def test_created_extremes(created: int) -> None:
    assert open_envelope(BOB, seal(ALICE, BOB.public, MID, created, b"p")).created == created


def test_created_out_of_range_is_refused() -> None:
    for created in (-1, 2**64):
        with pytest.raises((OverflowError, ValueError)):
            seal(ALICE, BOB.public, MID, created, b"p")


@given(
    payload=st.binary(max_size=512),
    message_id=st.binary(min_size=16, max_size=16),
    created=st.integers(min_value=0, max_value=2**64 - 1),
)
@settings(max_examples=50)
def test_round_trip_property(payload: bytes, message_id: bytes, created: int) -> None:
    opened = open_envelope(BOB, seal(ALICE, BOB.public, message_id, created, payload))
    assert opened == Opened(ALICE.verify_key, message_id, created, payload)


def test_self_addressed() -> None:
    opened = open_envelope(ALICE, seal(ALICE, ALICE.public, MID, CREATED, b"note to self"))
    assert opened.sender_key == ALICE.verify_key


def test_sealing_is_randomised() -> None:
    # Fresh ephemeral key each time: equal messages do not give equal ciphertexts.
    a = seal(ALICE, BOB.public, MID, CREATED, b"same")
    b = seal(ALICE, BOB.public, MID, CREATED, b"same")
    assert a != b
    assert open_envelope(BOB, a) == open_envelope(BOB, b)


def test_sender_and_payload_not_visible_on_the_wire() -> None:
    payload = b"a very recognisable plaintext payload"
    sealed = seal(ALICE, BOB.public, MID, CREATED, payload)
    assert payload not in sealed
    assert ALICE.verify_key not in sealed
    assert BOB.verify_key not in sealed
    assert MID not in sealed


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_bad_message_id_size(size: int) -> None:
    with pytest.raises(ValueError):
        seal(ALICE, BOB.public, b"\x00" * size, CREATED, b"p")


def test_overhead() -> None:
    sealed_box, sender, signature, message_id, created = 48, 32, 64, 16, 8
    expected = len(MAGIC) + 1 + sealed_box + sender + signature + message_id + created
    assert expected == OVERHEAD == 172
    assert MAGIC == b"MNv"
    assert VERSION == 1


def test_envelope_error_is_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


# --- tampering, truncation, framing -----------------------------------------------------------

def test_tampering_at_every_byte_position(small: bytes) -> None:
    for i in range(len(small)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(small)
            bad[i] ^= mask
            with pytest.raises(EnvelopeError):
                open_envelope(BOB, bytes(bad))


@given(data=st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tampering_property(small: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(small) - 1))
    mask = data.draw(st.integers(1, 255))
    bad = bytearray(small)
    bad[i] ^= mask
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, bytes(bad))


def test_truncated_at_every_length(small: bytes) -> None:
    for n in range(len(small)):
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, small[:n])


def test_truncated_at_every_length_with_empty_payload() -> None:
    sealed = seal(ALICE, BOB.public, MID, CREATED, b"")
    for n in range(len(sealed)):
        with pytest.raises(EnvelopeError, match="truncated"):
            open_envelope(BOB, sealed[:n])


def test_appended_bytes(small: bytes) -> None:
    for extra in (b"\x00", b"x" * 16, small):
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, small + extra)


def test_dropped_byte_at_every_position(small: bytes) -> None:
    for i in range(len(small)):
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, small[:i] + small[i + 1:])


@pytest.mark.parametrize("magic", [b"MNV", b"mnv", b"XXX", b"\x00\x00\x00", b"MNw"])
def test_wrong_magic(small: bytes, magic: bytes) -> None:
    with pytest.raises(EnvelopeError, match="not a mailnode envelope"):
        open_envelope(BOB, magic + small[3:])


@pytest.mark.parametrize("version", [0, 2, 3, 0x7F, 0xFF])
def test_wrong_version(small: bytes, version: int) -> None:
    with pytest.raises(EnvelopeError, match="unsupported envelope version"):
        open_envelope(BOB, MAGIC + bytes([version]) + small[4:])


def test_wrong_recipient(small: bytes) -> None:
    for other in (ALICE, CAROL, MALLORY):
        with pytest.raises(EnvelopeError, match="cannot decrypt"):
            open_envelope(other, small)


def test_inner_too_short_for_header() -> None:
    # A well-formed sealed box whose plaintext is shorter than the header.
    for inner in (b"", b"x" * (HEADER.size - 1)):
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, wrap(BOB, inner))


def test_resealed_inner_tampered_at_every_byte() -> None:
    # SealedBox is anonymous, so anyone can re-seal modified plaintext: the signature
    # (not the box) must catch every change to the sender, signature, id, time or payload.
    inner = unwrap(BOB, seal(ALICE, BOB.public, MID, CREATED, b"pay"))
    assert open_envelope(BOB, wrap(BOB, inner)).sender_key == ALICE.verify_key
    for i in range(len(inner)):
        bad = bytearray(inner)
        bad[i] ^= 0x01
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, wrap(BOB, bytes(bad)))


def test_resealed_inner_truncated_or_extended() -> None:
    inner = unwrap(BOB, seal(ALICE, BOB.public, MID, CREATED, b"payload"))
    for n in range(len(inner)):
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, wrap(BOB, inner[:n]))
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, wrap(BOB, inner + b"\x00"))


# --- forgery: KCI and recipient binding -------------------------------------------------------

def forged_inner(claimed: Identity, signer: Identity, recipient: Identity, payload: bytes,
                 context: bytes = CONTEXT) -> bytes:
    """Inner plaintext claiming to be from ``claimed`` but signed by ``signer``."""
    sender_key = claimed.verify_key
    sig = sign(signer, context,
               signed_part(recipient.verify_key, sender_key, MID, CREATED, payload))
    return HEADER.pack(sender_key, sig, MID, CREATED) + payload


def test_forged_inner_helper_matches_the_real_format() -> None:
    # Sanity check: with the right signer the hand-built envelope opens, so the
    # failures below come from the signature and not from a malformed test envelope.
    opened = open_envelope(BOB, wrap(BOB, forged_inner(ALICE, ALICE, BOB, b"real")))
    assert opened == Opened(ALICE.verify_key, MID, CREATED, b"real")


def test_kci_recipient_key_cannot_forge_another_sender() -> None:
    # Mallory has stolen Bob's secret key (Bob's seed). She can read Bob's mail and seal
    # anything to Bob, but cannot make an envelope that verifies as coming from Alice.
    stolen = Identity(BOB.seed)
    genuine = seal(ALICE, BOB.public, MID, CREATED, b"from alice")
    assert open_envelope(stolen, genuine).payload == b"from alice"  # she can read it

    for signer in (stolen, MALLORY):
        sealed = wrap(BOB, forged_inner(ALICE, signer, BOB, b"send money"))
        with pytest.raises(EnvelopeError, match="signature"):
            open_envelope(BOB, sealed)


def test_kci_re_sealing_with_a_different_signer_fails() -> None:
    # Take Alice's genuine envelope, change the payload and re-sign with any key
    # Mallory holds (including Bob's): verification against the claimed sender fails.
    inner = unwrap(BOB, seal(ALICE, BOB.public, MID, CREATED, b"pay 10"))
    sender_key, _sig, message_id, created = HEADER.unpack_from(inner)
    assert sender_key == ALICE.verify_key
    payload = b"pay 1000"
    for signer in (BOB, MALLORY, CAROL):
        sig = sign(signer, CONTEXT,
                   signed_part(BOB.verify_key, sender_key, message_id, created, payload))
        bad = HEADER.pack(sender_key, sig, message_id, created) + payload
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, wrap(BOB, bad))
    # Keeping Alice's signature but changing the payload fails too.
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, wrap(BOB, inner[: HEADER.size] + payload))


def test_kci_seal_with_stolen_key_only_speaks_as_the_victim() -> None:
    # Using the stolen key with seal() yields mail from Bob, never from Alice.
    opened = open_envelope(BOB, seal(Identity(BOB.seed), BOB.public, MID, CREATED, b"x"))
    assert opened.sender_key == BOB.verify_key != ALICE.verify_key


def test_signature_from_another_context_is_rejected() -> None:
    # Alice's signature over the very same bytes, but for another purpose, is not accepted.
    for context in (b"dht-record", b"transfer", b"envelope-v2", b""):
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, wrap(BOB, forged_inner(ALICE, ALICE, BOB, b"x", context)))


def test_recipient_cannot_reseal_to_a_third_party() -> None:
    # Bob decrypts Alice's message and re-seals the signed inner to Carol, to make it look
    # as if Alice had written to Carol: the recipient is bound into the signature.
    genuine = seal(ALICE, BOB.public, MID, CREATED, b"for bob only")
    inner = unwrap(BOB, genuine)
    with pytest.raises(EnvelopeError, match="signature"):
        open_envelope(CAROL, wrap(CAROL, inner))
    # ... while the original still opens for Bob.
    assert open_envelope(BOB, genuine).sender_key == ALICE.verify_key


def test_signature_names_the_recipient() -> None:
    # A signature made for Carol as recipient does not verify for Bob.
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, wrap(BOB, forged_inner(ALICE, ALICE, CAROL, b"x")))


def test_swapping_sender_key_for_signer_key_fails() -> None:
    # Mallory signs honestly as herself but writes Alice's key into the sender field.
    inner = unwrap(BOB, seal(MALLORY, BOB.public, MID, CREATED, b"hi"))
    bad = ALICE.verify_key + inner[32:]
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, wrap(BOB, bad))


def test_replay_of_an_unchanged_inner_still_verifies() -> None:
    # Documented limit: re-sealing an unchanged inner to the same recipient is a replay,
    # which the envelope layer cannot detect (the message id is there for de-duplication).
    inner = unwrap(BOB, seal(ALICE, BOB.public, MID, CREATED, b"again"))
    assert open_envelope(BOB, wrap(BOB, inner)).message_id == MID


# --- robustness -------------------------------------------------------------------------------

@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_envelope_error(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, data)


@given(st.binary(min_size=OVERHEAD - 4, max_size=OVERHEAD + 64))
def test_arbitrary_bytes_after_valid_magic_raise_only_envelope_error(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, MAGIC + bytes([VERSION]) + data)


@given(st.binary(max_size=HEADER.size + 64))
@settings(max_examples=200)
def test_arbitrary_validly_sealed_inner_raises_only_envelope_error(inner: bytes) -> None:
    # Reaches the signature check with an arbitrary (often invalid-point) sender key.
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, wrap(BOB, inner))


@pytest.mark.parametrize("sender_key", [b"\x00" * 32, b"\xff" * 32, bytes([1] + [0] * 31)])
def test_degenerate_sender_keys(sender_key: bytes) -> None:
    inner = HEADER.pack(sender_key, b"\x00" * 64, MID, CREATED) + b"x"
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, wrap(BOB, inner))
