"""The aiosmtpd adapter: each hook converts its arguments, calls the submission service and
maps the result to a reply from ``replies``. It runs on the node's loop via ``create_server``
(aiosmtpd's Controller would start a second loop in a thread)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import warnings
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session, TLSSetupException, syntax

from mailnode.auth import Authenticator, LoginFailed, LoginThrottled, NotAuthorised
from mailnode.delivery.submit import (
    AuthorNotOwned,
    MailboxFull,
    RecipientInvalid,
    Refused,
    SubmissionService,
    SystemFull,
)
from mailnode.guard import LOGIN_GRACE, ByteBudget, ConnectionTable, source_key
from mailnode.logsafe import LogThrottle, clean, escape, held_back
from mailnode.mime.address import ADDR_SPEC
from mailnode.sasl import PlainCredentials, SaslError, b64decode_strict, parse_plain
from mailnode.smtp import replies
from mailnode.store.api import User

log = logging.getLogger(__name__)

# Plain AUTH without TLS is only allowed on loopback (``require_tls`` otherwise); aiosmtpd
# warns about it on every connection, which would flood the log.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
# aiosmtpd 1.4 itself sets the deprecated Session.login_data on every successful AUTH and
# logs (not warns) that it is deprecated: drop exactly that line.
logging.getLogger("mail.log").addFilter(
    lambda record: "auth_required == True but auth_require_tls" not in record.getMessage()
    and not record.getMessage().startswith("Session.login_data is deprecated"))

MAX_RECIPIENTS = 100
_PATH = re.compile(r"<(" + ADDR_SPEC.pattern + r")>[ \t]*+(?![(])")


def _user(session: Session) -> User:
    """The authenticated user; aiosmtpd's ``auth_required`` answers 530 before MAIL."""
    user: object = session.auth_data
    assert isinstance(user, User)
    return user


def _refusal(exc: Refused) -> str:
    """The one place where the submission service's refusals become SMTP replies."""
    if isinstance(exc, RecipientInvalid):
        return replies.RECIPIENT_INVALID.format(reason=exc.reason)
    if isinstance(exc, AuthorNotOwned):
        return replies.AUTHOR_NOT_OWNED.format(address=exc.address)
    if isinstance(exc, SystemFull):
        return replies.SYSTEM_FULL.format(what=exc.what)
    if isinstance(exc, MailboxFull):
        return replies.MAILBOX_FULL.format(address=exc.address)
    return replies.TEMPORARY_FAILURE


class SubmissionHandler:
    """aiosmtpd handler for authenticated submission."""

    def __init__(self, service: SubmissionService, auth: Authenticator | None = None) -> None:
        self.service = service
        self.auth = auth if auth is not None else Authenticator(service.store)

    async def _login(self, server: SMTP, creds: PlainCredentials) -> AuthResult:
        """The one place where login errors become SMTP replies."""
        address = server.address if isinstance(server, _LimitedSMTP) else "unknown"
        try:
            user = await self.auth.authenticate(creds, address, "smtp")
        except NotAuthorised:
            return AuthResult(success=False, handled=False, message=replies.AUTH_AUTHZID)
        except LoginFailed:
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)
        except LoginThrottled as exc:
            # The source is locked out: answer and hang up rather than hear more guesses.
            await server.push(replies.AUTH_THROTTLED.format(seconds=round(exc.retry_after)))
            if server.transport is not None:
                server.transport.close()
            return AuthResult(success=False, handled=True)
        if isinstance(server, _LimitedSMTP) and not server.logged_in(user):
            return AuthResult(success=False, handled=False, message=replies.TOO_MANY_SESSIONS)
        return AuthResult(success=True, auth_data=user, message=replies.AUTH_OK)

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        try:
            if len(args) == 1:
                blob = await server.challenge_auth("")
                if not isinstance(blob, bytes):
                    return AuthResult(success=False, handled=True)  # aborted; already answered
            else:
                blob = b64decode_strict(args[1])
            creds = parse_plain(blob)
        except SaslError:
            return AuthResult(success=False, handled=False, message=replies.AUTH_MALFORMED)
        return await self._login(server, creds)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        try:
            if len(args) == 1:
                login = await server.challenge_auth("Username:")
                if not isinstance(login, bytes):
                    return AuthResult(success=False, handled=True)
            else:
                login = b64decode_strict(args[1])
            password = await server.challenge_auth("Password:")
            if not isinstance(password, bytes):
                return AuthResult(success=False, handled=True)
            creds = PlainCredentials("", login.decode("utf-8"), password.decode("utf-8"))
        except (SaslError, UnicodeDecodeError):
            return AuthResult(success=False, handled=False, message=replies.AUTH_MALFORMED)
        return await self._login(server, creds)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """Advertise ENHANCEDSTATUSCODES (RFC 2034): every reply but these carries one."""
        session.host_name = hostname  # aiosmtpd leaves this to a handler with this hook
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        user = _user(session)
        if not self.service.is_own_address(user, address):
            return replies.SENDER_NOT_OWNED.format(address=user.address)
        wait = self.service.rate_limit.try_acquire(user.id)
        if wait:
            log.info("smtp rate limit for user=%s", user.name)
            return replies.RATE_LIMITED.format(seconds=max(1, round(wait)))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS
        try:
            canonical = await self.service.check_recipient(address)
        except Refused as exc:
            return _refusal(exc)
        envelope.rcpt_tos.append(canonical)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        user = _user(session)
        content = envelope.original_content or b""
        try:
            queue_id = await self.service.submit(user, list(envelope.rcpt_tos), content)
        except Refused as exc:
            return _refusal(exc)
        except Exception:
            log.exception("submission from user=%s failed", user.name)
            return replies.TEMPORARY_FAILURE
        return replies.QUEUED.format(queue_id=queue_id)

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's answer to anything a command raised. Without this hook it replies
        ``500 Error: (ValueError) ...`` with the exception text and logs a traceback, also
        for a client's overlong AUTH line. Bad input gets a plain reply and an INFO line;
        only the unexpected is logged as a bug."""
        if isinstance(error, ValueError) and isinstance(error.__context__,
                                                        asyncio.LimitOverrunError):
            log.info("smtp client sent an overlong line")  # readline() in an AUTH exchange
            return replies.LINE_TOO_LONG
        if isinstance(error, UnicodeError):
            log.info("smtp client sent undecodable characters")
            return replies.BAD_CHARACTERS
        if isinstance(error, TLSSetupException | ConnectionError):
            log.info("smtp connection failed: %s", clean(error.__cause__ or error))
            return replies.INTERNAL_ERROR  # aiosmtpd closes the connection on TLS failures
        log.error("smtp session failed", exc_info=error)
        return replies.INTERNAL_ERROR


def _declared_size(mail_options: list[str]) -> int | None:
    """The SIZE=n a client declared with MAIL FROM, if any (RFC 1870)."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit() and len(value) < 12:
            return int(value)
    return None


class _LimitedSMTP(SMTP):
    """One connection under the listener's :class:`ConnectionTable` and login deadline.

    aiosmtpd's own ``timeout`` restarts with every command; the login deadline does not, so
    a client that trickles commands without logging in is still closed after
    ``login_timeout``.
    """

    def __init__(self, handler: SubmissionHandler, table: ConnectionTable[_LimitedSMTP],
                 login_timeout: float, log_throttle: LogThrottle, budget: ByteBudget,
                 implicit_tls: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._implicit_tls = implicit_tls
        self._raw: asyncio.Transport | None = None
        """The TCP transport of an implicit-TLS connection while its handshake runs."""
        self._handshake: asyncio.Task[None] | None = None
        self._verbatim = False
        self._table = table
        self._budget = budget
        self._max_size = int(kwargs["data_size_limit"])
        self._log_throttle = log_throttle
        self._login_timeout = login_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self.address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._implicit_tls is not None:
            if self._raw is None:  # TCP is up: admit, then the TLS handshake
                assert isinstance(transport, asyncio.Transport)
                self._raw = transport
                transport.pause_reading()  # nothing reaches aiosmtpd before the handshake
                if self._admit(transport, plaintext=False):
                    self._handshake = self.loop.create_task(self._start_tls(transport))
                return
            super().connection_made(transport)  # the TLS transport: the session starts
            return
        first = not self.address  # STARTTLS calls this again for the TLS transport
        super().connection_made(transport)
        if first:
            self._admit(transport, plaintext=True)

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        """Implicit TLS (RFC 8314), after admission so that handshakes in progress count
        against the listener's limits; the login deadline covers the handshake too."""
        assert self._implicit_tls is not None
        try:
            tls = await self.loop.start_tls(raw, self, self._implicit_tls, server_side=True,
                                            ssl_handshake_timeout=self._login_timeout)
        except (OSError, ssl.SSLError, asyncio.CancelledError) as exc:
            tls = None
            if not isinstance(exc, asyncio.CancelledError):
                log.info("SMTPS TLS handshake with %s failed: %s", self.address, clean(exc))
        if tls is None or tls.is_closing():
            self._forget()
            raw.close()
            return
        self.connection_made(tls)

    def _admit(self, transport: asyncio.BaseTransport, plaintext: bool) -> bool:
        """Take the connection into the table (evicting an idle one if full), or refuse it
        (with a 421 on a plaintext listener; a TLS client could not read it)."""
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        admission = self._table.admit(self, source_key(self.address),
                                      asyncio.get_running_loop().time())
        if not admission.admitted:
            held = self._log_throttle.allow(source_key(self.address))
            if held is not None:
                log.info("refusing SMTP connection from %s: %s%s", self.address,
                         admission.reason, held_back(held))
            assert isinstance(transport, asyncio.WriteTransport)
            if plaintext:
                transport.write(replies.TOO_MANY_CONNECTIONS.format(
                    reason=admission.reason.capitalize()).encode() + b"\r\n")
            transport.close()
            return False
        if admission.evict is not None:
            log.debug("evicting SMTP connection from %s that has not logged in: listener full",
                     admission.evict.address)
            admission.evict.hang_up(replies.EVICTED)
        self._deadline = self.loop.call_later(self._login_timeout, self.hang_up,
                                              replies.LOGIN_TIMEOUT)
        return True

    def logged_in(self, user: User) -> bool:
        """Count the session as ``user``'s; False if that user already has too many."""
        if not self._table.login(self, user.id):
            return False
        if self._deadline is not None:
            self._deadline.cancel()
        return True

    def hang_up(self, reply: str) -> None:
        """Close from the server side (eviction, login deadline, idle) with a 421."""
        if self.transport is not None and not self.transport.is_closing():
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(reply.encode() + b"\r\n")
            self.transport.close()
        elif self.transport is None and self._raw is not None:
            self._raw.close()  # still in the implicit-TLS handshake: nothing to say

    def _timeout_cb(self) -> None:
        """aiosmtpd's idle timeout closes silently; say why first (RFC 5321 4.5.3.2)."""
        log.info("closing idle SMTP connection from %s", self.address)
        self.hang_up(replies.IDLE_TIMEOUT.format(seconds=round(self._timeout_duration)))

    def _forget(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._table.release(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._forget()
        if self.session is not None:  # None: lost before the implicit-TLS session began
            super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """``<local@domain>`` of dot-atoms, nearly every path a client sends, without
        aiosmtpd's general parser (it builds a class and a token tree per call: a quarter of
        a no-op server's time). Anything else goes to that parser; tests check both agree."""
        m = _PATH.match(arg)
        if m is None or self.local_part_limit:
            return super()._getaddr(arg)
        return m[1], arg[m.end():]

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._verbatim = True  # RFC 2034: the answer to EHLO carries no enhanced codes
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._verbatim = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._verbatim = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._verbatim = False

    async def smtp_DATA(self, arg: str) -> None:
        """DATA within the listener's budget of message bytes being received at once.

        aiosmtpd holds a message in memory (line by line, then joined) until its 250, so
        twenty sessions of one user sending the largest messages at once would cost the node
        gigabytes. A message reserves its declared SIZE (RFC 1870; the whole limit when
        undeclared) before it is read, and may not exceed what it declared by more than a
        little; what does not fit is told to try again shortly.
        """
        if (self.session is None or not self.session.authenticated or self.envelope is None
                or not self.envelope.rcpt_tos or arg):
            await super().smtp_DATA(arg)  # refused by aiosmtpd before any data is read
            return
        declared = _declared_size(self.envelope.mail_options)
        size = self._max_size if declared is None else min(
            self._max_size, declared + declared // 10 + 4096)
        owner = getattr(self.session.auth_data, "id", None)
        if not self._budget.reserve(size, owner):
            await self.push(replies.BUSY)
            return
        self.data_size_limit = size
        try:
            await super().smtp_DATA(arg)
        finally:
            self.data_size_limit = self._max_size
            self._budget.release(size, owner)

    async def push(self, status: AnyStr) -> None:
        """Every reply leaves as one printable line: aiosmtpd echoes a client's unknown
        command (and a VRFY argument) back, which must not carry CR, NUL, escapes or
        undecodable bytes (a lone surrogate would even make the encoding raise). All but the
        greeting and the answer to EHLO/HELO carry an enhanced status code."""
        if isinstance(status, str):
            greeting = status == f"220 {self.hostname} {self.__ident__}"
            if not greeting and not (self._verbatim and status.startswith("250")):
                limit = self.data_size_limit or self._max_size
                status = replies.enhance(status, self._max_size,
                                         declared=limit < self._max_size)
            await super().push(escape(status))
        else:
            await super().push(status)


class SubmissionServer:
    """The listening socket and its sessions."""

    def __init__(self, service: SubmissionService, *, max_message_size: int,
                 max_connections: int = 100, max_connections_per_source: int = 20,
                 max_sessions_per_user: int = 20, login_timeout: float = 60.0,
                 hostname: str = "mailnode", tls_context: ssl.SSLContext | None = None,
                 require_tls: bool = False, auth: Authenticator | None = None,
                 eviction_grace: float = LOGIN_GRACE, idle_timeout: float = 300.0) -> None:
        self.handler = SubmissionHandler(service, auth)
        self.idle_timeout = idle_timeout
        self.tls_context = tls_context
        self.require_tls = require_tls
        self.max_message_size = max_message_size
        self.table: ConnectionTable[_LimitedSMTP] = ConnectionTable(
            max_connections, max_connections_per_source, max_sessions_per_user,
            sessions_per_source=False, grace=eviction_grace)
        self.login_timeout = login_timeout
        self._log_throttle = LogThrottle()
        # Messages being received by all sessions together: four of the largest.
        self._budget = ByteBudget(4 * max_message_size)
        self.hostname = hostname
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None

    def _protocol(self, implicit_tls: bool = False) -> SMTP:
        # Beyond loopback a password only ever crosses the network inside TLS: after
        # STARTTLS, or on the implicit-TLS listener (which offers no STARTTLS).
        plain_required = self.require_tls and not implicit_tls
        return _LimitedSMTP(
            self.handler, self.table, self.login_timeout, self._log_throttle, self._budget,
            implicit_tls=self.tls_context if implicit_tls else None,
            hostname=self.hostname, ident="mailnode ESMTP", data_size_limit=self.max_message_size,
            enable_SMTPUTF8=True, decode_data=False, auth_required=True,
            tls_context=None if implicit_tls else self.tls_context,
            require_starttls=plain_required, auth_require_tls=plain_required,
            auth_exclude_mechanism=[], command_call_limit=1000, timeout=self.idle_timeout)

    async def start(self, host: str, port: int, *, implicit_tls: bool = False) -> None:
        """Listen on ``port``; with ``implicit_tls`` TLS from the first byte (RFC 8314
        submissions, like port 465). Both listeners share one connection table."""
        loop = asyncio.get_running_loop()
        if not implicit_tls:
            self._server = await loop.create_server(self._protocol, host, port)
            log.info("SMTP listening on %s:%d", host, self.port)
            return
        if self.tls_context is None:
            raise ValueError("implicit TLS needs a tls_context")
        self._tls_server = await loop.create_server(lambda: self._protocol(True), host, port)
        log.info("SMTPS listening on %s:%d", host, self.tls_port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int:
        assert self._tls_server is not None
        return int(self._tls_server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        for server in servers:
            server.close()
        for session in self.table.handles():
            session.hang_up(replies.SHUTTING_DOWN)
        for server in servers:
            await server.wait_closed()
        self._server = self._tls_server = None
