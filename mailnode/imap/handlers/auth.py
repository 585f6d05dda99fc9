"""Commands of any state and of the not-authenticated state: CAPABILITY, NOOP, LOGOUT, ID,
STARTTLS, LOGIN and AUTHENTICATE (with its continuation).

Handlers take the session as ``self`` (they were its methods; the bodies are unchanged so that
work on them elsewhere still merges) and are routed in :mod:`mailnode.imap.dispatch`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailnode.auth import LoginFailed, LoginThrottled, NotAuthorised
from mailnode.imap import commands as c
from mailnode.imap import responses as r
from mailnode.imap.errors import CommandBad, CommandNo, ImapError
from mailnode.imap.parser import CommandParser
from mailnode.imap.states import State
from mailnode.sasl import PlainCredentials, SaslError, b64decode_strict, parse_plain

if TYPE_CHECKING:
    from mailnode.imap.session import ImapSession


async def do_capability(self: ImapSession, cmd: c.Capability) -> str:
    self.emit(r.CapabilityData(self._capabilities()))
    return "CAPABILITY completed"


async def do_noop(self: ImapSession, cmd: c.Noop) -> str:
    return "NOOP completed"


async def do_logout(self: ImapSession, cmd: c.Logout) -> str:
    self.bye("mailnode logging out")
    return "LOGOUT completed"


async def do_id(self: ImapSession, cmd: c.Id) -> str:
    self.emit(r.IdData([("name", "mailnode")]))
    return "ID completed"


async def do_starttls(self: ImapSession, cmd: c.StartTls) -> str:
    if not self.security.tls_available or self.tls_active:
        raise CommandNo("STARTTLS is not available on this connection")
    self.starttls_requested = True
    # Anything the client sent after STARTTLS was sent in the clear: never execute it.
    self.parser = CommandParser(self.parser.limits)
    return "Begin TLS negotiation now"


def _require_privacy(self: ImapSession) -> None:
    if self.security.tls_required and not self.tls_active:
        raise CommandNo("Use STARTTLS first: passwords never cross the network in clear",
                        "PRIVACYREQUIRED")


async def _login(self: ImapSession, creds: PlainCredentials) -> r.Completed:
    """The one place where login errors become replies (both LOGIN and AUTHENTICATE)."""
    try:
        user = await self.auth.authenticate(creds, self.client, "imap")
    except NotAuthorised:
        raise CommandNo("Not authorised to act as another user",
                        "AUTHORIZATIONFAILED") from None
    except LoginFailed:
        raise CommandNo("Invalid credentials", "AUTHENTICATIONFAILED") from None
    except LoginThrottled as exc:
        # The source is locked out: say so and hang up, it may not keep trying here.
        self.bye("Too many failed logins")
        raise CommandNo(str(exc), "UNAVAILABLE") from None
    if not self.admit_user(user):
        raise CommandNo("Too many sessions for this user", "LIMIT")
    self.user = user
    self.state = State.AUTHENTICATED
    return r.Completed("Logged in", f"CAPABILITY {self._capabilities()}")


async def do_login(self: ImapSession, cmd: c.Login) -> r.Completed:
    _require_privacy(self)
    return await _login(self, PlainCredentials("", cmd.user, cmd.password))


async def do_authenticate(self: ImapSession, cmd: c.Authenticate) -> r.Completed | None:
    _require_privacy(self)
    if cmd.mechanism != "PLAIN":
        raise CommandNo("Unsupported authentication mechanism")
    if cmd.initial is None:
        self._auth_pending = cmd
        self.emit(r.Continuation())
        return None
    return await _plain(self, cmd.initial)


async def auth_response(self: ImapSession, line: bytes) -> None:
    cmd = self._auth_pending
    assert cmd is not None
    self._auth_pending = None
    try:
        if line.strip() == b"*":
            raise CommandBad("Authentication cancelled")
        try:
            payload = b64decode_strict(line.strip())
        except SaslError:
            raise CommandBad("Invalid base64 in authentication response") from None
        done = await _plain(self, payload)
    except ImapError as exc:
        self._reply(cmd.tag, exc)
        return
    self.emit(r.Tagged(cmd.tag, "OK", done.text, done.code))


async def _plain(self: ImapSession, payload: bytes) -> r.Completed:
    try:
        creds = parse_plain(payload)
    except SaslError as exc:
        raise CommandBad(f"Malformed PLAIN response: {exc}") from None
    return await _login(self, creds)
