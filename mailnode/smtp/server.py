"""The aiosmtpd adapter: each hook converts its arguments, calls the submission service and
maps the result to a reply from ``replies``. It runs on the node's loop via ``create_server``
(aiosmtpd's Controller would start a second loop in a thread)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session, TLSSetupException

from mailnode.delivery.submit import Refused, SubmissionService
from mailnode.logsafe import clean, escape
from mailnode.sasl import PlainCredentials, SaslError, b64decode_strict, parse_plain
from mailnode.smtp import replies
from mailnode.store.api import User

log = logging.getLogger(__name__)

# Plain AUTH without TLS is only allowed on loopback (``require_tls`` otherwise); aiosmtpd
# warns about it on every connection, which would flood the log.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
logging.getLogger("mail.log").addFilter(
    lambda record: "auth_required == True but auth_require_tls" not in record.getMessage())

MAX_RECIPIENTS = 100


def _user(session: Session) -> User:
    """The authenticated user; aiosmtpd's ``auth_required`` answers 530 before MAIL."""
    user: object = session.auth_data
    assert isinstance(user, User)
    return user


class SubmissionHandler:
    """aiosmtpd handler for authenticated submission."""

    def __init__(self, service: SubmissionService) -> None:
        self.service = service

    async def _login(self, server: SMTP, creds: PlainCredentials) -> AuthResult:
        user = await self.service.store.authenticate(creds.login, creds.password)
        if user is None:
            log.info("smtp login failed for %s", clean(creds.login))
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)
        if not creds.acts_as(user.name, user.address):
            return AuthResult(success=False, handled=False, message=replies.AUTH_AUTHZID)
        log.info("smtp login user=%s", user.name)
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
            return exc.reply
        envelope.rcpt_tos.append(canonical)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        user = _user(session)
        content = envelope.original_content or b""
        try:
            queue_id = await self.service.submit(user, list(envelope.rcpt_tos), content)
        except Refused as exc:
            return exc.reply
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


class _LimitedSMTP(SMTP):
    """Counts live sessions so the listener can refuse a connection flood."""

    def __init__(self, handler: SubmissionHandler, live: set[SMTP], limit: int,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._live = live
        self._limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self._live) >= self._limit:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._live.discard(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        """Every reply leaves as one printable line: aiosmtpd echoes a client's unknown
        command (and a VRFY argument) back, which must not carry CR, NUL, escapes or
        undecodable bytes (a lone surrogate would even make the encoding raise)."""
        if isinstance(status, str):
            await super().push(escape(status))
        else:
            await super().push(status)


class SubmissionServer:
    """The listening socket and its sessions."""

    def __init__(self, service: SubmissionService, *, max_message_size: int,
                 max_connections: int = 100, hostname: str = "mailnode",
                 tls_context: ssl.SSLContext | None = None, require_tls: bool = False) -> None:
        self.handler = SubmissionHandler(service)
        self.tls_context = tls_context
        self.require_tls = require_tls
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.hostname = hostname
        self._server: asyncio.Server | None = None
        self._live: set[SMTP] = set()

    def _protocol(self) -> SMTP:
        return _LimitedSMTP(
            self.handler, self._live, self.max_connections,
            hostname=self.hostname, ident="mailnode ESMTP", data_size_limit=self.max_message_size,
            enable_SMTPUTF8=True, decode_data=False, auth_required=True,
            tls_context=self.tls_context,
            # Beyond loopback a password only ever crosses the network inside TLS.
            require_starttls=self.require_tls, auth_require_tls=self.require_tls,
            auth_exclude_mechanism=[], command_call_limit=1000, timeout=300)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for session in list(self._live):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None
