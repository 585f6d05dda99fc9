"""Sans-IO IMAP command parser: bytes in, frozen command values (or a literal request) out.

The parser never reads from a socket. The adapter feeds whatever bytes arrived and asks for the
next event; a synchronising literal yields :class:`NeedContinuation` so the adapter can send
``+ Ready`` before the client sends the literal. All resource limits live here, so a hostile
client cannot make the server buffer more than the limits allow. A literal larger than
``Limits.spool_above`` is written to a temporary file as it arrives (the only I/O done here,
through an injectable factory), so even a maximum-size APPEND never sits whole in the buffer.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import IO, TypeVar

from mailnode.imap import commands as c
from mailnode.imap import condstore, esearch, objects, sortthread, utf7
from mailnode.imap.errors import InvalidMailboxName, ParseError
from mailnode.imap.handlers import binary, listext, multiappend
from mailnode.imap.searchres import SAVED
from mailnode.imap.sequences import SequenceSet, SequenceSetError
from mailnode.sasl import SaslError, b64decode_strict

T = TypeVar("T")

_LITERAL_AT_END = re.compile(rb"\{(\d{1,10})(\+?)\}\Z")
_LITERAL = re.compile(rb"\{\d+\+?\}")
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_TAG_SPECIALS = _ATOM_SPECIALS | {ord("+")}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DATE_TIME = re.compile(
    rb"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                          "SIZE", "DELETED", "DELETED-STORAGE", "MAILBOXID",
                          "HIGHESTMODSEQ"})
_SECTION_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_SIMPLE_FETCH = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "RFC822",
                           "RFC822.HEADER", "RFC822.TEXT", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                           "MODSEQ", *objects.FETCH_ITEMS})
_FETCH_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = frozenset({"FROM", "TO", "CC", "BCC", "SUBJECT"})


@dataclass(frozen=True)
class NeedContinuation:
    """The client announced a synchronising literal of ``size`` bytes: send ``+`` now."""

    size: int


PRE_AUTH_LINE = 8 * 1024
ID_LINE = 34 * 1024
"""An ID command may be this long even before login: RFC 2971 allows 30 pairs of a 30-octet
field and a 1,024-octet value (clients send it first, before logging in)."""
_ID_COMMAND = re.compile(rb"[^ ]{1,64} ID[ (]", re.IGNORECASE)
LITERAL_MINUS = 4096
"""RFC 7888 LITERAL-: the largest non-synchronising literal."""
PRE_AUTH_LITERAL = 8 * 1024
"""Before login a client needs no more than a LOGIN or AUTHENTICATE: a stranger gets this."""


@dataclass(frozen=True)
class Limits:
    """Resource bounds; ``max_literal`` is usually the node's maximum message size."""

    max_line: int = 64 * 1024
    max_literal: int = 32 * 1024 * 1024
    max_literals: int = 64
    max_depth: int = 16
    max_items: int = 1024
    spool_above: int = 256 * 1024
    """Literals larger than this go to a temporary file as they arrive, not to the buffer."""
    max_nonsync_literal: int | None = None
    """LITERAL- (RFC 7888): non-synchronising literals above this get BAD [TOOBIG]; None
    (LITERAL+) allows them up to ``max_literal``."""

    def before_login(self) -> Limits:
        """The bounds for a client that has not logged in: small lines, small literals, and
        LITERAL- rather than LITERAL+ (a stranger may not make us read much unasked)."""
        return replace(self, max_line=min(self.max_line, PRE_AUTH_LINE),
                       max_literal=min(self.max_literal, PRE_AUTH_LITERAL),
                       max_nonsync_literal=LITERAL_MINUS)


def _temporary_file() -> IO[bytes]:
    # Unlinked at once on POSIX: nothing is left on disk whatever happens to the connection.
    return tempfile.TemporaryFile(prefix="mailnode-literal-")


class CommandParser:
    """Incremental framing (lines + literals) and parsing of IMAP commands."""

    def __init__(self, limits: Limits | None = None,
                 spool: Callable[[], IO[bytes]] = _temporary_file) -> None:
        self.limits = limits or Limits()
        self._spool_factory = spool
        self._buf = bytearray()
        self._text = bytearray()
        self._literals: dict[int, bytes | c.LiteralBody] = {}
        self._literal_bytes = 0
        self._pending: int | None = None
        """Bytes of the current literal still to come."""
        self._pending_sync = False
        self._announced = False
        self._spool: IO[bytes] | None = None
        self._spool_size = 0
        self.utf8 = False
        """ENABLE UTF8=ACCEPT (RFC 6855) is in effect: names are UTF-8, not modified UTF-7."""

    @property
    def buffered(self) -> int:
        """Bytes held in memory for the command being received (the spool file not counted)."""
        return len(self._buf) + len(self._text) + sum(
            len(v) for v in self._literals.values() if isinstance(v, bytes))

    def close(self) -> None:
        """Drop everything buffered and close spool files (the connection is gone)."""
        self._buf.clear()
        self._reset()

    def feed(self, data: bytes) -> None:
        """Add bytes received from the client."""
        self._buf += data

    @property
    def in_command(self) -> bool:
        """True while a command is partly received (e.g. waiting for a literal)."""
        return bool(self._text) or self._pending is not None

    def _max_line(self, head: bytes | bytearray) -> int:
        """The line limit, raised to RFC 2971's bounds for a line that is an ID command."""
        if self.limits.max_line < ID_LINE and not self._text and _ID_COMMAND.match(head):
            return ID_LINE
        return self.limits.max_line

    def next_line(self) -> bytes | None:
        """A raw line (for AUTHENTICATE responses and IDLE's DONE), CRLF stripped."""
        idx = self._buf.find(b"\n")
        if idx < 0:
            if len(self._buf) > self._max_line(self._buf):
                self._buf.clear()
                raise ParseError("Line too long", fatal=True)
            return None
        line = bytes(self._buf[:idx])
        del self._buf[:idx + 1]
        if len(line) > self._max_line(line):
            raise ParseError("Line too long", fatal=True)
        return line[:-1] if line.endswith(b"\r") else line

    def next_event(self) -> c.Command | NeedContinuation | None:
        """The next complete command, a literal request, or None if more bytes are needed.

        Raises :class:`ParseError` for invalid input; the parser is then ready for the next
        command (unless the error is fatal).
        """
        while True:
            if self._pending is not None:
                n = self._pending
                if self._spool is not None and self._buf:
                    take = min(n, len(self._buf))
                    self._spool.write(self._buf[:take])
                    del self._buf[:take]
                    n = self._pending = n - take
                if self._spool is not None and n == 0:
                    self._literals[len(self._text)] = c.LiteralBody(file=self._spool,
                                                                    size=self._spool_size)
                    self._spool = None
                elif self._spool is None and len(self._buf) >= n:
                    self._literals[len(self._text)] = bytes(self._buf[:n])
                    del self._buf[:n]
                else:
                    if self._pending_sync and not self._announced:
                        self._announced = True
                        return NeedContinuation(n)
                    return None
                self._pending = None
                continue
            line = self.next_line_or_flood()
            if line is None:
                return None
            if not self._text and not line.strip():
                continue  # stray empty lines between commands are harmless
            marker = _literal_marker(line)
            if len(self._text) + len(line) > self._max_line(line):
                tag = _tag_of(bytes(self._text) + line)
                self._reset()
                raise ParseError("Command too long", tag, fatal=True)
            if marker is None:
                text, literals = bytes(self._text + line), self._literals
                self._literals = {}  # handed to the command (or closed if it is invalid)
                self._reset()
                return _parse_command(text, literals, self.limits, self.utf8)
            size, sync, start = marker
            tag = _tag_of(bytes(self._text) + line)
            if tag is None:  # not a command at all: never invite garbage to send a literal
                self._reset()
                raise ParseError("Missing or invalid tag")
            self._text += line[:start]
            self._literal_bytes += size
            nonsync_cap = self.limits.max_nonsync_literal
            if size > self.limits.max_literal or \
                    (not sync and nonsync_cap is not None and size > nonsync_cap) or \
                    self._literal_bytes > self.limits.max_literal + self.limits.max_line or \
                    len(self._literals) >= self.limits.max_literals:
                self._reset()
                if sync:  # the client waits for "+", so it will not send the literal
                    raise ParseError("Literal too large", tag, code="TOOBIG")
                raise ParseError("Literal too large", tag, code="TOOBIG", fatal=True)
            self._text += line[start:]
            self._pending = size
            self._pending_sync = sync
            self._announced = False
            if size > self.limits.spool_above:
                self._spool = self._spool_factory()
                self._spool_size = size
            # When the literal arrives it is keyed by len(self._text), i.e. the offset just
            # after its "{n}" marker, which is where the reader will look for it.

    def take_buffered(self) -> bytes:
        """Bytes received but not yet parsed, removed (COMPRESS: they are compressed)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next_line_or_flood(self) -> bytes | None:
        """Like :meth:`next_line`, but a flood error names the tag of the command it hit."""
        head = bytes(self._text[:128]) if self._text else bytes(self._buf[:128])
        try:
            return self.next_line()
        except ParseError as exc:
            tag = _tag_of(head)
            self._reset()
            raise ParseError(exc.text, tag, fatal=True) from None

    def _reset(self) -> None:
        _close_spooled(self._literals.values())
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._text = bytearray()
        self._literals = {}
        self._literal_bytes = 0
        self._pending = None
        self._announced = False


def _close_spooled(values: Iterable[bytes | c.LiteralBody]) -> None:
    for value in values:
        if isinstance(value, c.LiteralBody):
            value.close()


def _literal_marker(line: bytes) -> tuple[int, bool, int] | None:
    """``(size, synchronising, start)`` if ``line`` ends in ``{n}``/``{n+}`` outside quotes."""
    m = _LITERAL_AT_END.search(line)
    if m is None:
        return None
    quoted = False
    i = 0
    start = m.start()
    while i < start:
        ch = line[i]
        if quoted and ch == 0x5C:
            i += 2
            continue
        if ch == 0x22:
            quoted = not quoted
        i += 1
    if quoted:
        return None
    return int(m.group(1)), m.group(2) != b"+", start


def _tag_of(text: bytes) -> str | None:
    end = 0
    while end < len(text) and text[end] not in _TAG_SPECIALS and text[end] < 0x80:
        end += 1
    if end == 0 or end >= len(text) or text[end] != 0x20:
        return None
    return text[:end].decode("ascii")


class _Reader:
    """Recursive-descent reader over one command's text; literals sit beside the text,
    keyed by the offset just after their ``{n}`` marker."""

    def __init__(self, text: bytes, literals: dict[int, bytes | c.LiteralBody],
                 limits: Limits) -> None:
        self.text = text
        self.literals = literals
        self.handed: set[int] = set()
        """Keys of spooled literals now owned by the command being built."""
        self.limits = limits
        self.pos = 0
        self.tag: str | None = None
        self.depth = 0
        self.utf8 = False
        """Names are UTF-8 (ENABLE UTF8=ACCEPT), not modified UTF-7."""
        self.invalid_name: str | None = None
        """Why a mailbox argument is not valid modified UTF-7, if one is not."""

    def error(self, message: str, code: str | None = None) -> ParseError:
        return ParseError(message, self.tag, code=code)

    def peek(self) -> int:
        return self.text[self.pos] if self.pos < len(self.text) else -1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def expect(self, token: bytes) -> None:
        if self.text[self.pos:self.pos + len(token)].upper() != token.upper():
            raise self.error(f"Expected {token.decode()!r}")
        self.pos += len(token)

    def sp(self) -> None:
        self.expect(b" ")

    def take(self, token: bytes) -> bool:
        if self.text[self.pos:self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise self.error("Unexpected extra arguments")

    def _run(self, accept: Callable[[int], bool]) -> bytes:
        start = self.pos
        text = self.text
        while self.pos < len(text) and accept(text[self.pos]):
            self.pos += 1
        return text[start:self.pos]

    def atom(self) -> bytes:
        raw = self._run(lambda ch: ch not in _ATOM_SPECIALS)
        if not raw:
            raise self.error("Expected an atom")
        return raw

    def keyword(self) -> str:
        raw = self.atom()
        try:
            return raw.decode("ascii").upper()
        except UnicodeDecodeError:
            raise self.error("Invalid keyword") from None

    def number(self) -> int:
        raw = self._run(lambda ch: 0x30 <= ch <= 0x39)
        if not raw or len(raw) > 10:
            raise self.error("Expected a number")
        value = int(raw)
        if value > 0xFFFFFFFF:
            raise self.error("Number too large")
        return value

    def partial(self) -> tuple[int, int] | None:
        """An optional ``<start.count>`` after a BODY[...] or BINARY[...] section."""
        if not self.take(b"<"):
            return None
        start = self.number()
        self.expect(b".")
        count = self.number()
        self.expect(b">")
        if count == 0:
            raise self.error("Partial length must be positive")
        return start, count

    def _literal_value(self) -> tuple[int, bytes | c.LiteralBody]:
        m = _LITERAL.match(self.text, self.pos)
        if m is None or m.end() not in self.literals:
            raise self.error("Invalid literal")
        self.pos = m.end()
        return m.end(), self.literals[m.end()]

    def literal(self) -> bytes:
        """A literal used as a string: only ones small enough to stay in memory."""
        _, value = self._literal_value()
        if isinstance(value, c.LiteralBody):
            raise self.error("Literal too large for this argument", code="TOOBIG")
        return value

    def literal_body(self) -> c.LiteralBody:
        """A literal used as a value (APPEND's message), spooled or not."""
        key, value = self._literal_value()
        if isinstance(value, bytes):
            return c.LiteralBody(value)
        self.handed.add(key)
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        text = self.text
        while True:
            if self.pos >= len(text):
                raise self.error("Unterminated quoted string")
            ch = text[self.pos]
            self.pos += 1
            if ch == 0x22:
                return bytes(out)
            if ch == 0x5C:
                if self.pos >= len(text) or text[self.pos] not in b'"\\':
                    raise self.error("Invalid escape in quoted string")
                ch = text[self.pos]
                self.pos += 1
            elif ch in (0x0D, 0x0A, 0x00):
                raise self.error("Invalid character in quoted string")
            out.append(ch)

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.peek() == 0x7B:
            return self.literal()
        raise self.error("Expected a string")

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        raw = self._run(lambda ch: ch not in _ATOM_SPECIALS or ch == 0x5D)
        if not raw:
            raise self.error("Expected a string or atom")
        return raw

    def text_value(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("Invalid UTF-8") from None

    def mailbox(self) -> str:
        return self._mailbox_name(self.astring())

    def _mailbox_name(self, raw: bytes) -> str:
        try:
            name = raw.decode("utf-8") if self.utf8 else utf7.decode(raw)
        except (utf7.Utf7Error, UnicodeDecodeError) as exc:
            # Reported once the whole command has parsed: a syntax error still wins (BAD).
            self.invalid_name = self.invalid_name or str(exc)
            name = raw.decode("latin-1")
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        if self.peek() in (0x22, 0x7B):
            raw = self.string()
        else:
            raw = self._run(lambda ch: ch not in _ATOM_SPECIALS or ch in b"%*]")
            if not raw:
                raise self.error("Expected a mailbox pattern")
        return self.pattern_text(raw)

    def pattern_text(self, raw: bytes) -> str:
        """A LIST reference or pattern as text (UTF-8 once UTF8=ACCEPT is enabled)."""
        if self.utf8:
            return self.text_value(raw)
        return utf7.decode_pattern(raw)

    def flag(self) -> str:
        if self.take(b"\\"):
            name = self.atom().decode("ascii", "replace")
            canonical = "\\" + name.capitalize()
            if canonical not in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft",
                                 "\\Recent"):
                raise self.error("Unknown system flag")
            return canonical
        raw = self.atom()
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error("Invalid keyword") from None

    def paren_list(self, item: Callable[[], T], *, allow_empty: bool = True) -> list[T]:
        self.expect(b"(")
        out: list[T] = []
        if self.take(b")"):
            if not allow_empty:
                raise self.error("Empty list")
            return out
        while True:
            out.append(item())
            if len(out) > self.limits.max_items:
                raise self.error("Too many items")
            if self.take(b")"):
                return out
            self.sp()

    def flag_list(self) -> frozenset[str]:
        return frozenset(self.paren_list(self.flag))

    def seqset(self) -> SequenceSet:
        if self.take(b"$"):  # RFC 5182: the saved search result, resolved by the session
            return SAVED
        raw = self._run(lambda ch: ch in b"0123456789:,*")
        try:
            return SequenceSet.parse(raw)
        except SequenceSetError as exc:
            raise self.error(str(exc)) from None

    def date_time(self) -> datetime:
        raw = self.quoted()
        m = _DATE_TIME.fullmatch(raw)
        if m is None:
            raise self.error("Invalid date-time")
        day, mon, year, hh, mm, ss, sign, zh, zm = (g.decode() for g in m.groups())
        try:
            month = _MONTHS.index(mon.upper()) + 1
            return datetime.strptime(
                f"{int(day):02d} {month:02d} {year} {hh}{mm}{ss} {sign}{zh}{zm}",
                "%d %m %Y %H%M%S %z")
        except ValueError:
            raise self.error("Invalid date-time") from None

    def date(self) -> datetime:
        raw = self.quoted() if self.peek() == 0x22 else self.atom()
        m = _DATE.fullmatch(raw)
        if m is None:
            raise self.error("Invalid date")
        try:
            month = _MONTHS.index(m.group(2).decode().upper()) + 1
            return datetime(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise self.error("Invalid date") from None


# --- per-command argument parsers ------------------------------------------------------------


def _no_args(cls: type[c.Command]) -> Callable[[_Reader, str], c.Command]:
    def parse(r: _Reader, tag: str) -> c.Command:
        r.end()
        return cls(tag)
    return parse


def _p_login(r: _Reader, tag: str) -> c.Command:
    r.sp()
    user = r.text_value(r.astring())
    r.sp()
    password = r.text_value(r.astring())
    r.end()
    return c.Login(tag, user, password)


def _p_authenticate(r: _Reader, tag: str) -> c.Command:
    r.sp()
    mech = r.keyword()
    initial: bytes | None = None
    if not r.at_end():
        r.sp()
        raw = r._run(lambda ch: ch not in _ATOM_SPECIALS)
        if raw == b"=":
            initial = b""
        else:
            try:
                initial = b64decode_strict(raw)
            except SaslError:
                raise r.error("Invalid base64 initial response") from None
    r.end()
    return c.Authenticate(tag, mech, initial)


def _p_id(r: _Reader, tag: str) -> c.Command:
    r.sp()
    if r.take(b"NIL"):
        r.end()
        return c.Id(tag, None)

    def nstring() -> str | None:
        if r.take(b"NIL"):
            return None
        return r.string().decode("utf-8", "replace")

    values = r.paren_list(nstring)
    r.end()
    if len(values) % 2:
        raise r.error("ID needs field/value pairs")
    pairs = tuple((str(values[i] or ""), values[i + 1]) for i in range(0, len(values), 2))
    return c.Id(tag, pairs)


def _p_enable(r: _Reader, tag: str) -> c.Command:
    caps: list[str] = []
    while not r.at_end():
        r.sp()
        caps.append(r.keyword())
    if not caps:
        raise r.error("ENABLE needs a capability")
    return c.Enable(tag, tuple(caps))


def _p_list(lsub: bool) -> Callable[[_Reader, str], c.Command]:
    def parse(r: _Reader, tag: str) -> c.Command:
        return listext.parse_list(r, tag, lsub)  # RFC 3501's form or RFC 5258's
    return parse


def decode_reference(r: _Reader) -> str:
    """LIST's reference argument (a mailbox name, possibly with wildcard characters)."""
    return r.list_mailbox() if r.peek() not in (0x22, 0x7B) else r.pattern_text(r.string())


def _p_mailbox(cls: Callable[[str, str], c.Command]) -> Callable[[_Reader, str], c.Command]:
    def parse(r: _Reader, tag: str) -> c.Command:
        r.sp()
        name = r.mailbox()
        r.end()
        return cls(tag, name)
    return parse


def _p_select(readonly: bool) -> Callable[[_Reader, str], c.Command]:
    def parse(r: _Reader, tag: str) -> c.Command:
        r.sp()
        name = r.mailbox()
        condstore_param, qresync = condstore.select_params(r) if r.take(b" ") else (False, None)
        r.end()
        return c.Select(tag, name, readonly, condstore_param, qresync)
    return parse


def _p_unsubscribe(r: _Reader, tag: str) -> c.Command:
    r.sp()
    name = r.mailbox()
    r.end()
    return c.Subscribe(tag, name, subscribe=False)


def _p_rename(r: _Reader, tag: str) -> c.Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    new = r.mailbox()
    r.end()
    return c.Rename(tag, old, new)


def _p_status(r: _Reader, tag: str) -> c.Command:
    r.sp()
    name = r.mailbox()
    r.sp()
    items = r.paren_list(r.keyword, allow_empty=False)
    r.end()
    for item in items:
        if item not in STATUS_ITEMS:
            raise r.error(f"Unknown STATUS item {item}")
    return c.Status(tag, name, tuple(items))


def _p_expunge(r: _Reader, tag: str, uid: bool) -> c.Command:
    if uid:
        r.sp()
        uids = r.seqset()
        r.end()
        return c.Expunge(tag, uids)
    r.end()
    return c.Expunge(tag)


def _section(r: _Reader) -> c.Section:
    r.expect(b"[")
    if r.take(b"]"):
        return c.Section()
    raw = r._run(lambda ch: ch not in b" ]" and ch not in _ATOM_SPECIALS)
    try:
        spec = raw.decode("ascii").upper()
    except UnicodeDecodeError:
        raise r.error("Invalid section") from None
    items = spec.split(".")
    parts: list[int] = []
    while items and items[0].isdigit():
        n = int(items.pop(0)) if len(items[0]) <= 10 else 0
        if n == 0:
            raise r.error("Invalid section part")
        parts.append(n)
    if len(parts) > r.limits.max_depth:
        raise r.error("Section too deep")
    text = ".".join(items) or None
    if text is not None and (text not in _SECTION_TEXTS or (text == "MIME" and not parts)):
        raise r.error("Invalid section")
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        names = r.paren_list(r.astring, allow_empty=False)
        fields = tuple(n.decode("ascii", "replace").upper() for n in names)
    r.expect(b"]")
    return c.Section(tuple(parts), text, fields)


def _fetch_att(r: _Reader) -> c.FetchAttr:
    raw = r._run(lambda ch: ch not in b" ()[<" and ch not in _ATOM_SPECIALS)
    name = raw.decode("ascii", "replace").upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == 0x5B:
        section = _section(r)
        return c.FetchAttr("BODY", section, peek=name == "BODY.PEEK", partial=r.partial())
    if name in binary.FETCH_NAMES:
        return binary.parse_att(r, name)
    if name not in _SIMPLE_FETCH:
        raise r.error(f"Unknown FETCH item {name or '(empty)'}")
    return c.FetchAttr(name)


def _p_fetch(r: _Reader, tag: str, uid: bool) -> c.Command:
    r.sp()
    seqset = r.seqset()
    r.sp()
    rest = r.text[r.pos:]
    if len(rest) <= MAX_CACHED_ITEMS and not any(k > r.pos for k in r.literals):
        try:
            attrs, changedsince, vanished = _fetch_items(rest, r.limits)
        except ParseError:
            pass  # parsed again below, for the error with this command's tag
        else:
            r.pos = len(r.text)
            return c.Fetch(tag, seqset, attrs, uid, changedsince, vanished)
    attrs, changedsince, vanished = _fetch_rest(r)
    return c.Fetch(tag, seqset, attrs, uid, changedsince, vanished)


MAX_CACHED_ITEMS = 512
"""FETCH item lists up to this long (without literals) are parsed once per distinct text."""


@lru_cache(maxsize=128)
def _fetch_items(rest: bytes, limits: Limits,
                 ) -> tuple[tuple[c.FetchAttr, ...], int | None, bool]:
    """The items and modifiers after FETCH's sequence set, parsed once for each distinct
    text: a client asks for the same items again and again (every page of its message
    list), and parsing them took an eighth of such a FETCH."""
    return _fetch_rest(_Reader(rest, {}, limits))


def _fetch_rest(r: _Reader) -> tuple[tuple[c.FetchAttr, ...], int | None, bool]:
    attrs: list[c.FetchAttr]
    if r.peek() == 0x28:
        attrs = r.paren_list(lambda: _fetch_att(r), allow_empty=False)
    else:
        start = r.pos
        word = r._run(lambda ch: ch not in b" ()[<" and ch not in _ATOM_SPECIALS)
        macro = _FETCH_MACROS.get(word.decode("ascii", "replace").upper())
        if macro is not None:
            attrs = [c.FetchAttr(n) for n in macro]
        else:
            r.pos = start
            attrs = [_fetch_att(r)]
    changedsince, vanished = condstore.fetch_modifiers(r) if r.take(b" ") else (None, False)
    r.end()
    return tuple(attrs), changedsince, vanished


def _p_store(r: _Reader, tag: str, uid: bool) -> c.Command:
    r.sp()
    seqset = r.seqset()
    r.sp()
    unchangedsince = condstore.store_modifier(r) if r.peek() == 0x28 else None
    item = r.keyword()
    mode = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
    silent = item.endswith(".SILENT")
    base = item.removesuffix(".SILENT")
    if base not in mode:
        raise r.error(f"Unknown STORE item {item}")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        items = [r.flag()]
        while r.take(b" "):
            items.append(r.flag())
            if len(items) > r.limits.max_items:
                raise r.error("Too many flags")
        flags = frozenset(items)
    r.end()
    m = mode[base]
    assert m in ("set", "add", "remove")
    return c.StoreCmd(tag, seqset, m, silent, flags - {"\\Recent"}, uid,  # type: ignore[arg-type]
                      unchangedsince)


def _search_key(r: _Reader, count: list[int]) -> c.SearchKey:
    count[0] += 1
    if count[0] > r.limits.max_items:
        raise r.error("Too many search keys")
    if r.peek() == 0x28:
        r.depth += 1
        if r.depth > r.limits.max_depth:
            raise r.error("Search keys nested too deeply")
        keys = r.paren_list(lambda: _search_key(r, count), allow_empty=False)
        r.depth -= 1
        return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
    if r.peek() >= 0 and r.peek() in b"0123456789*$":
        return c.SearchSeq(r.seqset())
    key = r.keyword()
    if key == "ALL":
        return c.SearchAll()
    if key in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[key]
        return c.SearchFlag(flag, present)
    if key in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        return c.SearchFlag(r.atom().decode("ascii", "replace"), key == "KEYWORD")
    if key == "NEW":
        return c.SearchNew(recent=True, unseen_too=True)
    if key in ("RECENT", "OLD"):
        return c.SearchNew(recent=key == "RECENT")
    if key == "UID":
        r.sp()
        return c.SearchUid(r.seqset())
    if key == "NOT":
        r.sp()
        r.depth += 1
        if r.depth > r.limits.max_depth:
            raise r.error("Search keys nested too deeply")
        inner = _search_key(r, count)
        r.depth -= 1
        return c.SearchNot(inner)
    if key == "OR":
        r.depth += 1
        if r.depth > r.limits.max_depth:
            raise r.error("Search keys nested too deeply")
        r.sp()
        left = _search_key(r, count)
        r.sp()
        right = _search_key(r, count)
        r.depth -= 1
        return c.SearchOr(left, right)
    if key in ("LARGER", "SMALLER"):
        r.sp()
        return c.SearchSize(key == "LARGER", r.number())
    if key in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
        r.sp()
        op = key.removeprefix("SENT").lower()
        assert op in ("before", "on", "since")
        return c.SearchDate(op, r.date(), key.startswith("SENT"))  # type: ignore[arg-type]
    if key in _HEADER_KEYS:
        r.sp()
        return c.SearchHeader(key, r.text_value(r.astring()), envelope=key != "SUBJECT")
    if key == "HEADER":
        r.sp()
        name = r.text_value(r.astring()).upper()
        r.sp()
        return c.SearchHeader(name, r.text_value(r.astring()))
    if key == "MODSEQ":
        return condstore.search_modseq(r)
    if key in ("BODY", "TEXT"):
        r.sp()
        return c.SearchText(r.text_value(r.astring()), key == "BODY")
    found = objects.parse_search_key(r, key)
    if found is not None:
        return found
    raise r.error(f"Unknown search key {key}")


def _p_search(r: _Reader, tag: str, uid: bool) -> c.Command:
    r.sp()
    returns = _return_options(r)
    charset: str | None = None
    if r.take(b"CHARSET "):
        if r.utf8:  # RFC 6855 3: the charset is UTF-8 once enabled, naming one conflicts
            raise r.error("No CHARSET after ENABLE UTF8=ACCEPT")
        charset = r.text_value(r.astring()).upper()
        r.sp()
    return c.Search(tag, _search_program(r), charset, uid, returns)


def _return_options(r: _Reader) -> c.ReturnOptions | None:
    """RFC 4466 ``RETURN (...) SP`` before the search program, if present."""
    if not r.take(b"RETURN ("):
        return None
    r.pos -= 1
    words = r.paren_list(r.atom)
    r.sp()
    try:
        return esearch.parse_return_options(words)
    except ValueError as exc:
        raise r.error(f"Bad return options: {exc}") from None


def _search_program(r: _Reader) -> c.SearchKey:
    """Search keys to the end of the command, ANDed."""
    count = [0]
    keys = [_search_key(r, count)]
    while r.take(b" "):
        keys.append(_search_key(r, count))
    r.end()
    return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))


def _p_sort(r: _Reader, tag: str, uid: bool) -> c.Command:
    """``SORT [RETURN (...)] (criteria) charset search-keys`` (RFC 5256: the charset is
    not optional; RETURN is RFC 5267's)."""
    r.sp()
    returns = _return_options(r)
    r.expect(b"(")
    words = [r.keyword()]
    while r.take(b" "):
        if len(words) >= 32:
            raise r.error("Too many sort criteria")
        words.append(r.keyword())
    r.expect(b")")
    try:
        criteria = sortthread.parse_criteria(words)
    except ValueError as exc:
        raise r.error(f"Bad sort criteria: {exc}") from None
    r.sp()
    charset = r.text_value(r.astring()).upper()
    r.sp()
    return c.SortCmd(tag, criteria, _search_program(r), charset, uid, returns)


def _p_thread(r: _Reader, tag: str, uid: bool) -> c.Command:
    """``THREAD algorithm charset search-keys``."""
    r.sp()
    algorithm = r.keyword()
    if algorithm not in sortthread.THREAD_ALGORITHMS:
        raise r.error("Unknown threading algorithm")
    r.sp()
    charset = r.text_value(r.astring()).upper()
    r.sp()
    return c.ThreadCmd(tag, algorithm, _search_program(r), charset, uid)


def _p_cancelupdate(r: _Reader, tag: str) -> c.Command:
    """``CANCELUPDATE 1*(SP quoted)`` (RFC 5267 4.3.5)."""
    tags = []
    while r.take(b" "):
        tags.append(r.quoted().decode("ascii", "replace"))
        if len(tags) > r.limits.max_items:
            raise r.error("Too many tags")
    if not tags:
        raise r.error("CANCELUPDATE needs a tag")
    r.end()
    return c.CancelUpdate(tag, tuple(tags))


def _p_copy(move: bool) -> Callable[[_Reader, str, bool], c.Command]:
    def parse(r: _Reader, tag: str, uid: bool) -> c.Command:
        r.sp()
        seqset = r.seqset()
        r.sp()
        name = r.mailbox()
        r.end()
        return c.Copy(tag, seqset, name, uid, move)
    return parse


_SIMPLE: dict[str, Callable[[_Reader, str], c.Command]] = {
    "CAPABILITY": _no_args(c.Capability), "NOOP": _no_args(c.Noop),
    "STARTTLS": _no_args(c.StartTls),
    "LOGOUT": _no_args(c.Logout), "NAMESPACE": _no_args(c.Namespace),
    "CHECK": _no_args(c.Check), "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect), "IDLE": _no_args(c.Idle),
    "ID": _p_id, "ENABLE": _p_enable, "LOGIN": _p_login, "AUTHENTICATE": _p_authenticate,
    "LIST": _p_list(False), "LSUB": _p_list(True),
    "SELECT": _p_select(False), "EXAMINE": _p_select(True),
    "CREATE": objects.parse_create, "DELETE": _p_mailbox(c.Delete),
    "SUBSCRIBE": _p_mailbox(c.Subscribe), "UNSUBSCRIBE": _p_unsubscribe,
    "RENAME": _p_rename, "STATUS": _p_status, "APPEND": multiappend.parse_append,
    "CANCELUPDATE": _p_cancelupdate,
}
_UID_CAPABLE: dict[str, Callable[[_Reader, str, bool], c.Command]] = {
    "FETCH": _p_fetch, "STORE": _p_store, "SEARCH": _p_search, "COPY": _p_copy(False),
    "MOVE": _p_copy(True), "EXPUNGE": _p_expunge, "SORT": _p_sort, "THREAD": _p_thread,
}


def _parse_command(text: bytes, literals: dict[int, bytes | c.LiteralBody],
                   limits: Limits, utf8: bool = False) -> c.Command:
    """Parse one command; spooled literals it did not take over are closed, all of them if
    the command is invalid."""
    r = _Reader(text, literals, limits)
    r.utf8 = utf8
    try:
        cmd = _dispatch(r)
        if r.invalid_name is not None:
            raise InvalidMailboxName(r.invalid_name, r.tag)
    except BaseException:
        _close_spooled(literals.values())
        raise
    _close_spooled(v for k, v in literals.items() if k not in r.handed)
    return cmd


def _dispatch(r: _Reader) -> c.Command:
    raw_tag = r._run(lambda ch: ch not in _TAG_SPECIALS and ch < 0x80)
    if not raw_tag or r.peek() != 0x20:
        raise ParseError("Missing or invalid tag")
    r.tag = raw_tag.decode("ascii")
    r.sp()
    name = r.keyword()
    if name == "UID":
        r.sp()
        sub = r.keyword()
        uid_parser = _UID_CAPABLE.get(sub)
        if uid_parser is None:
            raise r.error(f"Unknown UID command {sub}")
        return uid_parser(r, r.tag, True)
    if name in _UID_CAPABLE:
        return _UID_CAPABLE[name](r, r.tag, False)
    parser = _SIMPLE.get(name) or _extension_parser(name)
    if parser is None:
        raise r.error(f"Unknown command {name}")
    return parser(r, r.tag)


def _extension_parser(name: str) -> Callable[[_Reader, str], c.Command] | None:
    """Commands whose parsers live with their handlers (``mailnode.imap.handlers``)."""
    from mailnode.imap.handlers import PARSERS  # they build on _Reader: imported late
    return PARSERS.get(name)


def parse_one(data: bytes, limits: Limits | None = None) -> c.Command:
    """Parse exactly one complete command (literals included) — a convenience for tests."""
    p = CommandParser(limits)
    p.feed(data)
    while True:
        event = p.next_event()
        if isinstance(event, c.Command):
            return event
        if event is None:
            raise ParseError("Incomplete command")
