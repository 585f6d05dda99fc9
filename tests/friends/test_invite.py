"""The invite token: round trip, and clear errors for what chats do to long lines."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailnode.friends.invite import PREFIX, Invite, TokenError

INVITE = Invite(os.urandom(32), os.urandom(16), 1_900_000_000, "alice-pi",
                (("192.168.1.20", 2700), ("2001:db8::20", 2700)))


def test_round_trip_and_short_enough_for_a_chat() -> None:
    token = INVITE.encode()
    assert token.startswith(PREFIX) and len(token) < 200 and token.isprintable()
    assert Invite.decode(token) == INVITE


def test_wrapped_lines_and_spaces_are_ignored() -> None:
    token = INVITE.encode()
    wrapped = "\n".join(token[i:i + 40] for i in range(0, len(token), 40))
    assert Invite.decode("  " + wrapped + " \n") == INVITE


@pytest.mark.parametrize("mangle, why", [
    (lambda t: t[:-5], "damaged"),
    (lambda t: t[:30], "damaged"),
    (lambda t: t.replace("mn1:", "mn2:"), "starts with"),
    (lambda t: t[:20] + ("A" if t[20] != "A" else "B") + t[21:], "damaged"),
    (lambda t: t + "!!", "damaged"),
    (lambda t: "", "starts with"),
])
def test_mangled_tokens_say_what_is_wrong(mangle: object, why: str) -> None:
    with pytest.raises(TokenError, match=why):
        Invite.decode(mangle(INVITE.encode()))  # type: ignore[operator]


def test_a_token_must_name_an_address() -> None:
    with pytest.raises(TokenError, match="no address"):
        Invite.decode(Invite(b"k" * 32, b"s" * 16, 1, "x", ()).encode())


@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_token_error(text: str) -> None:
    with contextlib.suppress(TokenError):
        Invite.decode(PREFIX + text)
