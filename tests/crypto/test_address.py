"""Self-certifying addresses: base32(key || checksum)@mailnode.invalid."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.address import DOMAIN, AddressError, address_for, key_of, normalise
from crypto.keys import Identity

B32 = "abcdefghijklmnopqrstuvwxyz234567"
KEYS = [Identity(bytes([i]) * 32).verify_key for i in range(4)]
keys = st.binary(min_size=32, max_size=32)


def local_of(address: str) -> str:
    return address.rpartition("@")[0]


@given(keys)
def test_round_trip(key: bytes) -> None:
    addr = address_for(key)
    assert key_of(addr) == key
    assert normalise(addr) == addr


@given(keys)
def test_shape(key: bytes) -> None:
    addr = address_for(key)
    local, _, domain = addr.rpartition("@")
    assert domain == DOMAIN == "mailnode.invalid"
    assert addr == addr.lower()
    assert len(local) == 56 <= 64
    assert set(local) <= set(B32)
    assert "=" not in addr


def test_distinct_keys_distinct_addresses() -> None:
    assert len({address_for(k) for k in KEYS}) == len(KEYS)


@pytest.mark.parametrize("size", [0, 31, 33, 35])
def test_address_for_wrong_key_size(size: int) -> None:
    with pytest.raises(AddressError):
        address_for(b"\x00" * size)


@pytest.mark.parametrize("key", KEYS)
def test_checksum_catches_every_single_character_typo(key: bytes) -> None:
    addr = address_for(key)
    local = local_of(addr)
    for i, original in enumerate(local):
        for c in B32:
            if c == original:
                continue
            typo = f"{local[:i]}{c}{local[i + 1:]}@{DOMAIN}"
            with pytest.raises(AddressError):
                key_of(typo)


@pytest.mark.parametrize("key", KEYS)
def test_checksum_catches_adjacent_transpositions(key: bytes) -> None:
    local = local_of(address_for(key))
    for i in range(len(local) - 1):
        if local[i] == local[i + 1]:
            continue
        swapped = local[:i] + local[i + 1] + local[i] + local[i + 2:]
        with pytest.raises(AddressError):
            key_of(f"{swapped}@{DOMAIN}")


def test_checksum_mismatch_message() -> None:
    local = local_of(address_for(KEYS[0]))
    bad = ("b" if local[0] == "a" else "a") + local[1:]
    with pytest.raises(AddressError, match="checksum"):
        key_of(f"{bad}@{DOMAIN}")


def test_key_with_another_key_checksum_fails() -> None:
    # Splicing one identity's key onto another's checksum is rejected.
    raw0 = base64.b32decode(local_of(address_for(KEYS[0])).upper())
    raw1 = base64.b32decode(local_of(address_for(KEYS[1])).upper())
    spliced = base64.b32encode(raw0[:32] + raw1[32:]).decode().lower()
    with pytest.raises(AddressError, match="checksum"):
        key_of(f"{spliced}@{DOMAIN}")


@pytest.mark.parametrize(
    "domain",
    [
        "example.com",
        "mailnode.invalid.example.com",
        "mailnode.invalidx",
        "xmailnode.invalid",
        "sub.mailnode.invalid",
        "mailnode.invalid.",
        "mailnode",
        "",
        "mailnode .invalid",
    ],
)
def test_wrong_domain(domain: str) -> None:
    local = local_of(address_for(KEYS[0]))
    with pytest.raises(AddressError, match="not a mailnode address"):
        key_of(f"{local}@{domain}")


def test_whitespace_inside_brackets_is_not_stripped() -> None:
    local = local_of(address_for(KEYS[0]))
    with pytest.raises(AddressError):
        key_of(f"<{local}@{DOMAIN} >")


def test_domain_and_local_part_are_case_insensitive() -> None:
    addr = address_for(KEYS[0])
    assert key_of(addr.upper()) == KEYS[0]
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(addr))
    assert key_of(mixed) == KEYS[0]
    assert normalise(addr.upper()) == addr


@pytest.mark.parametrize("text", ["", "nobody", "mailnode.invalid", "   ", "<>"])
def test_no_at_sign(text: str) -> None:
    with pytest.raises(AddressError, match="no @domain"):
        key_of(text)


def test_wrong_length() -> None:
    local = local_of(address_for(KEYS[0]))
    for bad in (
        local[:-8],  # valid base32 of 30 bytes
        local + "aaaaaaaa",  # valid base32 of 40 bytes
        base64.b32encode(b"\x00" * 34).decode().lower(),  # padded, 34 bytes
        base64.b32encode(b"\x00" * 36).decode().lower(),
        "",
    ):
        with pytest.raises(AddressError):
            key_of(f"{bad}@{DOMAIN}")
    with pytest.raises(AddressError, match="wrong length"):
        key_of(f"{local[:-8]}@{DOMAIN}")
    with pytest.raises(AddressError, match="wrong length"):
        key_of(f"{local}aaaaaaaa@{DOMAIN}")


def test_any_truncation_or_extension_fails() -> None:
    local = local_of(address_for(KEYS[0]))
    for n in range(len(local)):
        with pytest.raises(AddressError):
            key_of(f"{local[:n]}@{DOMAIN}")
    for extra in ("a", "aa", "a" * 7, "a" * 8, "=", "===="):
        with pytest.raises(AddressError):
            key_of(f"{local}{extra}@{DOMAIN}")


def test_non_base32_characters() -> None:
    local = local_of(address_for(KEYS[0]))
    for c in "01890!#.+-_ =é\u0000ä€":
        bad = c + local[1:]
        with pytest.raises(AddressError):
            key_of(f"{bad}@{DOMAIN}")
        bad = local[:30] + c + local[31:]
        with pytest.raises(AddressError):
            key_of(f"{bad}@{DOMAIN}")


def test_two_at_signs() -> None:
    addr = address_for(KEYS[0])
    with pytest.raises(AddressError):
        key_of(f"x@{addr}")


@pytest.mark.parametrize(
    "wrap",
    [
        "<{}>",
        " {} ",
        "\t{}\n",
        "  <{}>  ",
        "\r\n<{}>\r\n",
        "<<{}>>",
    ],
)
def test_angle_brackets_and_whitespace_tolerated(wrap: str) -> None:
    addr = address_for(KEYS[1])
    assert key_of(wrap.format(addr)) == KEYS[1]
    assert normalise(wrap.format(addr)) == addr


def test_address_error_is_value_error() -> None:
    assert issubclass(AddressError, ValueError)


@given(st.text())
def test_key_of_arbitrary_text_raises_only_address_error(text: str) -> None:
    try:
        key = key_of(text)
    except AddressError:
        return
    assert len(key) == 32


@given(st.text(alphabet=B32 + B32.upper() + "=0189 <>", max_size=70))
def test_key_of_base32ish_local_part_raises_only_address_error(local: str) -> None:
    try:
        key = key_of(f"{local}@{DOMAIN}")
    except AddressError:
        return
    assert address_for(key) == normalise(f"{local}@{DOMAIN}")


@given(st.text(alphabet=string.printable + "é€\u0131\ufb00", max_size=8), keys)
def test_key_of_mangled_address_raises_only_address_error(noise: str, key: bytes) -> None:
    addr = address_for(key)
    for candidate in (noise + addr, addr + noise, addr[:20] + noise + addr[20:]):
        try:
            got = key_of(candidate)
        except AddressError:
            continue
        assert len(got) == 32
