"""Server responses: typed objects, the one serialiser that turns them into bytes, and the
formatting of what goes inside them (strings, literals, flag lists, dates, lists)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from mailnode.imap import utf7
from mailnode.imap.sequences import compress

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SYSTEM_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")


_UNQUOTABLE = re.compile(rb"[\r\n\x00\x7f-\xff]")
"""What a quoted string cannot carry (found in C: ENVELOPE renders several per message)."""


class Literal(bytes):
    """Bytes that must go on the wire as a ``{n}`` literal, never quoted."""


def string(value: bytes | str | None) -> bytes:
    """``NIL``, a quoted string when safe, else a literal (CR, LF, NUL or 8-bit content)."""
    if value is None:
        return b"NIL"
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if isinstance(value, Literal) or len(raw) > 1024 or _UNQUOTABLE.search(raw):
        return b"{%d}\r\n" % len(raw) + raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: bytes) -> bytes:
    """Always a literal: message data is sent this way so its bytes stay untouched."""
    return b"{%d}\r\n" % len(value) + value


def flags(values: Iterable[str]) -> bytes:
    """A flag list with system flags first in a stable order, keywords sorted after."""
    present = set(values)
    ordered = [f for f in _SYSTEM_ORDER if f in present]
    ordered += sorted(present - set(_SYSTEM_ORDER))
    return b"(" + " ".join(ordered).encode("ascii", "replace") + b")"


def date_time(value: datetime) -> bytes:
    """IMAP ``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (naive datetimes are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    text = (f'"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
            f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} '
            f'{sign}{minutes // 60:02d}{minutes % 60:02d}"')
    return text.encode("ascii")


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised, space-separated list of already formatted items."""
    return b"(" + b" ".join(items) + b")"


def mailbox_name(name: str, utf8: bool = False) -> bytes:
    """A mailbox name as it goes on the wire: modified UTF-7, or UTF-8 once the client
    enabled UTF8=ACCEPT (RFC 6855: never modified UTF-7 then), quoted where it can be."""
    if not utf8:
        return string(utf7.encode(name))
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in name) or len(name) > 1024:
        return string(name)  # a literal
    raw = name.encode("utf-8", "replace")
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


# --- Responses -------------------------------------------------------------------------------
# Handlers describe what they answer with these objects; :func:`serialise` is the one place
# they become bytes. Mailbox names come already encoded (``mailbox_name``: how depends on
# what the session enabled). FETCH's bulk paths (a line per message) use the formats below
# directly, fed with plain values, so that a listing builds no object per message.


class Response:
    """An untagged (or tagged) server response."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Condition(Response):
    """``* OK|NO|BAD|BYE [code] text`` (status response, RFC 3501 §7.1)."""

    status: str
    text: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Tagged(Response):
    """The command's completion: ``tag OK|NO|BAD [code] text`` (``*`` when no tag was read)."""

    tag: str
    status: str
    text: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Completed:
    """What a handler returns for a tagged OK that carries a response code: the session
    turns it into :class:`Tagged`, so codes are formatted in one place like the rest."""

    text: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Continuation(Response):
    """``+ text``: the server waits for more from the client."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class Exists(Response):
    count: int


@dataclass(frozen=True, slots=True)
class Recent(Response):
    count: int


@dataclass(frozen=True, slots=True)
class Expunge(Response):
    seq: int


@dataclass(frozen=True, slots=True)
class Vanished(Response):
    """RFC 7162 ``VANISHED [(EARLIER)] uids``."""

    uids: Sequence[int]
    earlier: bool = False


@dataclass(frozen=True, slots=True)
class Flags(Response):
    """``FLAGS (...)``: the flags listed in the order given."""

    flags: Sequence[str]


@dataclass(frozen=True, slots=True)
class Fetch(Response):
    """``n FETCH (UID u FLAGS (...) MODSEQ (m))`` with the items that are not None: what
    a flag change or a resync reports. Whole FETCH replies are framed by ``fetch_open``."""

    seq: int
    uid: int | None = None
    flags: Iterable[str] | None = None
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class CapabilityData(Response):
    capabilities: str


@dataclass(frozen=True, slots=True)
class Enabled(Response):
    names: Sequence[str]


@dataclass(frozen=True, slots=True)
class IdData(Response):
    """RFC 2971 ``ID (field value ...)``."""

    fields: Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class NamespaceData(Response):
    """RFC 2342 ``NAMESPACE``: one personal namespace, no others."""

    prefix: str
    delimiter: str


@dataclass(frozen=True, slots=True)
class ListData(Response):
    """``LIST|LSUB (attrs) delimiter name [extended data]``."""

    attrs: Sequence[str]
    delimiter: str | None
    name: bytes
    lsub: bool = False
    extended: bytes = b""


@dataclass(frozen=True, slots=True)
class StatusData(Response):
    name: bytes
    items: Sequence[tuple[str, int | str]]


@dataclass(frozen=True, slots=True)
class SearchData(Response):
    """``SEARCH n...`` (or ``SORT n...``, RFC 5256), with RFC 7162's ``(MODSEQ m)``."""

    numbers: Sequence[int]
    modseq: int | None = None
    sort: bool = False


@dataclass(frozen=True, slots=True)
class ThreadData(Response):
    threads: bytes
    """The serialised thread list (``sortthread.serialise``), empty for none."""


@dataclass(frozen=True, slots=True)
class ESearch(Response):
    """RFC 4731 ``ESEARCH (TAG "t") [UID] items``; the items already formatted."""

    tag: str
    uid: bool
    items: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class QuotaData(Response):
    """RFC 9208 ``QUOTA root (STORAGE used limit)``, in units of 1024 octets."""

    root: str
    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class QuotaRootData(Response):
    name: bytes
    roots: Sequence[str]


@dataclass(frozen=True, slots=True)
class MetadataData(Response):
    """RFC 5464 ``METADATA mailbox (entry value ...)``; entries and values formatted."""

    name: bytes
    entries: Sequence[bytes]


FETCH_LISTING = {"UID": (b"UID %d", 1), "FLAGS": (b"FLAGS %s", 2), "MODSEQ": (b"MODSEQ (%d)", 3)}
"""The listing items' formats, and where each takes its value from ``(seq, uid, flags,
modseq)`` (``flags`` already formatted)."""


def fetch_listing(names: Sequence[str],
                  ) -> tuple[bytes, Callable[[tuple[int, int, bytes, int]], tuple[Any, ...]]]:
    """One line format for a FETCH of UID/FLAGS/MODSEQ items, in the client's order, and
    the function that picks its values from ``(seq, uid, flags, modseq)``: a listing of
    100,000 messages is then one ``%`` per message."""
    line = b"* %d FETCH (" + b" ".join(FETCH_LISTING[n][0] for n in names) + b")\r\n"
    return line, itemgetter(0, *(FETCH_LISTING[n][1] for n in names))


def number_list(numbers: Sequence[int]) -> bytes:
    """`` 1 2 3``: the numbers of a SEARCH or SORT response, each after a space, formatted in
    one pass (a response can list every message of a 100,000-message mailbox)."""
    if not numbers:
        return b""
    return b" " + " ".join(map(str, numbers)).encode("ascii")


def fetch_open(seq: int) -> bytes:
    """``* n FETCH `` before the item chunks ``fetch.render_chunks`` yields (the session
    sends them as they come, so a response is never built whole); ``CRLF`` ends it."""
    return b"* %d FETCH " % seq


CRLF = b"\r\n"


def _code(code: str | None) -> str:
    return f"[{code}] " if code else ""


def data(resp: Response) -> bytes:
    """An untagged response without its ``* `` and CRLF (how the change feed and the
    search contexts hand lines to the session)."""
    match resp:
        case Fetch(seq, uid, flag_names, modseq):
            items = []
            if uid is not None:
                items.append(b"UID %d" % uid)
            if flag_names is not None:
                items.append(b"FLAGS " + flags(flag_names))
            if modseq is not None:
                items.append(b"MODSEQ (%d)" % modseq)
            return b"%d FETCH (%s)" % (seq, b" ".join(items))
        case Expunge(seq):
            return b"%d EXPUNGE" % seq
        case Exists(count):
            return b"%d EXISTS" % count
        case Recent(count):
            return b"%d RECENT" % count
        case Condition(status, text, code):
            return f"{status} {_code(code)}{text}".encode()
        case Vanished(uids, earlier):
            return (b"VANISHED (EARLIER) " if earlier else b"VANISHED ") \
                + compress(uids).encode()
        case Flags(names):
            return b"FLAGS (" + " ".join(names).encode() + b")"
        case ListData(attrs, delimiter, name, lsub, extended):
            return ((b"LSUB (" if lsub else b"LIST (") + " ".join(attrs).encode() + b") "
                    + string(delimiter) + b" " + name + extended)
        case StatusData(name, items):
            return (b"STATUS " + name + b" ("
                    + " ".join(f"{item} {value}" for item, value in items).encode() + b")")
        case SearchData(numbers, modseq, sort):
            return ((b"SORT" if sort else b"SEARCH") + number_list(numbers)
                    + (b" (MODSEQ %d)" % modseq if modseq is not None else b""))
        case ESearch(tag, uid, items):
            head = b"ESEARCH (TAG " + string(tag) + b")" + (b" UID" if uid else b"")
            return b" ".join([head, *items])
        case ThreadData(threads):
            return b"THREAD" + (b" " + threads if threads else b"")
        case CapabilityData(capabilities):
            return b"CAPABILITY " + capabilities.encode()
        case Enabled(names):
            return b" ".join([b"ENABLED", *(n.encode() for n in names)])
        case IdData(fields):
            return b"ID " + plist(b"%s %s" % (string(k), string(v)) for k, v in fields)
        case NamespaceData(prefix, delimiter):
            return b"NAMESPACE ((" + string(prefix) + b" " + string(delimiter) + b")) NIL NIL"
        case QuotaData(root, used, limit):
            return b"QUOTA " + string(root) + b" (STORAGE %d %d)" % (used, limit)
        case QuotaRootData(name, roots):
            return b" ".join([b"QUOTAROOT", name, *(string(root) for root in roots)])
        case MetadataData(name, entries):
            return b"METADATA " + name + b" " + plist(entries)
    raise TypeError(f"{type(resp).__name__} is not an untagged response")


def serialise(resp: Response) -> bytes:
    """The one place a response becomes the bytes of its line(s)."""
    match resp:
        case Tagged(tag, status, text, code):
            return f"{tag} {status} {_code(code)}{text}\r\n".encode()
        case Continuation(text):
            return f"+ {text}\r\n".encode()
    return b"* " + data(resp) + b"\r\n"
