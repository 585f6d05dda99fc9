"""IMAP logins behind the shared penalty: lockout per source and per account, the owner
getting in from elsewhere, the session cap, and exactly one escaped log line per failure."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable

import pytest

from mailnode.auth import Authenticator
from mailnode.guard import LoginPenalty
from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore, User
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import Dialog

ATTACKER = "203.0.113.5"
OWNER = "198.51.100.7"


@pytest.fixture
def auth(store: MailStore) -> Authenticator:
    return Authenticator(store, LoginPenalty(base_delay=0.0, lockout_after=3))


Connect = Callable[..., Dialog]


@pytest.fixture
def connect(store: MailStore, notifier: ChangeNotifier, auth: Authenticator) -> Connect:
    """A new session from ``client``, all sharing one Authenticator (as on a node)."""
    def make(client: str, admit_user: Callable[[User], bool] = lambda user: True) -> Dialog:
        return Dialog(ImapSession(store, notifier, auth=auth, client=client,
                                  admit_user=admit_user))
    return make


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mailnode.auth" and r.getMessage().startswith("auth failed")]


async def test_source_is_locked_out_then_hung_up_on(connect: Connect,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    guesser = connect(ATTACKER)
    for tag in (b"a", b"b", b"c"):
        out = await guesser.send(tag + b" LOGIN alice wrong-" + tag + b"\r\n")
        assert out == tag + b" NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
    # The right password no longer helps this source: refused unchecked, connection ended.
    out = await guesser.send(b"d LOGIN alice secret\r\n")
    assert out.startswith(b"* BYE Too many failed logins\r\nd NO [UNAVAILABLE] too many failed")
    assert guesser.session.closed and not guesser.session.authenticated
    again = connect(ATTACKER)
    assert (await again.send(b"e LOGIN bob hunter2\r\n")).endswith(b"\r\n")
    assert not again.session.authenticated
    # The owner, from elsewhere, is not locked out by the stranger.
    owner = connect(OWNER)
    assert (await owner.login()).startswith(b"L OK")
    lines = failures(caplog)
    prefix = f"auth failed: service=imap source={ATTACKER} user="
    assert lines == [prefix + '"alice" reason=bad-credentials'] * 3 + [
        prefix + '"alice" reason=throttled', prefix + '"bob" reason=throttled']
    assert not any("wrong-" in r.getMessage() or "secret" in r.getMessage()
                   for r in caplog.records)
    assert "auth ok: service=imap source=198.51.100.7 user=alice" in caplog.messages


async def test_account_guessed_from_many_sources_stays_open_to_its_owner(connect: Connect) -> None:
    for i in range(3):  # a botnet: one guess per address, no address reaches its own lockout
        bot = connect(f"10.9.0.{i}")
        assert b"AUTHENTICATIONFAILED" in await bot.send(b"a LOGIN alice guess\r\n")
    for i in range(3):  # ... but the account now refuses every address that guessed on it
        bot = connect(f"10.9.0.{i}")
        assert b"NO [UNAVAILABLE]" in await bot.send(b"b LOGIN alice guess2\r\n")
    assert (await connect(OWNER).login()).startswith(b"L OK")
    assert (await connect("10.9.0.200").login()).startswith(b"L OK")


async def test_authenticate_plain_goes_through_the_same_penalty(connect: Connect,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    guesser = connect(ATTACKER)
    for n in range(3):
        blob = base64.b64encode(b"\0alice\0nope%d" % n)
        assert b"AUTHENTICATIONFAILED" in await guesser.send(
            b"a AUTHENTICATE PLAIN " + blob + b"\r\n")
    assert (await guesser.send(b"b AUTHENTICATE PLAIN\r\n")) == b"+ \r\n"
    out = await guesser.send(base64.b64encode(b"\0alice\0secret") + b"\r\n")
    assert b"b NO [UNAVAILABLE]" in out and guesser.session.closed
    assert len(failures(caplog)) == 4


async def test_failed_login_name_is_escaped_and_logged_once(connect: Connect,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hostile = 'ev"il\r\nauth failed: service=imap source=192.0.2.1 user="x'
    literal = hostile.encode()
    dialog = connect(ATTACKER)
    out = await dialog.send(b"a LOGIN {%d+}\r\n" % len(literal) + literal + b" pw-XYZ\r\n")
    assert b"AUTHENTICATIONFAILED" in out
    lines = failures(caplog)
    assert len(lines) == 1
    assert lines[0] == (f"auth failed: service=imap source={ATTACKER} "
                        'user="ev\\"il\\r\\nauth failed: service=imap source=192.0.2.1 '
                        'user=\\"x" reason=bad-credentials')
    assert "\n" not in lines[0]
    assert not any("pw-XYZ" in r.getMessage() for r in caplog.records)


async def test_session_cap_per_user(connect: Connect) -> None:
    sessions: dict[str, int] = {}

    def admit(user: User) -> bool:
        if sessions.get(user.name, 0) >= 2:
            return False
        sessions[user.name] = sessions.get(user.name, 0) + 1
        return True

    for _ in range(2):
        assert (await connect(OWNER, admit_user=admit).login()).startswith(b"L OK")
    third = connect(OWNER, admit_user=admit)
    assert (await third.login()) == b"L NO [LIMIT] Too many sessions for this user\r\n"
    assert not third.session.authenticated
    bob = connect(OWNER, admit_user=admit)
    assert (await bob.send(b"b LOGIN bob hunter2\r\n")).startswith(b"b OK")
