"""scrypt password hashes. Each scrypt call costs ~50 ms, so the suite makes only a few."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.passwords import DUMMY_HASH, hash_password, verify_password

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(PASSWORD)


def test_format(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(digest, validate=True)) == 32
    assert PASSWORD not in stored


def test_dummy_hash_costs_what_a_real_check_costs(stored: str) -> None:
    """Unknown logins are checked against it: same scheme and cost parameters, no match."""
    assert DUMMY_HASH.split("$")[:4] == stored.split("$")[:4]
    assert len(base64.b64decode(DUMMY_HASH.split("$")[5], validate=True)) == 32
    assert verify_password(DUMMY_HASH, PASSWORD) is False


def test_verify_true(stored: str) -> None:
    assert verify_password(stored, PASSWORD) is True


def test_verify_false(stored: str) -> None:
    assert verify_password(stored, PASSWORD + " ") is False


def test_salts_differ(stored: str) -> None:
    other = hash_password(PASSWORD)
    assert other.split("$")[4] != stored.split("$")[4]
    assert other.split("$")[5] != stored.split("$")[5]


def test_explicit_salt_is_deterministic_and_unicode_works() -> None:
    a = hash_password("pässwörd €", salt=b"0123456789abcdef")
    assert a == hash_password("pässwörd €", salt=b"0123456789abcdef")
    assert a.split("$")[4] == base64.b64encode(b"0123456789abcdef").decode()
    assert verify_password(a, "pässwörd €") is True


def _replace(stored: str, index: int, value: str) -> str:
    parts = stored.split("$")
    parts[index] = value
    return "$".join(parts)


def test_malformed_stored_strings_return_false(stored: str) -> None:
    bad = [
        "",
        "garbage",
        "$$$$$",
        "scrypt",
        stored + "$extra",
        stored.rsplit("$", 1)[0],
        _replace(stored, 0, "bcrypt"),
        _replace(stored, 0, "SCRYPT"),
        _replace(stored, 1, "abc"),
        _replace(stored, 1, ""),
        _replace(stored, 1, "0"),
        _replace(stored, 1, "-16384"),
        _replace(stored, 1, "16383"),  # not a power of two
        _replace(stored, 1, str(2**70)),
        _replace(stored, 1, str(2**24)),  # beyond the memory cap
        _replace(stored, 2, "0"),
        _replace(stored, 2, "-8"),
        _replace(stored, 2, str(2**70)),
        _replace(stored, 2, "x"),
        _replace(stored, 3, "0"),
        _replace(stored, 3, "-1"),
        _replace(stored, 3, str(2**70)),
        _replace(stored, 3, str(2**31)),
        _replace(stored, 3, "1.0"),
        _replace(stored, 4, "!!!not base64!!!"),
        _replace(stored, 4, "abc"),  # bad padding
        _replace(stored, 5, "!!!not base64!!!"),
        _replace(stored, 5, "abc"),
        _replace(stored, 5, ""),  # empty digest
        _replace(stored, 4, "sält"),  # non-ASCII
        _replace(stored, 5, "dïgest"),
    ]
    for s in bad:
        assert verify_password(s, PASSWORD) is False, s


def test_tampered_digest_or_salt_fails(stored: str) -> None:
    digest = bytearray(base64.b64decode(stored.split("$")[5]))
    digest[0] ^= 1
    bad_digest = _replace(stored, 5, base64.b64encode(digest).decode())
    assert verify_password(bad_digest, PASSWORD) is False
    salt = bytearray(base64.b64decode(stored.split("$")[4]))
    salt[0] ^= 1
    bad_salt = _replace(stored, 4, base64.b64encode(salt).decode())
    assert verify_password(bad_salt, PASSWORD) is False


@given(st.text(max_size=60))
@settings(max_examples=100)
def test_arbitrary_stored_text_returns_bool(stored: str) -> None:
    assert verify_password(stored, PASSWORD) is False


# Numbers are kept to two characters so a drawn n, r, p stays cheap to compute.
_numbers = st.text(alphabet="0123456789-", max_size=2)
_b64ish = st.text(alphabet="ABCabc019+/= ", max_size=8)


@given(_numbers, _numbers, _numbers, _b64ish, _b64ish)
@settings(max_examples=150, deadline=None)
def test_arbitrary_fields_never_raise(n: str, r: str, p: str, salt: str, digest: str) -> None:
    stored = "$".join(["scrypt", n, r, p, salt, digest])
    assert verify_password(stored, PASSWORD) in (True, False)


def test_recently_verified_recognises_only_the_same_password_and_hash_until_it_expires() -> None:
    from crypto.passwords import RecentlyVerified

    seen = RecentlyVerified(ttl=60, size=2)
    stored = hash_password("right horse")
    assert not seen.check(stored, "right horse", 0)
    seen.remember(stored, "right horse", 0)
    assert seen.check(stored, "right horse", 59)
    assert not seen.check(stored, "wrong horse", 1)
    assert not seen.check(hash_password("right horse"), "right horse", 1)  # new salt: new hash
    assert not seen.check(stored, "right horse", 60)  # expired
    for i in range(3):  # bounded: the oldest goes first
        seen.remember(stored, f"pw{i}", 100)
    assert not seen.check(stored, "pw0", 101) and seen.check(stored, "pw2", 101)
