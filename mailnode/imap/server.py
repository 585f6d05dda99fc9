"""The thin asyncio adapter: sockets, timers and connection limits around ImapSession."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import zlib

from mailnode.auth import Authenticator
from mailnode.guard import LOGIN_GRACE, ConnectionTable, source_key
from mailnode.imap.handlers.compress import Deflate
from mailnode.imap.parser import Limits
from mailnode.imap.session import ImapSession, Security
from mailnode.logsafe import LogThrottle, clean, held_back
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier

log = logging.getLogger("mailnode.imap")
READ_SIZE = 64 * 1024


class _Connection:
    """What the listener knows of one client: its task, and whether it was evicted."""

    def __init__(self, task: asyncio.Task[None], address: str) -> None:
        self.task = task
        self.address = address
        self.closing: str | None = None
        """Why the listener cancelled the task (the BYE text), None on shutdown."""

    def close(self, reason: str) -> None:
        self.closing = reason
        self.task.cancel()


class ImapServer:
    """Listens for IMAP clients; every connection gets its own :class:`ImapSession`.

    ``login_timeout`` is absolute: a client that has not logged in by then is disconnected
    however busily it trickles bytes. ``idle_timeout`` applies between commands afterwards.
    """

    def __init__(self, store: MailStore, notifier: ChangeNotifier, *, max_literal: int,
                 max_connections: int = 100, max_connections_per_source: int = 20,
                 max_sessions_per_user: int = 20, idle_timeout: float = 1800,
                 login_timeout: float = 60, tls_context: ssl.SSLContext | None = None,
                 require_tls: bool = False, auth: Authenticator | None = None,
                 eviction_grace: float = LOGIN_GRACE, send_timeout: float = 300.0) -> None:
        self.store = store
        self.auth = auth if auth is not None else Authenticator(store)
        self.tls_context = tls_context
        self.security = Security(tls_available=tls_context is not None,
                                 tls_required=require_tls)
        self.notifier = notifier
        self.limits = Limits(max_literal=max_literal)
        self.table: ConnectionTable[_Connection] = ConnectionTable(
            max_connections, max_connections_per_source, max_sessions_per_user,
            sessions_per_source=False, grace=eviction_grace)
        self._log_throttle = LogThrottle()
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.login_timeout = login_timeout
        self.port: int | None = None
        self.tls_port: int | None = None
        self._servers: list[asyncio.Server] = []

    async def start(self, host: str, port: int, *, implicit_tls: bool = False) -> None:
        """Bind and listen; with ``port=0`` the chosen port is in :attr:`port` afterwards
        (:attr:`tls_port` for an ``implicit_tls`` listener, which speaks TLS from the first
        byte, like port 993). Both listeners share one connection table and its limits."""
        if implicit_tls and self.tls_context is None:
            raise ValueError("implicit TLS needs a tls_context")

        async def on_connect(reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
            await self._on_connect(reader, writer, implicit_tls)

        server = await asyncio.start_server(on_connect, host, port)
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        if implicit_tls:
            self.tls_port = bound
        else:
            self.port = bound
        log.info("IMAP%s listening on %s:%d", "S" if implicit_tls else "", host, bound)

    async def stop(self) -> None:
        """Stop listening and end every session (each client gets a BYE)."""
        for server in self._servers:
            server.close()
        tasks = [conn.task for conn in self.table.handles()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          implicit_tls: bool = False) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        conn = _Connection(task, str(peer[0]) if isinstance(peer, tuple) else "unknown")
        admission = self.table.admit(conn, source_key(conn.address),
                                     asyncio.get_running_loop().time())
        if not admission.admitted:
            held = self._log_throttle.allow(source_key(conn.address))
            if held is not None:
                log.info("refusing IMAP connection from %s: %s%s", conn.address,
                         admission.reason, held_back(held))
            if not implicit_tls:  # a TLS client would take plaintext for a broken handshake
                writer.write(f"* BYE {admission.reason.capitalize()}, try again later\r\n"
                             .encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        if admission.evict is not None:
            log.debug("evicting IMAP connection from %s that has not logged in: listener full",
                     admission.evict.address)
            admission.evict.close("Too many connections, closing the oldest ones that are "
                                  "not logged in")
        session = ImapSession(self.store, self.notifier, limits=self.limits,
                              security=self.security, auth=self.auth, client=conn.address,
                              admit_user=lambda user: self.table.login(conn, user.id))
        def login_expired() -> None:
            if not session.authenticated:
                conn.close("Autologout: no login in time")

        # Absolute: trickling bytes, a slow reader, a slow handshake or a pending login do
        # not extend it.
        deadline = asyncio.get_running_loop().call_later(self.login_timeout, login_expired)
        handshaking = implicit_tls  # no plaintext BYE into a TLS handshake
        try:
            if implicit_tls:  # admitted first: pending handshakes count against the limits
                assert self.tls_context is not None
                await writer.start_tls(self.tls_context,
                                       ssl_handshake_timeout=self.login_timeout)
                session.tls_started()
                handshaking = False
            await self._serve(session, reader, writer)
        except asyncio.CancelledError:
            session.bye(conn.closing or "Server shutting down")
        except (ConnectionError, TimeoutError):
            pass
        except ssl.SSLError as exc:  # a failed handshake is the client's doing
            log.info("IMAP TLS handshake failed: %s", clean(exc))
        except Exception:
            log.exception("IMAP connection failed")
            session.bye("Internal server error")
        finally:
            deadline.cancel()
            self.table.release(conn)
            session.close()
            with contextlib.suppress(Exception):
                if not handshaking:
                    last = session.data_to_send()
                    writer.write(last if session.deflate is None
                                 else session.deflate.compress(last))
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _start_tls(self, session: ImapSession, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        assert self.tls_context is not None
        # Bytes that arrived after STARTTLS came in the clear; a client that does not wait for
        # the handshake (or an attacker injecting commands) is disconnected, not obeyed.
        if reader._buffer:  # type: ignore[attr-defined]  # no public API for this check
            raise ConnectionError("plaintext data after STARTTLS")
        await writer.start_tls(self.tls_context)
        session.tls_started()

    async def _serve(self, session: ImapSession, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        async def drain() -> None:
            # A client that stops reading holds its buffers and its session: not forever.
            # (asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the cancellation
            # with which the listener evicts or shuts down a session.)
            async with asyncio.timeout(self.send_timeout):
                await writer.drain()

        async def flush() -> None:  # a large FETCH goes out in pieces, at the client's pace
            send(session.data_to_send())
            await drain()

        session.flush = flush
        writer.write(session.greeting())
        await writer.drain()
        codec: Deflate | None = None

        async def take(data: bytes) -> None:
            """Received bytes to the session; once COMPRESS is on, inflated a bounded chunk
            at a time, each one handled and its replies sent before the next is made."""
            nonlocal codec
            if codec is None:
                await session.receive(data)
            else:
                codec.feed(data)
            while True:
                out = session.data_to_send()
                if out:
                    send(out)
                    await drain()
                if codec is None and session.deflate is not None:
                    codec = session.deflate  # the OK went out plain; everything after is not
                if codec is None or session.closed or not codec.has_pending:
                    return
                try:
                    chunk = codec.inflate()
                except zlib.error:
                    session.bye("Corrupt compressed data")
                    continue  # sends the BYE, then returns: the session is closed
                if not chunk:
                    return
                await session.receive(chunk)

        def send(data: bytes) -> None:
            writer.write(data if codec is None else codec.compress(data))
        read_task: asyncio.Task[bytes] | None = None
        watch_task: asyncio.Task[int] | None = None
        watching: tuple[int, int] | None = None
        try:
            while not session.closed:
                # Before login the absolute deadline in _on_connect applies instead.
                timeout = self.idle_timeout if session.authenticated else None
                watch = session.idle_watch
                if read_task is None and watch is None and watch_task is None \
                        and session.authenticated:
                    # Between a logged-in client's commands, outside IDLE, only the client is
                    # waited for: the read is awaited directly, with no task and no wait set
                    # made per command. (Before login the task path stays: its extra loop turns
                    # let a pre-login flood be read in before the BYE's close, which is then no
                    # reset; test_e2e's line flood test depends on that timing.)
                    try:
                        async with asyncio.timeout(timeout):
                            data = await reader.read(READ_SIZE)
                    except TimeoutError:
                        session.bye("Autologout: idle for too long")
                        break
                    if not data:
                        return
                    await take(data)
                else:
                    if read_task is None:
                        read_task = asyncio.ensure_future(reader.read(READ_SIZE))
                    if watch != watching and watch_task is not None:
                        watch_task.cancel()
                        watch_task = None
                    if watch is not None and watch_task is None:
                        watch_task = asyncio.ensure_future(self.notifier.wait(*watch))
                    watching = watch
                    waits: set[asyncio.Future[object]] = {read_task}  # type: ignore[arg-type]
                    if watch_task is not None:
                        waits.add(watch_task)  # type: ignore[arg-type]
                    done, _ = await asyncio.wait(waits, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        session.bye("Autologout: idle for too long")
                        break
                    if watch_task is not None and watch_task in done:
                        watch_task = None
                        watching = None
                        await session.refresh()
                    if read_task in done:
                        data = read_task.result()
                        read_task = None
                        if not data:
                            return
                        await take(data)
                out = session.data_to_send()
                if out:
                    send(out)
                    await drain()
                if session.starttls_requested:
                    await self._start_tls(session, reader, writer)
        finally:
            for pending in (read_task, watch_task):
                if pending is not None:
                    pending.cancel()
            session.flush = None  # session -> flush -> session: a cycle only the full GC frees
