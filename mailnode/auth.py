"""Password logins for every protocol: the store's check behind the login penalty.

IMAP and SMTP call :meth:`Authenticator.authenticate` and map its two errors to replies in one
place each. Every refused login is logged here, exactly once, in a fixed format that fail2ban
can match (documented in the README)::

    auth failed: service=imap source=203.0.113.5 user="bob" reason=bad-credentials

``user`` is the login name as sent, escaped (``logsafe.clean``, plus ``"``); never a password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mailnode.guard import LoginPenalty, Throttled, source_key
from mailnode.logsafe import LogThrottle, clean, held_back
from mailnode.sasl import PlainCredentials
from mailnode.store.api import MailStore, User

log = logging.getLogger("mailnode.auth")


class LoginError(Exception):
    """A refused login; the protocol layer answers it, this module has logged it."""


class LoginFailed(LoginError):
    """Wrong credentials, unknown login, or an authorisation identity that is not the user."""


class NotAuthorised(LoginFailed):
    """The password was right but the authorisation identity names someone else."""


class LoginThrottled(LoginError):
    """Refused without checking: the source failed too often. Retry after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after:.0f} seconds")
        self.retry_after = retry_after


def account_key(login: str) -> str:
    """Names and addresses as the store matches them, bounded (a key, not a lookup)."""
    return login.strip().lower()[:256]


def _name(login: str) -> str:
    return clean(login).replace('"', '\\"')


class Authenticator:
    """``store.authenticate`` with the node's :class:`LoginPenalty` in front of it.

    A penalised attempt sleeps in its own coroutine before the password is checked, so the
    wait costs the guesser's connection, never the event loop, the password hashing thread
    or other users; a locked-out attempt is refused without hashing at all.
    """

    def __init__(self, store: MailStore, penalty: LoginPenalty | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.penalty = penalty if penalty is not None else LoginPenalty()
        self.clock = clock
        self._log_throttle = LogThrottle()

    async def authenticate(self, creds: PlainCredentials, address: str,
                           service: str) -> User:
        """``address`` is the client's IP address (logged as is, counted by ``source_key``)."""
        source = source_key(address)
        account = account_key(creds.login)
        try:
            wait = self.penalty.reserve(source, account, self.clock())
        except Throttled as exc:
            # Refused unchecked: a locked-out guesser's every attempt is not worth a line.
            held = self._log_throttle.allow(source)
            if held is not None:
                self._refused(service, address, creds.login, "throttled", held)
            raise LoginThrottled(exc.retry_after) from None
        if wait > 0:
            await asyncio.sleep(wait)
        user = await self.store.authenticate(creds.login, creds.password)
        if user is None:
            self.penalty.failed(source, account, self.clock())
            self._refused(service, address, creds.login, "bad-credentials")
            raise LoginFailed("invalid credentials")
        self.penalty.succeeded(source, account, self.clock())
        if not creds.acts_as(user.name, user.address):
            # The password was right: no penalty, but the login is still refused.
            self._refused(service, address, creds.login, "foreign-authzid")
            raise NotAuthorised("not authorised to act as another user")
        log.info("auth ok: service=%s source=%s user=%s", service, address, user.name)
        return user

    @staticmethod
    def _refused(service: str, source: str, login: str, reason: str, held: int = 0) -> None:
        log.warning('auth failed: service=%s source=%s user="%s" reason=%s%s',
                    service, source, _name(login), reason, held_back(held))
