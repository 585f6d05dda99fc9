"""The IMAP session: its state and the wire engine -- commands in, response bytes out.

The session parses, looks each command up in :mod:`mailnode.imap.dispatch` (the handlers live
in :mod:`mailnode.imap.handlers` by area), reports mailbox changes between commands from the
change feed, and queues responses (serialised by :mod:`mailnode.imap.responses`). It owns no
socket. :meth:`ImapSession.receive` takes bytes and appends replies to an outgoing
buffer; the asyncio adapter moves bytes and, while the client IDLEs, calls
:meth:`ImapSession.refresh` whenever the ChangeNotifier reports a change.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailnode.auth import Authenticator
from mailnode.imap import commands as c
from mailnode.imap import feed, handlers
from mailnode.imap import responses as r
from mailnode.imap.capabilities import ADVERTISED, PRE_AUTH
from mailnode.imap.contexts import Contexts
from mailnode.imap.dispatch import ALLOWED as ALLOWED
from mailnode.imap.dispatch import ROUTES as ROUTES
from mailnode.imap.errors import CommandBad, CommandNo, ImapError, ParseError
from mailnode.imap.feed import Selected
from mailnode.imap.handlers import auth, mailboxes
from mailnode.imap.handlers import esearch as ext_search
from mailnode.imap.handlers.mailboxes import DELIMITER as DELIMITER
from mailnode.imap.handlers.mailboxes import MAX_NAME_DEPTH as MAX_NAME_DEPTH
from mailnode.imap.handlers.mailboxes import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from mailnode.imap.handlers.mailboxes import MAX_PATTERN_LENGTH as MAX_PATTERN_LENGTH
from mailnode.imap.handlers.mailboxes import ListPattern as ListPattern
from mailnode.imap.handlers.mailboxes import _add_parents as _add_parents
from mailnode.imap.handlers.mailboxes import _has_children as _has_children
from mailnode.imap.handlers.messages import BODY_BATCH as BODY_BATCH
from mailnode.imap.handlers.messages import BODY_BATCH_BYTES as BODY_BATCH_BYTES
from mailnode.imap.parser import CommandParser, Limits, NeedContinuation
from mailnode.imap.responses import mailbox_name
from mailnode.imap.searchres import Saved
from mailnode.imap.sequences import SequenceSet
from mailnode.imap.states import State as State
from mailnode.logsafe import clean
from mailnode.store.api import (
    Changes,
    Mailbox,
    MailboxExists,
    MailboxProtected,
    MailStore,
    MessageMeta,
    NoSuchMailbox,
    OverQuota,
    StoreError,
    User,
)
from mailnode.store.notify import ChangeNotifier

log = logging.getLogger("mailnode.imap")

FLUSH_ABOVE = 256 * 1024
"""Once this much output is pending in a FETCH, the session hands it to the adapter (which
writes and drains) before rendering more."""
LINE_BATCH = 512
"""Listing lines (UID/FLAGS/MODSEQ FETCH) joined into one write."""
MAX_MAILBOXES = 10_000
"""Mailboxes per user: CREATE beyond it gets ``NO [LIMIT]``, so one LIST stays bounded."""


@dataclass(frozen=True)
class Security:
    """What the connection offers: STARTTLS, and whether a password needs TLS first."""

    tls_available: bool = False
    tls_required: bool = False  # the listener is reachable beyond loopback


def capabilities(state: State, security: Security = Security(), tls_active: bool = False,
                 ) -> str:
    caps: tuple[str, ...] = ADVERTISED
    if state is State.NOT_AUTHENTICATED:
        # Limits.before_login: non-synchronising literals only up to 4096 octets (RFC 7888)
        caps = tuple("LITERAL-" if cap == "LITERAL+" else cap for cap in caps)
        if security.tls_available and not tls_active:
            caps += ("STARTTLS",)
        if security.tls_required and not tls_active:
            caps += ("LOGINDISABLED",)
        else:
            caps += PRE_AUTH
    return " ".join(caps)


class ImapSession:
    """One client connection's protocol state."""

    def __init__(self, store: MailStore, notifier: ChangeNotifier, *,
                 limits: Limits | None = None,
                 security: Security = Security(), auth: Authenticator | None = None,
                 client: str = "unknown",
                 admit_user: Callable[[User], bool] = lambda user: True) -> None:
        """``client`` is the peer's IP address (for the login penalty and the log);
        ``admit_user`` says whether the user may open one more session."""
        self.store = store
        self.auth = auth if auth is not None else Authenticator(store)
        self.client = client
        self.admit_user = admit_user
        self.security = security
        self.tls_active = False
        self.starttls_requested = False
        """Set once STARTTLS is answered; the adapter then upgrades the connection."""
        self.notifier = notifier
        self._limits = limits or Limits()
        self._pre_auth_limits = self._limits.before_login()
        self.parser = CommandParser(self._pre_auth_limits)
        self.state = State.NOT_AUTHENTICATED
        self.user: User | None = None
        self.selected: Selected | None = None
        self.flush: Callable[[], Awaitable[None]] | None = None
        """Set by the adapter: sends :meth:`data_to_send` and waits until the peer took it.
        A large FETCH awaits it between pieces; without it output just accumulates."""
        self._out: list[bytes] = []
        self._out_size = 0
        self.enabled: set[str] = set()
        """What the client switched on with ENABLE (RFC 5161)."""
        self._auth_pending: c.Authenticate | None = None
        self._idle_tag: str | None = None
        self.contexts = Contexts()
        """RFC 5267 updating contexts (see :mod:`mailnode.imap.handlers.esearch`)."""
        self.saved = Saved()
        """RFC 5182 saved search result (``$``)."""
        self.deflate: handlers.compress.Deflate | None = None
        """Set by COMPRESS (RFC 4978); the adapter then runs the connection through it."""

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    # --- adapter interface -------------------------------------------------------------------

    def greeting(self) -> bytes:
        return r.serialise(r.Condition("OK", "mailnode IMAP ready",
                                       f"CAPABILITY {self._capabilities()}"))

    def _capabilities(self) -> str:
        return capabilities(self.state, self.security, self.tls_active)

    def tls_started(self) -> None:
        """The adapter finished the TLS handshake: the session starts afresh (RFC 3501)."""
        self.starttls_requested = False
        self.tls_active = True

    @property
    def closed(self) -> bool:
        return self.state is State.LOGOUT

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    @property
    def idle_watch(self) -> tuple[int, int] | None:
        """``(mailbox_id, version)`` to wait on while the client IDLEs in a mailbox."""
        if self._idle_tag is None or self.selected is None:
            return None
        return self.selected.mailbox.id, self.selected.version

    @property
    def pending_output(self) -> int:
        """Bytes of output not yet taken by :meth:`data_to_send`."""
        return self._out_size

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return data

    def close(self) -> None:
        """The connection is gone: release what a half-received command holds (spool files)."""
        self.parser.close()

    def bye(self, text: str) -> None:
        """End the session from the server side (shutdown, timeout)."""
        if not self.closed:
            self.emit(r.Condition("BYE", text))
            self.state = State.LOGOUT

    async def refresh(self) -> None:
        """Report changes of the selected mailbox (used during IDLE)."""
        if self._mailbox_gone():
            return
        await self._sync(allow_expunge=True)
        await ext_search.flush(self)

    def _mailbox_gone(self) -> bool:
        """End the session if its selected mailbox was deleted or renamed by another session.

        RFC 3501 leaves BYE as the way out: the client re-syncs on a new connection, and
        nothing about whatever the mailbox's name or id stands for now is ever shown.
        """
        sel = self.selected
        if sel is None or not self.notifier.retired(sel.mailbox.id, sel.mailbox.uidvalidity):
            return False
        self.selected = None
        self.bye("Selected mailbox was deleted or renamed")
        return True

    async def receive(self, data: bytes) -> None:
        """Handle received bytes: every complete command is executed in order."""
        self.parser.feed(data)
        while not self.closed and not self.starttls_requested:
            # A stranger gets small lines and literals; a logged-in user the configured ones.
            self.parser.limits = self._limits if self.authenticated else self._pre_auth_limits
            try:
                if self._auth_pending is not None or self._idle_tag is not None:
                    line = self.parser.next_line()
                    if line is None:
                        return
                    if self._auth_pending is not None:
                        await auth.auth_response(self, line)
                    else:
                        await mailboxes.idle_line(self, line)
                    continue
                event = self.parser.next_event()
            except ParseError as exc:
                self._reply(exc.tag, exc)
                if exc.fatal:
                    self.bye("Protocol error, closing connection")
                continue
            if event is None:
                return
            if isinstance(event, NeedContinuation):
                self.emit(r.Continuation("Ready for literal data"))
                continue
            try:
                await self._execute(event)
            finally:
                if isinstance(event, c.Append | c.AppendMany):
                    event.close()  # done, failed or cancelled: the spool files go

    # --- plumbing ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def emit(self, resp: r.Response) -> None:
        """Queue a response (serialised here, the one way responses reach the output)."""
        self._write(r.serialise(resp))

    def _untagged(self, data: bytes) -> None:
        """Queue a line already made by ``responses.data`` (the change feed's, contexts')."""
        self._write(b"* " + data + b"\r\n")

    async def _flush_if_full(self) -> None:
        if self.flush is not None and self._out_size > FLUSH_ABOVE:
            await self.flush()

    def _reply(self, tag: str | None, exc: ImapError) -> None:
        """The one place where errors become protocol replies."""
        self.emit(r.Tagged(tag or "*", exc.status, exc.text, exc.code))

    async def _execute(self, cmd: c.Command) -> None:
        log.debug("command %s %s", clean(cmd.tag), cmd.name)
        if self._mailbox_gone():
            return
        route = ROUTES.get(type(cmd))
        if route is None or self.state not in route.states:
            self._reply(cmd.tag, CommandBad(f"{cmd.name} not allowed in {self.state.value} state"))
            return
        allow_expunge = not route.numbered or getattr(cmd, "uid", False)
        if allow_expunge:
            # Report pending changes first, so that the command works on (and its results
            # are numbered by) the current state rather than on messages already gone.
            await self._sync(True)
            if self.closed:
                return
        try:
            text = await route.handler(self, cmd)
        except ImapError as exc:
            await self._sync(allow_expunge)
            self._reply(cmd.tag, exc)
            return
        except StoreError as exc:
            await self._sync(allow_expunge)
            self._reply(cmd.tag, _store_error(exc))
            return
        except ConnectionError:
            raise  # the client went away during a flush: the adapter ends the connection
        except Exception:
            log.exception("internal error in %s", cmd.name)
            self._reply(cmd.tag, CommandNo("Internal server error", "SERVERBUG"))
            return
        if text is None:  # the command continues (AUTHENTICATE, IDLE)
            return
        done = text if isinstance(text, r.Completed) else r.Completed(text)
        if self.closed:
            self.emit(r.Tagged(cmd.tag, "OK", done.text, done.code))
            return
        await self._sync(allow_expunge)
        await ext_search.flush(self)
        self.emit(r.Tagged(cmd.tag, "OK", done.text, done.code))

    async def _sync(self, allow_expunge: bool) -> None:
        """Tell the client what changed in its mailbox since it last heard (RFC 3501 §7),
        from the change feed: the cost follows the changes, not the mailbox's size."""
        sel = self.selected
        if sel is None or self.closed:
            return
        version = self.notifier.version(sel.mailbox.id)
        if version == sel.version and not (allow_expunge and sel.gone):
            self._pending_expunges(sel)
            return
        try:
            changes = Changes([], [], sel.modseq)
            if version != sel.version:
                changes = await self.store.changes_since(sel.mailbox.id, sel.modseq)
            if not changes.complete:  # away for longer than the tombstones reach
                changes = feed.diff(sel, *await self.store.snapshot(sel.mailbox.id))
        except NoSuchMailbox:
            self.bye("Selected mailbox was deleted")
            return
        update = feed.apply(sel, changes, allow_expunge=allow_expunge,
                            condstore=self.condstore, qresync=self.qresync)
        if update.expunged:  # REMOVEFROM while the client's numbers still name them
            ext_search.expunging(self, list(update.expunged), update.expunged)
        ext_search.touched(self, update.changed)
        for line in update.lines:
            self._untagged(line)
        await self._announce_new(sel, update.new)
        sel.version = version
        self._pending_expunges(sel)

    def _pending_expunges(self, sel: Selected) -> None:
        """Expunges held back (RFC 3501 §7.4.1) while MODSEQs past them were sent: tell a
        CONDSTORE client a HIGHESTMODSEQ from before them, so a resync finds them."""
        if sel.gone and self.condstore:
            self.emit(r.Condition("OK", "Expunges pending", f"HIGHESTMODSEQ {sel.gone_since}"))

    def _keywords(self, metas: list[MessageMeta]) -> None:
        """Announce keywords the client has not seen before a FETCH shows them."""
        sel = self.selected
        assert sel is not None
        for line in feed.announce_keywords(sel, metas):
            self._untagged(line)

    async def _announce_new(self, sel: Selected, new: list[MessageMeta]) -> None:
        if not new:
            return
        for m in new:  # at the end: the others keep their sequence numbers
            sel.uids.append(m.uid)
            sel.metas[m.uid] = m
        sel.max_uid = new[-1].uid
        ext_search.touched(self, (m.uid for m in new))
        await self._claim_recent(sel)
        self.emit(r.Exists(len(sel.uids)))
        self.emit(r.Recent(len(sel.recent)))

    async def _claim_recent(self, sel: Selected) -> None:
        """Take the not-yet-claimed messages this session has been told of (not those that
        arrived meanwhile: they are for the first session to tell of them) as its \\Recent."""
        before, upto = await self.store.claim_recent(sel.mailbox.id, sel.max_uid,
                                                     claim=not sel.readonly)
        # uids are ascending: the claimed range is one slice (a scan per new message was
        # quadratic in a growing mailbox)
        sel.recent.update(sel.uids[bisect_right(sel.uids, before):bisect_right(sel.uids, upto)])

    def _targets(self, seqset: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """``(seq, uid)`` pairs named by a sequence set (or uid set), ascending."""
        sel = self.selected
        assert sel is not None
        seqset = self.saved.resolve(sel, seqset, sel.uids, as_uids=uid)
        if uid:
            return seqset.uid_targets(sel.uids)
        if seqset.has_explicit_above(len(sel.uids)):
            raise CommandBad("Sequence number beyond the last message")
        return [(s, sel.uids[s - 1]) for s in seqset.seqs(len(sel.uids))]

    def _require_writable(self) -> Selected:
        sel = self.selected
        assert sel is not None
        if sel.readonly:
            raise CommandNo("Mailbox is read-only", "READ-ONLY")
        return sel

    async def _mailbox(self, name: str, *, trycreate: bool = False) -> Mailbox:
        assert self.user is not None
        mailbox = await self.store.get_mailbox(self.user.id, name)
        if mailbox is None:
            raise CommandNo("No such mailbox", "TRYCREATE" if trycreate else "NONEXISTENT")
        return mailbox

    # --- what handlers share ------------------------------------------------------------------

    @property
    def utf8(self) -> bool:
        """UTF8=ACCEPT is enabled: mailbox names go both ways as UTF-8."""
        return "UTF8=ACCEPT" in self.enabled

    def wire_name(self, name: str) -> bytes:
        """A mailbox name as this session sends it (modified UTF-7, or UTF-8 once enabled)."""
        return mailbox_name(name, self.utf8)

    def _enable(self, name: str) -> None:
        """Switch an extension on; QRESYNC implies CONDSTORE (RFC 7162 §3.2.3). The first
        CONDSTORE-enabling command in a selected mailbox tells its HIGHESTMODSEQ (§3.1.2)."""
        if name in self.enabled:
            return
        self.enabled.add(name)
        if name == "QRESYNC":
            self._enable("CONDSTORE")
        elif name == "CONDSTORE" and self.selected is not None:
            self.emit(r.Condition("OK", "Highest", f"HIGHESTMODSEQ {self.selected.modseq}"))


def _store_error(exc: StoreError) -> ImapError:
    if isinstance(exc, NoSuchMailbox):
        return CommandNo("No such mailbox", "NONEXISTENT")
    if isinstance(exc, MailboxExists):
        return CommandNo("Mailbox already exists", "ALREADYEXISTS")
    if isinstance(exc, MailboxProtected):
        return CommandNo("This mailbox cannot be deleted or renamed", "CANNOT")
    if isinstance(exc, OverQuota):
        return CommandNo("Storage quota exceeded", "OVERQUOTA")
    return CommandNo("Storage error", "SERVERBUG")
