"""The IMAP session state machine: commands in, response bytes out.

It owns no socket. :meth:`ImapSession.receive` takes bytes and appends replies to an outgoing
buffer; the asyncio adapter moves bytes and, while the client IDLEs, calls
:meth:`ImapSession.refresh` whenever the ChangeNotifier reports a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial

from mailnode.auth import Authenticator, LoginFailed, LoginThrottled, NotAuthorised
from mailnode.imap import commands as c
from mailnode.imap import condstore, feed, handlers, objects, search, sortthread, utf7
from mailnode.imap import responses as r
from mailnode.imap.capabilities import ADVERTISED, ENABLABLE, PRE_AUTH
from mailnode.imap.contexts import Contexts
from mailnode.imap.errors import CommandBad, CommandNo, ImapError, ParseError
from mailnode.imap.feed import Selected
from mailnode.imap.fetch import (
    HEADER_SECTIONS,
    STRUCTURE_ITEMS,
    header_lines,
    listing_lines,
    render_chunks,
)
from mailnode.imap.handlers import binary, listext, multiappend
from mailnode.imap.handlers import esearch as ext_search
from mailnode.imap.parser import CommandParser, Limits, NeedContinuation
from mailnode.imap.searchres import Saved
from mailnode.imap.sequences import SequenceSet, compress
from mailnode.logsafe import clean
from mailnode.mime import MessageStructure, analyse
from mailnode.mime import headers as mh
from mailnode.sasl import PlainCredentials, SaslError, b64decode_strict, parse_plain
from mailnode.store.api import (
    SYSTEM_FLAGS,
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

DELIMITER = "/"
BODY_BATCH = 64
_REFERENCES = mh.field_pattern(("references",))
INLINE_SEARCH_KEYS = 8
"""Search programs longer than this are evaluated in a worker thread, a batch at a time."""
BODY_BATCH_BYTES = 1024 * 1024
"""FETCH/SEARCH load at most BODY_BATCH bodies at once, and FETCH no more than about this many
bytes of them (at least one message), so memory stays near one message, not 64 of them."""
FLUSH_ABOVE = 256 * 1024
"""Once this much output is pending in a FETCH, the session hands it to the adapter (which
writes and drains) before rendering more."""
LINE_BATCH = 512
"""Listing lines (UID/FLAGS/MODSEQ FETCH) joined into one write."""
_LISTING_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})
_UNSEEN = c.SearchFlag("\\Seen", present=False)
MAX_PATTERN_LENGTH = 1024
"""Longest LIST reference + pattern (characters); a longer one gets ``NO [LIMIT]``."""
MAX_MAILBOXES = 10_000
"""Mailboxes per user: CREATE beyond it gets ``NO [LIMIT]``, so one LIST stays bounded."""
MAX_NAME_LENGTH = 512
MAX_NAME_DEPTH = 32
"""Longest mailbox name (characters) and deepest hierarchy a CREATE or RENAME may make."""


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = frozenset({c.Capability, c.Noop, c.Logout, c.Id})
_AUTHENTICATED = _ANY | {c.Enable, c.Namespace, c.ListCmd, c.Select, c.Status, c.Create,
                         c.Delete, c.Rename, c.Subscribe, c.Append, c.Idle, c.AppendMany,
                         } | handlers.AUTHENTICATED
ALLOWED: dict[State, frozenset[type[c.Command]]] = {
    State.NOT_AUTHENTICATED: _ANY | {c.Login, c.Authenticate, c.StartTls},
    State.AUTHENTICATED: _AUTHENTICATED,
    State.SELECTED: _AUTHENTICATED | {c.Check, c.Close, c.Unselect, c.Expunge, c.Fetch,
                                      c.StoreCmd, c.Search, c.Copy, c.SortCmd, c.ThreadCmd,
                                      c.CancelUpdate},
    State.LOGOUT: frozenset(),
}
"""Which command may run in which state; anything else gets BAD and the session goes on."""


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


def mailbox_name(name: str, utf8: bool = False) -> bytes:
    """A mailbox name as it goes on the wire: modified UTF-7, or UTF-8 once the client
    enabled UTF8=ACCEPT (RFC 6855: never modified UTF-7 then), quoted where it can be."""
    if not utf8:
        return r.string(utf7.encode(name))
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in name) or len(name) > 1024:
        return r.string(name)  # a literal
    raw = name.encode("utf-8", "replace")
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


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
        return f"* OK [CAPABILITY {self._capabilities()}] mailnode IMAP ready\r\n".encode()

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
            self._write(f"* BYE {text}\r\n".encode())
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
                        await self._auth_response(line)
                    else:
                        await self._idle_line(line)
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
                self._write(b"+ Ready for literal data\r\n")
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

    def _untagged(self, data: bytes) -> None:
        self._write(b"* " + data + b"\r\n")

    async def _flush_if_full(self) -> None:
        if self.flush is not None and self._out_size > FLUSH_ABOVE:
            await self.flush()

    def _reply(self, tag: str | None, exc: ImapError) -> None:
        """The one place where errors become protocol replies."""
        self._write(f"{tag or '*'} {exc.status} {exc.response_text()}\r\n".encode())

    async def _execute(self, cmd: c.Command) -> None:
        log.debug("command %s %s", clean(cmd.tag), cmd.name)
        if self._mailbox_gone():
            return
        if type(cmd) not in ALLOWED[self.state]:
            self._reply(cmd.tag, CommandBad(f"{cmd.name} not allowed in {self.state.value} state"))
            return
        handler: Callable[[c.Command], Awaitable[str | None]] = getattr(
            self, "_do_" + type(cmd).__name__.lower(), None) or partial(
            handlers.HANDLERS[type(cmd)], self)
        allow_expunge = not (isinstance(cmd, c.Fetch | c.StoreCmd | c.Search | c.SortCmd
                                        | c.ThreadCmd) and not cmd.uid)
        if allow_expunge:
            # Report pending changes first, so that the command works on (and its results
            # are numbered by) the current state rather than on messages already gone.
            await self._sync(True)
            if self.closed:
                return
        try:
            text = await handler(cmd)
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
        if self.closed:
            self._write(f"{cmd.tag} OK {text}\r\n".encode())
            return
        await self._sync(allow_expunge)
        await ext_search.flush(self)
        self._write(f"{cmd.tag} OK {text}\r\n".encode())

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
            self._untagged(b"OK [HIGHESTMODSEQ %d] Expunges pending" % sel.gone_since)

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
        self._untagged(b"%d EXISTS" % len(sel.uids))
        self._untagged(b"%d RECENT" % len(sel.recent))

    async def _claim_recent(self, sel: Selected) -> None:
        """Take the not-yet-claimed messages as this session's \\Recent ones."""
        before, upto = await self.store.claim_recent(sel.mailbox.id, claim=not sel.readonly)
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

    # --- any state ---------------------------------------------------------------------------

    async def _do_capability(self, cmd: c.Capability) -> str:
        self._untagged(b"CAPABILITY " + self._capabilities().encode())
        return "CAPABILITY completed"

    async def _do_noop(self, cmd: c.Noop) -> str:
        return "NOOP completed"

    async def _do_logout(self, cmd: c.Logout) -> str:
        self.bye("mailnode logging out")
        return "LOGOUT completed"

    async def _do_id(self, cmd: c.Id) -> str:
        self._untagged(b'ID ("name" "mailnode")')
        return "ID completed"

    # --- not authenticated -------------------------------------------------------------------

    async def _do_starttls(self, cmd: c.StartTls) -> str:
        if not self.security.tls_available or self.tls_active:
            raise CommandNo("STARTTLS is not available on this connection")
        self.starttls_requested = True
        # Anything the client sent after STARTTLS was sent in the clear: never execute it.
        self.parser = CommandParser(self.parser.limits)
        return "Begin TLS negotiation now"

    def _require_privacy(self) -> None:
        if self.security.tls_required and not self.tls_active:
            raise CommandNo("Use STARTTLS first: passwords never cross the network in clear",
                            "PRIVACYREQUIRED")

    async def _login(self, creds: PlainCredentials) -> str:
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
        return f"[CAPABILITY {self._capabilities()}] Logged in"

    async def _do_login(self, cmd: c.Login) -> str:
        self._require_privacy()
        return await self._login(PlainCredentials("", cmd.user, cmd.password))

    async def _do_authenticate(self, cmd: c.Authenticate) -> str | None:
        self._require_privacy()
        if cmd.mechanism != "PLAIN":
            raise CommandNo("Unsupported authentication mechanism")
        if cmd.initial is None:
            self._auth_pending = cmd
            self._write(b"+ \r\n")
            return None
        return await self._plain(cmd.initial)

    async def _auth_response(self, line: bytes) -> None:
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
            text = await self._plain(payload)
        except ImapError as exc:
            self._reply(cmd.tag, exc)
            return
        self._write(f"{cmd.tag} OK {text}\r\n".encode())

    async def _plain(self, payload: bytes) -> str:
        try:
            creds = parse_plain(payload)
        except SaslError as exc:
            raise CommandBad(f"Malformed PLAIN response: {exc}") from None
        return await self._login(creds)

    # --- authenticated -----------------------------------------------------------------------

    @property
    def utf8(self) -> bool:
        """UTF8=ACCEPT is enabled: mailbox names go both ways as UTF-8."""
        return "UTF8=ACCEPT" in self.enabled

    def wire_name(self, name: str) -> bytes:
        """A mailbox name as this session sends it (modified UTF-7, or UTF-8 once enabled)."""
        return mailbox_name(name, self.utf8)

    async def _do_enable(self, cmd: c.Enable) -> str:
        named = [n for n in dict.fromkeys(cmd.capabilities)
                 if n in ENABLABLE and n not in self.enabled]
        for name in named:
            self._enable(name)
        self.parser.utf8 = self.utf8  # the parser reads names as this session writes them
        self._untagged(b" ".join([b"ENABLED", *(n.encode() for n in named)]))
        return "ENABLE completed"

    def _enable(self, name: str) -> None:
        """Switch an extension on; QRESYNC implies CONDSTORE (RFC 7162 §3.2.3). The first
        CONDSTORE-enabling command in a selected mailbox tells its HIGHESTMODSEQ (§3.1.2)."""
        if name in self.enabled:
            return
        self.enabled.add(name)
        if name == "QRESYNC":
            self._enable("CONDSTORE")
        elif name == "CONDSTORE" and self.selected is not None:
            self._untagged(b"OK [HIGHESTMODSEQ %d] Highest" % self.selected.modseq)

    async def _do_namespace(self, cmd: c.Namespace) -> str:
        self._untagged(b'NAMESPACE (("" "/")) NIL NIL')
        return "NAMESPACE completed"

    async def _do_listcmd(self, cmd: c.ListCmd) -> str:
        assert self.user is not None
        if cmd.extended is not None:
            return await listext.run(self, cmd)
        word = b"LSUB" if cmd.lsub else b"LIST"
        if cmd.pattern == "" and not cmd.lsub:
            self._untagged(b'LIST (\\Noselect) "/" ""')
            return "LIST completed"
        if len(cmd.reference) + len(cmd.pattern) > MAX_PATTERN_LENGTH:
            raise CommandNo("Mailbox pattern too long", "LIMIT")
        mailboxes = await self.store.list_mailboxes(self.user.id)
        special = {m.name: m.special_use for m in mailboxes}
        names = await self.store.subscriptions(self.user.id) if cmd.lsub else set(special)
        if not cmd.lsub:  # parents that are not mailboxes themselves show up as \Noselect
            _add_parents(names)
        matches = ListPattern(cmd.reference + cmd.pattern)
        unsubscribed: set[str] = set()
        if cmd.lsub:  # RFC 3501 6.3.9: "foo/bar" subscribed, LSUB "%" gives "foo" \Noselect
            unsubscribed = _unsubscribed_parents(names, matches)
            names = names | unsubscribed
        ordered = sorted(names)
        for name in sorted(names, key=lambda n: (n != "INBOX", n)):
            if not matches(name):
                continue
            attrs = []
            if name not in special or name in unsubscribed:
                attrs.append("\\Noselect")
            attrs.append("\\HasChildren" if _has_children(ordered, name) else "\\HasNoChildren")
            if special.get(name):
                attrs.append(str(special[name]))
            self._untagged(word + b" (" + " ".join(attrs).encode() + b') "/" '
                           + self.wire_name(name))
        return f"{word.decode()} completed"

    async def _do_select(self, cmd: c.Select) -> str:
        if cmd.qresync is not None and not self.qresync:
            raise CommandBad("QRESYNC must be enabled first")
        if self.selected is not None:  # RFC 7162 §3.2.11: the old mailbox is closed first
            self._untagged(b"OK [CLOSED] Previous mailbox closed")
        self.selected = None
        self.state = State.AUTHENTICATED
        mailbox = await self._mailbox(cmd.mailbox)
        if cmd.condstore:
            self.enabled.add("CONDSTORE")
        version = self.notifier.version(mailbox.id)
        metas, highest = await self.store.snapshot(mailbox.id)
        uids = [m.uid for m in metas]
        sel = Selected(mailbox, cmd.readonly, uids, {m.uid: m for m in metas}, version,
                       max_uid=uids[-1] if uids else 0, modseq=highest,
                       keywords={f for m in metas for f in m.flags} - SYSTEM_FLAGS)
        for line in feed.flag_lines(sel):
            self._untagged(line)
        await self._claim_recent(sel)
        self._untagged(b"%d EXISTS" % len(uids))
        self._untagged(b"%d RECENT" % len(sel.recent))
        first_unseen = next((i + 1 for i, m in enumerate(metas) if "\\Seen" not in m.flags), None)
        if first_unseen is not None:
            self._untagged(b"OK [UNSEEN %d] First unseen message" % first_unseen)
        self._untagged(b"OK [UIDVALIDITY %d] UIDs valid" % mailbox.uidvalidity)
        uidnext = max(mailbox.uidnext, sel.max_uid + 1)
        self._untagged(b"OK [UIDNEXT %d] Predicted next UID" % uidnext)
        self._untagged(b"OK [MAILBOXID (%s)] Ok" % mailbox.mailboxid.encode("ascii"))
        self._untagged(b"OK [HIGHESTMODSEQ %d] Highest" % highest)
        self.selected = sel
        self.state = State.SELECTED
        if cmd.qresync is not None and cmd.qresync.uidvalidity == mailbox.uidvalidity:
            await self._resync(sel, cmd.qresync.modseq, cmd.qresync.known_uids)
        mode = "READ-ONLY" if cmd.readonly else "READ-WRITE"
        return f"[{mode}] {'EXAMINE' if cmd.readonly else 'SELECT'} completed"

    async def _vanished_earlier(self, sel: Selected, since: int,
                                within: SequenceSet | None) -> tuple[list[int], Changes]:
        """Uids expunged after ``since`` (within ``within``), for VANISHED (EARLIER); when the
        tombstones do not reach back that far, every uid below UIDNEXT the mailbox lacks."""
        changes = await self.store.changes_since(sel.mailbox.id, since)
        if changes.complete:
            gone = [u for u in changes.vanished if u not in sel.metas]
        else:
            gone = [u for u in range(1, sel.max_uid + 1) if u not in sel.metas]
        if within is not None:  # "*" is the mailbox's largest uid, not the largest gone
            largest = sel.uids[-1] if sel.uids else sel.max_uid
            gone = [u for u in gone if within.contains(u, largest)]
        return gone, changes

    async def _resync(self, sel: Selected, since: int, known: SequenceSet | None) -> None:
        """QRESYNC's part of SELECT (RFC 7162 §3.2.5): what vanished and what changed after
        the client's modseq, from the feed."""
        gone, changes = await self._vanished_earlier(sel, since, known)
        if gone:
            self._untagged(b"VANISHED (EARLIER) " + compress(gone).encode())
        for meta in changes.changed:
            current = sel.metas.get(meta.uid)
            if current is not None and current.modseq > since:
                self._untagged(feed.fetch_line(sel, current, condstore=True))

    async def _do_status(self, cmd: c.Status) -> str:
        mailbox = await self._mailbox(cmd.mailbox)
        await self._status_response(mailbox, cmd.items)
        return "STATUS completed"

    async def _status_response(self, mailbox: Mailbox, wanted: tuple[str, ...]) -> None:
        """``* STATUS`` for a mailbox already looked up (STATUS, and LIST-STATUS for each
        mailbox it lists). Asking for HIGHESTMODSEQ enables CONDSTORE (RFC 7162 §3.1)."""
        if "HIGHESTMODSEQ" in wanted:
            self._enable("CONDSTORE")
        values = {"MESSAGES": mailbox.messages, "RECENT": mailbox.recent,
                  "UIDNEXT": mailbox.uidnext,
                  "UIDVALIDITY": mailbox.uidvalidity, "UNSEEN": mailbox.unseen,
                  "MAILBOXID": f"({mailbox.mailboxid})",
                  "HIGHESTMODSEQ": mailbox.highest_modseq,
                  **await handlers.quota.status_values(self, mailbox, wanted)}
        items = " ".join(f"{item} {values[item]}" for item in wanted)
        self._untagged(b"STATUS " + self.wire_name(mailbox.name) + f" ({items})".encode())

    async def _do_create(self, cmd: c.Create) -> str:
        assert self.user is not None
        name = cmd.mailbox.rstrip(DELIMITER)
        if not name or DELIMITER * 2 in name or name.startswith(DELIMITER):
            raise CommandBad("Invalid mailbox name")
        if name == "INBOX":
            raise CommandNo("INBOX always exists", "ALREADYEXISTS")
        _check_name_limits(name)
        use = objects.special_use(cmd.use)
        if await self.store.count_mailboxes(self.user.id) >= MAX_MAILBOXES:
            raise CommandNo(f"At most {MAX_MAILBOXES} mailboxes per user", "LIMIT")
        box = await self.store.create_mailbox(self.user.id, name, use)
        return f"[MAILBOXID ({box.mailboxid})] CREATE completed"

    async def _do_delete(self, cmd: c.Delete) -> str:
        assert self.user is not None
        if cmd.mailbox == "INBOX":
            raise CommandNo("INBOX cannot be deleted", "CANNOT")
        await self.store.delete_mailbox(self.user.id, cmd.mailbox)
        if self.selected is not None and self.selected.mailbox.name == cmd.mailbox:
            self.selected = None
            self.state = State.AUTHENTICATED
        return "DELETE completed"

    async def _do_rename(self, cmd: c.Rename) -> str:
        assert self.user is not None
        new = cmd.new.rstrip(DELIMITER)
        if not new or new == "INBOX":
            raise CommandNo("Invalid target name", "CANNOT")
        _check_name_limits(new)
        await self.store.rename_mailbox(self.user.id, cmd.old, new)
        if self.selected is not None and self.selected.mailbox.name == cmd.old:
            self.selected = None  # renamed under us: a new mailbox now (new UIDVALIDITY)
            self.state = State.AUTHENTICATED
        return "RENAME completed"

    async def _do_subscribe(self, cmd: c.Subscribe) -> str:
        assert self.user is not None
        if cmd.subscribe:
            await self._mailbox(cmd.mailbox)  # only existing mailboxes can be subscribed to
        await self.store.subscribe(self.user.id, cmd.mailbox, cmd.subscribe)
        return f"{'SUBSCRIBE' if cmd.subscribe else 'UNSUBSCRIBE'} completed"

    async def _do_append(self, cmd: c.Append) -> str:
        mailbox = await self._mailbox(cmd.mailbox, trycreate=True)
        data = cmd.message.read()
        if cmd.binary:
            data = await asyncio.to_thread(binary.for_storage, data)
        uidvalidity, uid = await self.store.append(mailbox.id, data, cmd.flags, cmd.date)
        log.info('user=%s appended uid %d to mailbox="%s" (%d bytes)',
                 self.user.name if self.user else "?", uid, clean(mailbox.name),
                 cmd.message.size)
        return f"[APPENDUID {uidvalidity} {uid}] APPEND completed"

    async def _do_appendmany(self, cmd: c.AppendMany) -> str:
        return await multiappend.run(self, cmd)

    async def _do_idle(self, cmd: c.Idle) -> str | None:
        await self._sync(allow_expunge=True)
        self._idle_tag = cmd.tag
        self._write(b"+ idling\r\n")
        return None

    async def _idle_line(self, line: bytes) -> None:
        tag = self._idle_tag
        self._idle_tag = None
        await self._sync(allow_expunge=True)
        if line.strip().upper() == b"DONE":
            self._write(f"{tag} OK IDLE terminated\r\n".encode())
        else:
            self._reply(tag, CommandBad("Expected DONE to end IDLE"))

    # --- selected ----------------------------------------------------------------------------

    async def _do_check(self, cmd: c.Check) -> str:
        return "CHECK completed"

    async def _do_close(self, cmd: c.Close) -> str:
        sel = self.selected
        assert sel is not None
        self.selected = None
        self.state = State.AUTHENTICATED
        if not sel.readonly:
            await self.store.expunge(sel.mailbox.id)
        return "CLOSE completed"

    async def _do_unselect(self, cmd: c.Unselect) -> str:
        self.selected = None
        self.state = State.AUTHENTICATED
        return "UNSELECT completed"

    async def _do_expunge(self, cmd: c.Expunge) -> str:
        sel = self._require_writable()
        uids = None if cmd.uids is None else self.saved.resolve(
            sel, cmd.uids, sel.uids, as_uids=True).uids(sel.uids)
        if uids:
            await self.store.expunge(sel.mailbox.id, uids)
        elif uids is None:
            await self.store.expunge(sel.mailbox.id)
        if not self.qresync:
            return "EXPUNGE completed"
        # RFC 7162 §3.2.7: with QRESYNC the tagged OK tells the modseq after the VANISHED,
        # so they are reported first
        await self._sync(allow_expunge=True)
        return f"[HIGHESTMODSEQ {sel.modseq}] EXPUNGE completed"

    async def _do_fetch(self, cmd: c.Fetch) -> str:
        sel = self.selected
        assert sel is not None
        if cmd.vanished and not (cmd.uid and self.qresync):
            raise CommandBad("VANISHED needs UID FETCH with QRESYNC enabled")
        attrs = _unique_items(cmd.attrs)
        if cmd.uid and not any(a.name == "UID" for a in attrs):
            attrs = (c.FetchAttr("UID"), *attrs)
        if cmd.changedsince is not None or any(a.name == "MODSEQ" for a in attrs):
            self._enable("CONDSTORE")
        if self.condstore and (cmd.changedsince is not None or any(
                a.name == "FLAGS" for a in attrs)) and not any(a.name == "MODSEQ" for a in attrs):
            attrs = (*attrs, c.FetchAttr("MODSEQ"))
        targets = self._targets(cmd.seqset, cmd.uid)
        if cmd.changedsince is not None:
            since = cmd.changedsince
            targets = [(seq, u) for seq, u in targets if sel.metas[u].modseq > since]
            if cmd.vanished:
                gone, _ = await self._vanished_earlier(sel, since, cmd.seqset)
                if gone:
                    self._untagged(b"VANISHED (EARLIER) " + compress(gone).encode())
        seen_changed: set[int] = set()
        if not sel.readonly and any(a.sets_seen for a in attrs):
            unseen = [u for _, u in targets if "\\Seen" not in sel.metas[u].flags]
            if unseen:
                stored = await self.store.store_flags(sel.mailbox.id, unseen,
                                                      frozenset({"\\Seen"}), "add")
                self._keywords(stored)
                for meta in stored:
                    sel.metas[meta.uid] = meta
                    seen_changed.add(meta.uid)
                ext_search.touched(self, seen_changed)
        if all(a.name in _LISTING_ITEMS for a in attrs):
            await self._listing_lines(sel, targets, attrs)
            return f"{'UID ' if cmd.uid else ''}FETCH completed"
        with_flags = attrs
        if not any(a.name == "FLAGS" for a in attrs):
            with_flags = (*with_flags, c.FetchAttr("FLAGS"))
        if self.condstore and not any(a.name == "MODSEQ" for a in with_flags):
            with_flags = (*with_flags, c.FetchAttr("MODSEQ"))
        needs_raw = any(a.needs_body and (a.name not in STRUCTURE_ITEMS or a.section is not None)
                        for a in attrs)
        # Sections other than the whole message are located with the structure stored at
        # delivery (decoding it is far cheaper than analysing the message again).
        needs_structure = any((a.name in STRUCTURE_ITEMS and a.section is None)
                              or (a.section is not None
                                  and (a.section.parts or a.section.text is not None))
                              for a in attrs)
        # Only top-level header sections (what a message list shows): the stored structure
        # says where the header ends, and the store cuts it out; bodies stay in the database.
        headers_only = needs_raw and all(
            a.section is not None and not a.section.parts and a.name not in binary.ITEMS
            and a.section.text in HEADER_SECTIONS for a in attrs if a.needs_body)
        binary_items = any(a.name in binary.ITEMS for a in attrs)
        missing = False
        needs_extra = objects.wanted(attrs)
        # A message list: whole lines from a plan made once per item list.
        lister = header_lines(attrs) if headers_only else None
        flagged = header_lines(with_flags) if lister is not None else None
        for batch in self._body_batches(targets, needs_raw or needs_structure):
            uids = [u for _, u in batch]
            extra = (await self.store.message_objects(sel.mailbox.id, uids) if needs_extra
                     else {})
            blocks: set[int] = set()
            if headers_only:
                bodies, blocks = await self._headers(uids)
                structures = {}
                want = uids
            elif needs_raw and needs_structure:  # both in one read
                both = await self.store.fetch_messages(sel.mailbox.id, uids)
                bodies = {u: body for u, (body, _) in both.items()}
                structures = _decoded({u: blob for u, (_, blob) in both.items()})
                want = uids
            else:
                structures = await self._structures(uids) if needs_structure else {}
                want = [u for u in uids
                        if needs_raw or (needs_structure and u not in structures)]
                bodies = await self.store.fetch_bodies(sel.mailbox.id, want) if want else {}
            if needs_structure and not headers_only:
                analysed = await _analyse_missing(structures, bodies, uids)
                if analysed:  # mail stored before structures were: never analysed twice
                    structures.update(analysed)
                    await self.store.save_structures(
                        sel.mailbox.id, {u: st.encode() for u, st in analysed.items()})
            if lister is not None and flagged is not None:
                for seq, uid in batch:
                    raw = bodies.pop(uid, None)
                    if raw is None:
                        missing = True
                        continue
                    plan = flagged if uid in seen_changed else lister
                    self._write(plan.line(seq, sel.shown(sel.metas[uid]), raw, uid in blocks))
                    await self._flush_if_full()
                continue
            wanted = set(want)
            for seq, uid in batch:
                raw = bodies.pop(uid, None)
                if (uid in wanted and raw is None) or (needs_extra and uid not in extra):
                    missing = True
                    continue
                items = with_flags if uid in seen_changed else attrs
                if binary_items and raw is not None:  # NO [UNKNOWN-CTE] before it begins
                    binary.check(raw, structures.get(uid), attrs)
                self._write(b"* %d FETCH " % seq)
                for chunk in render_chunks(sel.shown(sel.metas[uid]), items, raw,
                                           structures.get(uid), extra.get(uid),
                                           header_block=uid in blocks):
                    self._write(chunk)
                    await self._flush_if_full()
                self._write(b"\r\n")
        if missing:
            raise CommandNo("Some of the requested messages no longer exist", "EXPUNGEISSUED")
        return f"{'UID ' if cmd.uid else ''}FETCH completed"

    async def _listing_lines(self, sel: Selected, targets: list[tuple[int, int]],
                             attrs: tuple[c.FetchAttr, ...]) -> None:
        """FETCH of UID, FLAGS and MODSEQ only (how clients sync a mailbox): written in
        batches of LINE_BATCH lines (see :func:`fetch.listing_lines`)."""
        for chunk in listing_lines(targets, sel.metas, sel.recent, attrs, LINE_BATCH):
            self._write(chunk)
            await self._flush_if_full()

    async def _headers(self, uids: list[int]) -> tuple[dict[int, bytes], set[int]]:
        """What to render header sections from: the header block, or the whole message
        (analysed as before) where no structure was stored; and the uids given a block."""
        sel = self.selected
        assert sel is not None
        heads = await self.store.fetch_headers(sel.mailbox.id, uids)
        lacking = [u for u, head in heads.items() if head is None]
        raws = await self.store.fetch_bodies(sel.mailbox.id, lacking) if lacking else {}
        blocks = set()
        for uid, head in heads.items():
            if head is not None:
                raws[uid] = head
                blocks.add(uid)
        return raws, blocks

    async def _structures(self, uids: list[int]) -> dict[int, MessageStructure]:
        """The MIME structures stored at delivery (left out: none stored, or unreadable)."""
        sel = self.selected
        assert sel is not None
        return _decoded(await self.store.fetch_structures(sel.mailbox.id, uids))

    def _body_batches(self, targets: list[tuple[int, int]], bodies: bool,
                      ) -> Iterator[list[tuple[int, int]]]:
        """Targets in groups to load together: BODY_BATCH at most, and when bodies are loaded
        no more than BODY_BATCH_BYTES of them (a group holds at least one message)."""
        sel = self.selected
        assert sel is not None
        batch: list[tuple[int, int]] = []
        size = 0
        for target in targets:
            weight = sel.metas[target[1]].size if bodies else 0
            if batch and (len(batch) >= BODY_BATCH or size + weight > BODY_BATCH_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(target)
            size += weight
        if batch:
            yield batch

    async def _do_storecmd(self, cmd: c.StoreCmd) -> str:
        sel = self._require_writable()
        targets = self._targets(cmd.seqset, cmd.uid)
        if cmd.unchangedsince is not None:
            self._enable("CONDSTORE")
        failed: list[int] = []
        if targets:
            before = {u: sel.metas[u].modseq for _, u in targets}
            metas, failed = await self.store.store_flags_unchanged_since(
                sel.mailbox.id, [u for _, u in targets], cmd.flags, cmd.mode,
                cmd.unchangedsince)
            self._keywords(metas)
            for meta in metas:
                sel.metas[meta.uid] = meta
            ext_search.touched(self, (m.uid for m in metas))
            for meta in metas:
                if not cmd.silent:
                    line = feed.fetch_line(sel, meta, condstore=self.condstore, uid=cmd.uid)
                elif self.condstore and meta.modseq != before[meta.uid]:
                    # RFC 7162 §3.1.3: .SILENT still tells the new modseq of what changed
                    line = feed.fetch_line(sel, meta, condstore=True, uid=cmd.uid, flags=False)
                else:
                    continue
                self._untagged(line)
        code = ""
        if failed:
            numbers = failed if cmd.uid else [sel.seq_of[u] for u in failed]
            code = f"[MODIFIED {compress(numbers)}] "
        return f"{code}{'UID ' if cmd.uid else ''}STORE completed"

    async def _do_search(self, cmd: c.Search) -> str:
        if cmd.returns is not None:
            return await ext_search.search(self, cmd)
        sel = self.selected
        assert sel is not None
        if cmd.uid and cmd.key == _UNSEEN and cmd.charset is None:
            # What clients poll with: the uids come straight from the view's unseen set,
            # with no sequence number looked up for each (a bisection per match).
            numbers, tail = sorted(sel.unseen), b""
        else:
            found = await self._matches(cmd.key, cmd.charset)
            numbers = [uid if cmd.uid else seq for seq, uid in found]
            tail = self._modseq_tail(cmd.key, found)
        self._untagged(b"SEARCH" + search.number_list(numbers) + tail)
        return f"{'UID ' if cmd.uid else ''}SEARCH completed"

    def _modseq_tail(self, key: c.SearchKey, found: list[tuple[int, int]]) -> bytes:
        """`` (MODSEQ n)``, the highest modseq among the matches, when the program has a
        MODSEQ key (RFC 7162 §3.1.5, SEARCH and SORT); such a search enables CONDSTORE."""
        if not condstore.uses_modseq(key):
            return b""
        self._enable("CONDSTORE")
        sel = self.selected
        assert sel is not None
        if not found:
            return b""
        return b" (MODSEQ %d)" % max(sel.metas[u].modseq for _, u in found)

    async def _matches(self, key: c.SearchKey, charset: str | None,
                       targets: list[tuple[int, int]] | None = None,
                       ) -> list[tuple[int, int]]:
        """(sequence number, uid) of the selected messages ``key`` matches, in order (of
        ``targets``, when given, else of all)."""
        sel = self.selected
        assert sel is not None
        if charset is not None and charset not in search.CHARSETS:
            raise CommandNo("Unsupported charset", "BADCHARSET (US-ASCII UTF-8)")
        key = self.saved.resolve_key(sel, key, sel.uids)
        if targets is None and key == _UNSEEN:
            uids = sel.uids
            return [(bisect_left(uids, u) + 1, u) for u in sorted(sel.unseen)]
        if targets is None and isinstance(key, c.SearchFlag) and key.flag != "\\Recent":
            # One flag test per message: no candidates, no bodies.
            flag, present, metas = key.flag, key.present, sel.metas
            return [(seq, u) for seq, u in enumerate(sel.uids, start=1)
                    if (flag in metas[u].flags) == present]
        need_body = search.needs_body(key)
        need_extra = objects.needs_objects(key)
        heavy = need_body or _key_count(key) > INLINE_SEARCH_KEYS
        found: list[tuple[int, int]] = []
        max_seq = len(sel.uids)
        max_uid = sel.uids[-1] if sel.uids else 0
        if targets is None:
            targets = list(enumerate(sel.uids, start=1))
        for batch in self._body_batches(targets, need_body):
            uids = [u for _, u in batch]
            bodies = await self.store.fetch_bodies(sel.mailbox.id, uids) if need_body else {}
            structures = await self._structures(uids) if need_body else {}
            extra = (await self.store.message_objects(sel.mailbox.id, uids) if need_extra
                     else {})
            candidates = [search.Candidate(seq, sel.shown(sel.metas[uid]), max_seq, max_uid,
                                           bodies.pop(uid, None), structures.get(uid),
                                           extra.get(uid))
                          for seq, uid in batch]
            # Decoding bodies and headers, or a program of hundreds of keys, is bounded but
            # not free: never on the event loop.
            matched = (await asyncio.to_thread(_matching, key, candidates) if heavy
                       else _matching(key, candidates))
            found.extend((cand.seq, cand.meta.uid) for cand in matched)
        return found

    async def _sort_messages(self, found: list[tuple[int, int]], uid: bool,
                             references: bool) -> list[sortthread.SortMessage]:
        """What SORT and THREAD compare, from the structures stored at delivery (and, for
        THREAD=REFERENCES, the References field read from the header block)."""
        sel = self.selected
        assert sel is not None
        out: list[sortthread.SortMessage] = []
        for batch in self._body_batches(found, True):
            uids = [u for _, u in batch]
            structures = await self._structures(uids)
            # Bodies only for References, or for mail stored without a structure (older).
            wanted = uids if references else [u for u in uids if u not in structures]
            bodies = await self.store.fetch_bodies(sel.mailbox.id, wanted) if wanted else {}
            if bodies:
                structures.update(await _analyse_missing(structures, bodies, uids))
            for seq, u in batch:
                meta = sel.metas[u]
                structure = structures.get(u)
                refs = None
                body = bodies.get(u)
                if body is not None and structure is not None:
                    root = structure.root
                    got, _ = mh.fields(body, root.header_start, root.body_start,
                                       _REFERENCES, 1)
                    refs = mh.text(got[0][1]) if got else None
                out.append(sortthread.SortMessage.from_envelope(
                    u if uid else seq, meta.internaldate, meta.size,
                    structure.root.envelope if structure is not None else None, refs))
        return out

    async def _do_sortcmd(self, cmd: c.SortCmd) -> str:
        if cmd.returns is not None:
            return await ext_search.sort(self, cmd)
        found = await self._matches(cmd.key, cmd.charset)
        messages = await self._sort_messages(found, cmd.uid, references=False)
        ordered = await asyncio.to_thread(sortthread.sort, messages, cmd.criteria)
        self._untagged(b"SORT" + b"".join(b" %d" % n for n in ordered)
                       + self._modseq_tail(cmd.key, found))
        return f"{'UID ' if cmd.uid else ''}SORT completed"

    async def _do_threadcmd(self, cmd: c.ThreadCmd) -> str:
        found = await self._matches(cmd.key, cmd.charset)
        messages = await self._sort_messages(found, cmd.uid,
                                             references=cmd.algorithm == "REFERENCES")
        threads = await asyncio.to_thread(sortthread.thread, cmd.algorithm, messages)
        self._untagged(b"THREAD" + (b" " + sortthread.serialise(threads) if threads else b""))
        return f"{'UID ' if cmd.uid else ''}THREAD completed"

    async def _do_cancelupdate(self, cmd: c.CancelUpdate) -> str:
        return await ext_search.cancel_update(self, cmd)

    async def _do_copy(self, cmd: c.Copy) -> str:
        sel = self._require_writable() if cmd.move else self.selected
        assert sel is not None
        verb = ("UID " if cmd.uid else "") + ("MOVE" if cmd.move else "COPY")
        targets = self._targets(cmd.seqset, cmd.uid)
        dest = await self._mailbox(cmd.mailbox, trycreate=True)
        if not targets:
            return f"{verb} completed"
        move_or_copy = self.store.move if cmd.move else self.store.copy
        pairs = await move_or_copy(sel.mailbox.id, [u for _, u in targets], dest.id)
        code = ""
        if pairs:
            code = (f"[COPYUID {dest.uidvalidity} {compress([p[0] for p in pairs])} "
                    f"{compress([p[1] for p in pairs])}] ")
        if cmd.move:  # RFC 6851: COPYUID comes untagged, before the EXPUNGEs
            if code:
                self._untagged(b"OK " + code.encode() + b"Moved")
            return f"{verb} completed"
        return f"{code}{verb} completed"


class ListPattern:
    """A LIST/LSUB pattern: ``*`` matches anything, ``%`` anything but the delimiter.

    The pattern comes from the client, so it is never turned into a backtracking regex (``*a*a*a
    ...b`` against a long name would run for ages). Matching simulates the pattern as an NFA
    whose state set is a bit mask over pattern positions: one pass over the name, a few integer
    operations per character, whatever the pattern. INBOX matches case-insensitively.
    """

    def __init__(self, pattern: str) -> None:
        collapsed: list[str] = []
        for ch in pattern:  # a run of wildcards is one "*" if it has one, else one "%"
            if ch in "*%" and collapsed and collapsed[-1] in "*%":
                if ch == "*":
                    collapsed[-1] = "*"
                continue
            collapsed.append(ch)
        self._size = len(collapsed)
        self._star = self._percent = 0
        self._chars: dict[str, int] = {}
        for i, ch in enumerate(collapsed):
            if ch == "*":
                self._star |= 1 << i
            elif ch == "%":
                self._percent |= 1 << i
            else:
                self._chars[ch] = self._chars.get(ch, 0) | 1 << i
        self._inbox = ListPattern(_ascii_upper(pattern)) if pattern != _ascii_upper(pattern) \
            else self

    def __call__(self, name: str) -> bool:
        if self._run(name):
            return True
        return name == "INBOX" and self._inbox is not self and self._inbox._run(name)

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing: its position also enables the next one. Wildcard runs
        # are collapsed, so one step reaches every position.
        return states | (states & (self._star | self._percent)) << 1

    def _run(self, name: str) -> bool:
        states = self._closure(1)
        star, percent, chars = self._star, self._percent, self._chars
        for ch in name:
            stay = star if ch == DELIMITER else star | percent
            states = self._closure((states & stay) | (states & chars.get(ch, 0)) << 1)
            if not states:
                return False
        return bool(states >> self._size & 1)


def _ascii_upper(text: str) -> str:
    return text.translate(_UPPER)


_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def _unique_items(attrs: tuple[c.FetchAttr, ...]) -> tuple[c.FetchAttr, ...]:
    """Each fetch item once, in first-mention order (BODY[] and BODY.PEEK[] answer the same
    item; the non-peeking one wins). ``BODY[] BODY[] ...`` a thousand times would otherwise
    send the message a thousand times."""
    unique: dict[c.FetchAttr, c.FetchAttr] = {}
    for attr in attrs:
        key = replace(attr, peek=False)
        if key not in unique or not attr.peek:
            unique[key] = attr
    return tuple(unique.values())


def _check_name_limits(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH or name.count(DELIMITER) >= MAX_NAME_DEPTH:
        raise CommandNo(f"Mailbox names are limited to {MAX_NAME_LENGTH} characters and "
                        f"{MAX_NAME_DEPTH} levels", "LIMIT")


def _unsubscribed_parents(subscribed: set[str], matches: ListPattern) -> set[str]:
    """The parents LSUB must show as ``\\Noselect``: not subscribed themselves, matching the
    pattern while a subscribed descendant does not (``%`` stops at the delimiter). Each name
    climbs at most ``MAX_NAME_DEPTH`` levels."""
    out: set[str] = set()
    for name in subscribed:
        if matches(name):
            continue
        cut = name.rfind(DELIMITER)
        while cut > 0:
            parent = name[:cut]
            if parent not in subscribed and matches(parent):
                out.add(parent)
            cut = name.rfind(DELIMITER, 0, cut)
    return out


def _add_parents(names: set[str]) -> None:
    """Add every ancestor of every name; stops climbing at an ancestor already present, so the
    work is linear in the total length of the names."""
    for name in list(names):
        cut = name.rfind(DELIMITER)
        while cut > 0:
            parent = name[:cut]
            if parent in names:
                break
            names.add(parent)
            cut = name.rfind(DELIMITER, 0, cut)


def _has_children(ordered: list[str], name: str) -> bool:
    """Whether any name in the sorted list lies below ``name``: descendants sort right after
    ``name + DELIMITER``, so one bisection finds out (a scan per name was quadratic)."""
    prefix = name + DELIMITER
    i = bisect_left(ordered, prefix)
    return i < len(ordered) and ordered[i].startswith(prefix)


def _decoded(blobs: dict[int, bytes | None]) -> dict[int, MessageStructure]:
    """Stored structures decoded (left out: none stored, or an older format, which the
    caller analyses again)."""
    out = {}
    for uid, blob in blobs.items():
        if blob is not None:
            with contextlib.suppress(ValueError):
                out[uid] = MessageStructure.decode(blob)
    return out


def _key_count(key: c.SearchKey) -> int:
    """How many keys a search program evaluates per message."""
    if isinstance(key, c.SearchAnd):
        return 1 + sum(_key_count(k) for k in key.keys)
    if isinstance(key, c.SearchOr):
        return 1 + _key_count(key.left) + _key_count(key.right)
    if isinstance(key, c.SearchNot):
        return 1 + _key_count(key.key)
    return 1


def _matching(key: c.SearchKey, candidates: list[search.Candidate]) -> list[search.Candidate]:
    return [cand for cand in candidates if search.matches(key, cand)]


async def _analyse_missing(structures: dict[int, MessageStructure], bodies: dict[int, bytes],
                           uids: list[int]) -> dict[int, MessageStructure]:
    """Structures for messages stored without one (older mail), analysed off the loop."""
    todo = {u: bodies[u] for u in uids if u not in structures and u in bodies}
    if not todo:
        return {}
    return await asyncio.to_thread(lambda: {u: analyse(raw) for u, raw in todo.items()})


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
