"""The thin asyncio adapter: sockets, timers and connection limits around ImapSession."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from mailnode.imap.fetch import StructureCache
from mailnode.imap.parser import Limits
from mailnode.imap.session import ImapSession, Security
from mailnode.logsafe import clean
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier

log = logging.getLogger("mailnode.imap")
READ_SIZE = 64 * 1024


class ImapServer:
    """Listens for IMAP clients; every connection gets its own :class:`ImapSession`."""

    def __init__(self, store: MailStore, notifier: ChangeNotifier, *, max_literal: int,
                 max_connections: int = 100, idle_timeout: float = 1800,
                 login_timeout: float = 60, tls_context: ssl.SSLContext | None = None,
                 require_tls: bool = False) -> None:
        self.store = store
        self.tls_context = tls_context
        self.security = Security(tls_available=tls_context is not None,
                                 tls_required=require_tls)
        self.notifier = notifier
        self.limits = Limits(max_literal=max_literal)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.login_timeout = login_timeout
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._cache = StructureCache()

    async def start(self, host: str, port: int) -> None:
        """Bind and listen; with ``port=0`` the chosen port is in :attr:`port` afterwards."""
        self._server = await asyncio.start_server(self._on_connect, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("IMAP listening on %s:%d", host, self.port)

    async def stop(self) -> None:
        """Stop listening and end every session (each client gets a BYE)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            writer.write(b"* BYE Too many connections, try again later\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        self._connections.add(task)
        session = ImapSession(self.store, self.notifier, limits=self.limits, cache=self._cache,
                              security=self.security)
        try:
            await self._serve(session, reader, writer)
        except asyncio.CancelledError:
            session.bye("Server shutting down")
        except (ConnectionError, TimeoutError):
            pass
        except ssl.SSLError as exc:  # a failed STARTTLS handshake is the client's doing
            log.info("IMAP TLS handshake failed: %s", clean(exc))
        except Exception:
            log.exception("IMAP connection failed")
            session.bye("Internal server error")
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.write(session.data_to_send())
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
        writer.write(session.greeting())
        await writer.drain()
        read_task: asyncio.Task[bytes] | None = None
        watch_task: asyncio.Task[int] | None = None
        watching: tuple[int, int] | None = None
        try:
            while not session.closed:
                if read_task is None:
                    read_task = asyncio.ensure_future(reader.read(READ_SIZE))
                watch = session.idle_watch
                if watch != watching and watch_task is not None:
                    watch_task.cancel()
                    watch_task = None
                if watch is not None and watch_task is None:
                    watch_task = asyncio.ensure_future(self.notifier.wait(*watch))
                watching = watch
                waits: set[asyncio.Future[object]] = {read_task}  # type: ignore[arg-type]
                if watch_task is not None:
                    waits.add(watch_task)  # type: ignore[arg-type]
                timeout = self.idle_timeout if session.authenticated else self.login_timeout
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
                    await session.receive(data)
                out = session.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                if session.starttls_requested:
                    await self._start_tls(session, reader, writer)
        finally:
            for pending in (read_task, watch_task):
                if pending is not None:
                    pending.cancel()
