"""The asyncio adapter of the submission server: one :class:`asyncio.Protocol` per connection
feeds the sans-IO :class:`~mailnode.smtp.protocol.SmtpSession`, writes its replies and answers
its events with the node's services (:class:`Authenticator`, :class:`SubmissionService`).

It replaced aiosmtpd (still the baseline of ``bench.smtp_submission``): that library's
per-command machinery (a stream read, several coroutines and hook lookups per line) cost
more CPU per message than the whole budget of a durable submission. Here a command that
needs no I/O is answered inside ``data_received``; one that does runs as a task, and what
the client pipelined meanwhile waits in the session's buffer (reading pauses if it grows).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

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
from mailnode.logsafe import LogThrottle, clean, held_back
from mailnode.smtp import replies
from mailnode.smtp.protocol import (
    Close,
    Event,
    Login,
    Mail,
    Message,
    Rcpt,
    SmtpSession,
    StartTls,
)
from mailnode.store.api import User

log = logging.getLogger(__name__)

PAUSE_AT = 64 * 1024
"""Received bytes waiting behind a pending command before the socket stops being read."""


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


class _Connection(asyncio.Protocol):
    """One client connection under the listener's :class:`ConnectionTable`, its login
    deadline (which, unlike the idle timeout, does not restart with each command: a client
    that trickles commands without logging in is still closed after ``login_timeout``) and
    its idle timeout."""

    def __init__(self, server: SubmissionServer, implicit_tls: bool) -> None:
        self._server = server
        self._implicit_tls = implicit_tls
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._raw: asyncio.Transport | None = None
        """The TCP transport of an implicit-TLS connection while its handshake runs."""
        self._session: SmtpSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._write_paused = False
        self._read_paused = False
        self._gone = False
        self.address = ""

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._admit(transport):
            return
        if self._implicit_tls:
            # Implicit TLS (RFC 8314) after admission, so that handshakes in progress count
            # against the listener's limits; the login deadline covers the handshake too.
            self._raw = transport
            transport.pause_reading()
            self._task = self._loop.create_task(self._handshake(transport))
            return
        self._begin(transport)

    def _begin(self, transport: asyncio.Transport) -> None:
        """The SMTP session starts on ``transport`` (TCP, or TLS on the implicit listener)."""
        server = self._server
        self.transport = transport
        self._session = SmtpSession(
            server.hostname, server.max_message_size, server.budget,
            tls_offered=server.tls_context is not None and not self._implicit_tls,
            tls_active=self._implicit_tls,
            plain_required=server.require_tls and not self._implicit_tls)
        self._last = self._loop.time()
        self._idle = self._loop.call_later(server.idle_timeout, self._check_idle)
        self._flush()

    async def _handshake(self, raw: asyncio.Transport) -> None:
        server = self._server
        assert server.tls_context is not None
        try:
            tls = await self._loop.start_tls(raw, self, server.tls_context, server_side=True,
                                             ssl_handshake_timeout=server.login_timeout)
        except (OSError, ssl.SSLError, asyncio.CancelledError) as exc:
            tls = None
            if not isinstance(exc, asyncio.CancelledError):
                log.info("SMTPS TLS handshake with %s failed: %s", self.address, clean(exc))
        if tls is None or tls.is_closing():
            self._forget()
            raw.close()
            return
        self._raw = None
        self._task = None
        self._begin(tls)

    def _admit(self, transport: asyncio.Transport) -> bool:
        """Take the connection into the table (evicting an idle one if full), or refuse it
        (with a 421 on a plaintext listener; a TLS client could not read it)."""
        server = self._server
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        admission = server.table.admit(self, source_key(self.address), self._loop.time())
        if not admission.admitted:
            held = server.log_throttle.allow(source_key(self.address))
            if held is not None:
                log.info("refusing SMTP connection from %s: %s%s", self.address,
                         admission.reason, held_back(held))
            if not self._implicit_tls:
                transport.write(replies.TOO_MANY_CONNECTIONS.format(
                    reason=admission.reason.capitalize()).encode() + b"\r\n")
            self._gone = True
            transport.close()
            return False
        if admission.evict is not None:
            log.debug("evicting SMTP connection from %s that has not logged in: listener full",
                      admission.evict.address)
            admission.evict.hang_up(replies.EVICTED)
        self._deadline = self._loop.call_later(server.login_timeout, self.hang_up,
                                               replies.LOGIN_TIMEOUT)
        return True

    def hang_up(self, reply: str) -> None:
        """Close from the server side (eviction, login deadline, idle, shutdown) with a 421."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(reply.encode() + b"\r\n")
            transport.close()
        elif transport is None and self._raw is not None:
            self._raw.close()  # still in the implicit-TLS handshake: nothing to say
        if self._session is not None:
            self._session.close()

    def _check_idle(self) -> None:
        """Idle since the last bytes received: say why before closing (RFC 5321 4.5.3.2)."""
        timeout = self._server.idle_timeout
        wait = self._last + timeout - self._loop.time()
        if wait > 0:
            self._idle = self._loop.call_later(wait, self._check_idle)
            return
        log.info("closing idle SMTP connection from %s", self.address)
        self.hang_up(replies.IDLE_TIMEOUT.format(seconds=round(timeout)))

    def _forget(self) -> None:
        for timer in (self._deadline, self._idle):
            if timer is not None:
                timer.cancel()
        self._server.table.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        self._forget()
        if self._session is not None:
            self._session.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def eof_received(self) -> bool | None:
        return False  # the client is done: close our side too

    def pause_writing(self) -> None:
        self._write_paused = True  # the client is not reading its replies: stop reading

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump()

    # --- the dialogue -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        session = self._session
        if session is None:
            return
        self._last = self._loop.time()
        session.receive(data)
        self._pump()

    def _pump(self) -> None:
        """Answer what the session can read now; stop at an event that needs I/O."""
        session = self._session
        if session is None or self._gone:
            return
        while self._task is None and not self._write_paused:
            event = session.next_event()
            if event is None:
                break
            if isinstance(event, Mail):
                self._mail(session, event)
            elif isinstance(event, Rcpt) and self._rcpt_now(session, event):
                pass
            elif isinstance(event, Close):
                self._flush()
                self._gone = True
                if self.transport is not None:
                    self.transport.close()
                return
            else:
                self._task = self._loop.create_task(self._run(session, event))
        self._flush()
        transport = self.transport
        if transport is None:
            return
        waiting = session.buffered() > PAUSE_AT or self._write_paused
        if waiting != self._read_paused:
            self._read_paused = waiting
            if waiting:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _flush(self) -> None:
        if self._session is None or self.transport is None:
            return
        out = self._session.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    def _mail(self, session: SmtpSession, event: Mail) -> None:
        service = self._server.service
        user = event.user
        assert isinstance(user, User)
        try:
            if not service.is_own_address(user, event.address):
                session.answer(replies.SENDER_NOT_OWNED.format(address=user.address))
                return
        except Exception as exc:
            session.answer(self._failure(exc))
            return
        wait = service.rate_limit.try_acquire(user.id)
        if wait:
            log.info("smtp rate limit for user=%s", user.name)
            session.answer(replies.RATE_LIMITED.format(seconds=max(1, round(wait))))
            return
        session.sender_ok(event.address)

    async def _run(self, session: SmtpSession, event: Event) -> None:
        """One event that needs I/O; then the dialogue goes on with what was pipelined."""
        try:
            if isinstance(event, Login):
                await self._login(session, event)
            elif isinstance(event, Rcpt):
                await self._rcpt(session, event)
            elif isinstance(event, Message):
                await self._submit(session, event)
            elif isinstance(event, StartTls):
                await self._starttls(session)
        finally:
            self._task = None
        self._pump()

    async def _login(self, session: SmtpSession, event: Login) -> None:
        """The one place where login errors become SMTP replies."""
        try:
            user = await self._server.auth.authenticate(event.creds, self.address, "smtp")
        except NotAuthorised:
            session.answer(replies.AUTH_AUTHZID)
        except LoginFailed:
            session.answer(replies.AUTH_FAILED)
        except LoginThrottled as exc:
            # The source is locked out: answer and hang up rather than hear more guesses.
            session.close_with(replies.AUTH_THROTTLED.format(seconds=round(exc.retry_after)))
            self._flush()
            self._gone = True
            if self.transport is not None:
                self.transport.close()
        except Exception as exc:
            session.answer(self._failure(exc))
        else:
            if not self._logged_in(user):
                session.answer(replies.TOO_MANY_SESSIONS)
            else:
                session.authenticated(user, user.id)

    def _logged_in(self, user: User) -> bool:
        """Count the session as ``user``'s; False if that user already has too many."""
        if not self._server.table.login(self, user.id):
            return False
        if self._deadline is not None:
            self._deadline.cancel()
        return True

    def _rcpt_now(self, session: SmtpSession, event: Rcpt) -> bool:
        """Answer a RCPT that needs nothing from the database here (no task); False: not."""
        try:
            canonical = self._server.service.recipient_now(event.address)
        except Refused as exc:
            session.answer(_refusal(exc))
            return True
        if canonical is None:
            return False
        session.recipient_ok(canonical)
        return True

    async def _rcpt(self, session: SmtpSession, event: Rcpt) -> None:
        try:
            canonical = await self._server.service.check_recipient(event.address)
        except Refused as exc:
            session.answer(_refusal(exc))
        except Exception as exc:
            session.answer(self._failure(exc))
        else:
            session.recipient_ok(canonical)

    async def _submit(self, session: SmtpSession, event: Message) -> None:
        user = event.user
        assert isinstance(user, User)
        try:
            queue_id = await self._server.service.submit(user, event.recipients,
                                                         event.content)
        except Refused as exc:
            session.answer(_refusal(exc))
        except Exception:
            log.exception("submission from user=%s failed", user.name)
            session.answer(replies.TEMPORARY_FAILURE)
        else:
            session.answer(replies.QUEUED.format(queue_id=queue_id))

    async def _starttls(self, session: SmtpSession) -> None:
        """RFC 3207 on this connection: the session starts afresh over TLS."""
        transport, context = self.transport, self._server.tls_context
        assert transport is not None and context is not None
        self._flush()
        try:
            tls = await self._loop.start_tls(transport, self, context, server_side=True,
                                             ssl_handshake_timeout=self._server.login_timeout)
        except (OSError, ssl.SSLError) as exc:
            log.info("smtp connection from %s failed: TLS handshake: %s", self.address,
                     clean(exc))
            tls = None
        if tls is None or tls.is_closing():
            self._gone = True
            session.close()
            self._forget()  # start_tls closed the connection; nothing else will say so
            transport.close()
            return
        self.transport = tls
        self._read_paused = False
        session.tls_started()

    def _failure(self, exc: Exception) -> str:
        """Bad input gets a plain reply and an INFO line; only the unexpected is logged as
        a bug, and no exception text ever reaches the client."""
        if isinstance(exc, UnicodeError):
            log.info("smtp client %s sent undecodable characters", self.address)
            return replies.BAD_CHARACTERS
        log.error("smtp session failed", exc_info=exc)
        return replies.INTERNAL_ERROR


class SubmissionServer:
    """The listening sockets and their sessions."""

    def __init__(self, service: SubmissionService, *, max_message_size: int,
                 max_connections: int = 100, max_connections_per_source: int = 20,
                 max_sessions_per_user: int = 20, login_timeout: float = 60.0,
                 hostname: str = "mailnode", tls_context: ssl.SSLContext | None = None,
                 require_tls: bool = False, auth: Authenticator | None = None,
                 eviction_grace: float = LOGIN_GRACE, idle_timeout: float = 300.0) -> None:
        self.service = service
        self.auth = auth if auth is not None else Authenticator(service.store)
        self.idle_timeout = idle_timeout
        self.tls_context = tls_context
        self.require_tls = require_tls
        """Beyond loopback a password only ever crosses the network inside TLS: after
        STARTTLS, or on the implicit-TLS listener (which offers no STARTTLS)."""
        self.max_message_size = max_message_size
        self.table: ConnectionTable[_Connection] = ConnectionTable(
            max_connections, max_connections_per_source, max_sessions_per_user,
            sessions_per_source=False, grace=eviction_grace)
        self.login_timeout = login_timeout
        self.log_throttle = LogThrottle()
        # Messages being received by all sessions together: four of the largest.
        self.budget = ByteBudget(4 * max_message_size)
        self.hostname = hostname
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, implicit_tls: bool = False) -> None:
        """Listen on ``port``; with ``implicit_tls`` TLS from the first byte (RFC 8314
        submissions, like port 465). Both listeners share one connection table."""
        loop = asyncio.get_running_loop()
        if not implicit_tls:
            self._server = await loop.create_server(lambda: _Connection(self, False),
                                                    host, port)
            log.info("SMTP listening on %s:%d", host, self.port)
            return
        if self.tls_context is None:
            raise ValueError("implicit TLS needs a tls_context")
        self._tls_server = await loop.create_server(lambda: _Connection(self, True),
                                                    host, port)
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
        for connection in self.table.handles():
            connection.hang_up(replies.SHUTTING_DOWN)
        for server in servers:
            await server.wait_closed()
        self._server = self._tls_server = None
