"""Parsed IMAP commands and their argument types: frozen values the session acts on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Literal

from mailnode.imap.sequences import SequenceSet


class LiteralBody:
    """A literal the client sent as a value (APPEND's message): bytes when small, else an
    unlinked temporary file the parser streamed it into, so a message of the maximum size is
    never buffered whole while it arrives. Whoever holds it closes it; its repr never shows
    content."""

    __slots__ = ("_data", "_file", "size")

    def __init__(self, data: bytes = b"", *, file: IO[bytes] | None = None,
                 size: int | None = None) -> None:
        self._data = data
        self._file = file
        self.size = len(data) if file is None else (size or 0)

    @property
    def spooled(self) -> bool:
        """Whether the content is in a temporary file rather than in memory."""
        return self._file is not None

    def read(self) -> bytes:
        """The whole content (the caller asked for it: one copy, when it is needed)."""
        if self._file is None:
            return self._data
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        """Release the temporary file (it is unlinked already, so closing removes it)."""
        if self._file is not None:
            self._file.close()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LiteralBody):
            return NotImplemented
        if self._file is None and other._file is None:
            return self._data == other._data
        return self is other

    def __hash__(self) -> int:
        return hash(self._data) if self._file is None else id(self)

    def __repr__(self) -> str:
        return f"LiteralBody(size={self.size})"


# --- FETCH -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """``BODY[<parts>.<text>]``: ``parts`` like (1, 2); ``text`` one of HEADER, HEADER.FIELDS,
    HEADER.FIELDS.NOT, TEXT, MIME or None; ``fields`` for the HEADER.FIELDS forms."""

    parts: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        items = [str(p) for p in self.parts]
        if self.text:
            items.append(self.text)
        spec = ".".join(items)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True)
class FetchAttr:
    """One fetch item: a simple name (FLAGS, UID, ENVELOPE...) or BODY[section]<partial>."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def needs_body(self) -> bool:
        return self.name not in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "EMAILID",
                                 "THREADID", "SAVEDATE", "MODSEQ")

    @property
    def sets_seen(self) -> bool:
        return (self.name in ("BODY", "BINARY") and self.section is not None
                and not self.peek) or \
            self.name in ("RFC822", "RFC822.TEXT")


# --- SEARCH ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchAll:
    pass


@dataclass(frozen=True)
class SearchFlag:
    """``flag`` set (or unset when ``present`` is False): SEEN, UNSEEN, KEYWORD x..."""

    flag: str
    present: bool = True


@dataclass(frozen=True)
class SearchNew:
    """RECENT (``recent``), NEW (``recent`` and ``unseen_too``) or OLD (neither)."""

    recent: bool
    unseen_too: bool = False


@dataclass(frozen=True)
class SearchSeq:
    seqs: SequenceSet


@dataclass(frozen=True)
class SearchUid:
    uids: SequenceSet


@dataclass(frozen=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class SearchAnd:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class SearchSize:
    larger: bool
    size: int


@dataclass(frozen=True)
class SearchDate:
    """BEFORE/ON/SINCE over INTERNALDATE, or SENT* over the Date header (``sent``)."""

    op: Literal["before", "on", "since"]
    date: datetime
    sent: bool = False


@dataclass(frozen=True)
class SearchHeader:
    """HEADER name value (FROM/TO/CC/BCC/SUBJECT are shorthands); substring, case-insensitive.
    ``envelope``: FROM/TO/CC/BCC, which RFC 3501 defines on the ENVELOPE's parsed addresses
    rather than on the field's bytes."""

    name: str
    value: str
    envelope: bool = False


@dataclass(frozen=True)
class SearchModseq:
    """RFC 7162 ``MODSEQ [entry type] n``: messages whose modseq is at least ``modseq``."""

    modseq: int


@dataclass(frozen=True)
class SearchText:
    """BODY (``body_only``) or TEXT: substring of the body or of the whole message."""

    value: str
    body_only: bool


@dataclass(frozen=True)
class SearchObject:
    """RFC 8474 EMAILID/THREADID (``kind``) ``value``, or RFC 8514 SAVEDBEFORE/SAVEDON/
    SAVEDSINCE (``kind`` "SAVED", ``op`` and ``date``) and SAVEDATESUPPORTED (``kind``
    "SAVEDATESUPPORTED"): keys over what ``MailStore.message_objects`` reads."""

    kind: Literal["EMAILID", "THREADID", "SAVED", "SAVEDATESUPPORTED"]
    value: str = ""
    op: Literal["before", "on", "since"] = "on"
    date: datetime | None = None


SearchKey = (SearchAll | SearchFlag | SearchNew | SearchSeq | SearchUid | SearchNot | SearchOr
             | SearchAnd | SearchSize | SearchDate | SearchHeader | SearchText | SearchObject
             | SearchModseq)


def search_nodes(key: SearchKey) -> Iterator[SearchKey]:
    """Every key of a search program, NOT/OR/AND included: the one walk the questions about
    a program (does it need the message? a MODSEQ?) are asked over. Iterative, and the
    parser bounds the tree's size."""
    stack = [key]
    while stack:
        k = stack.pop()
        yield k
        if isinstance(k, SearchNot):
            stack.append(k.key)
        elif isinstance(k, SearchOr):
            stack += (k.left, k.right)
        elif isinstance(k, SearchAnd):
            stack.extend(k.keys)

@dataclass(frozen=True)
class ReturnOptions:
    """``RETURN (...)`` of an extended SEARCH or SORT (RFC 4731, 5267, 5182): which ESEARCH
    data items the client asked for. ``partial`` is the (low, high) window, 1-based."""

    min: bool = False
    max: bool = False
    all: bool = False
    count: bool = False
    save: bool = False
    context: bool = False
    update: bool = False
    partial: tuple[int, int] | None = None


# --- Commands --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A parsed IMAP command; subclasses are named after RFC 3501's commands."""

    tag: str

    @property
    def name(self) -> str:
        """The command's IMAP name, used by the state table and in replies."""
        return NAMES[type(self)]


@dataclass(frozen=True)
class Capability(Command):
    pass


@dataclass(frozen=True)
class Noop(Command):
    pass


@dataclass(frozen=True)
class StartTls(Command):
    pass


@dataclass(frozen=True)
class Logout(Command):
    pass


@dataclass(frozen=True)
class Id(Command):
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Login(Command):
    user: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line
        return f"Login(tag={self.tag!r}, user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True)
class Authenticate(Command):
    mechanism: str
    initial: bytes | None  # SASL-IR initial response, already base64-decoded

    def __repr__(self) -> str:
        return f"Authenticate(tag={self.tag!r}, mechanism={self.mechanism!r})"


@dataclass(frozen=True)
class Namespace(Command):
    pass


@dataclass(frozen=True)
class ListCmd(Command):
    reference: str
    pattern: str
    lsub: bool = False
    extended: ListOptions | None = None
    """RFC 5258's extended syntax was used (selection/return options, several patterns)."""


@dataclass(frozen=True)
class ListOptions:
    """LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819) arguments of one LIST."""

    patterns: tuple[str, ...]
    select: frozenset[str] = frozenset()
    """SUBSCRIBED, REMOTE, RECURSIVEMATCH."""
    returns: frozenset[str] = frozenset()
    """SUBSCRIBED, CHILDREN (STATUS is in ``status``)."""
    status: tuple[str, ...] = ()
    """RETURN (STATUS (items)): a STATUS response follows each selectable mailbox."""


@dataclass(frozen=True)
class QresyncParams:
    """RFC 7162 ``SELECT ... (QRESYNC (uidvalidity modseq [known-uids [seq-match]]))``."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None


@dataclass(frozen=True)
class Select(Command):
    mailbox: str
    readonly: bool = False
    condstore: bool = False
    """``(CONDSTORE)``: the SELECT enables CONDSTORE (RFC 7162 §3.1.8)."""
    qresync: QresyncParams | None = None


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Create(Command):
    mailbox: str
    use: tuple[str, ...] = ()
    """RFC 6154 CREATE-SPECIAL-USE: the attributes of ``(USE (...))``."""


@dataclass(frozen=True)
class Delete(Command):
    mailbox: str


@dataclass(frozen=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True)
class Subscribe(Command):
    mailbox: str
    subscribe: bool = True


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    flags: frozenset[str]
    date: datetime | None
    message: LiteralBody
    binary: bool = False
    """Sent as a literal8 (RFC 3516): it may hold binary parts."""

    def __repr__(self) -> str:  # message content stays out of logs
        return f"Append(tag={self.tag!r}, mailbox={self.mailbox!r}, size={self.message.size})"


    def close(self) -> None:
        self.message.close()


@dataclass(frozen=True)
class CatUrl:
    """A CATENATE URL part (RFC 4469): an IMAP URL naming (part of) a stored message."""

    url: str


@dataclass(frozen=True)
class AppendMessage:
    """One message of a MULTIAPPEND (RFC 3502): a literal, or CATENATE's parts in order."""

    flags: frozenset[str]
    date: datetime | None
    parts: tuple[LiteralBody | CatUrl, ...]
    binary: bool = False
    """Some literal was a literal8 (RFC 3516): binary parts are stored re-encoded."""


@dataclass(frozen=True)
class AppendMany(Command):
    """APPEND with several messages (MULTIAPPEND) or CATENATE: all are stored or none."""

    mailbox: str
    messages: tuple[AppendMessage, ...]

    def close(self) -> None:
        for message in self.messages:
            for part in message.parts:
                if isinstance(part, LiteralBody):
                    part.close()

    def __repr__(self) -> str:  # message content stays out of logs
        return (f"AppendMany(tag={self.tag!r}, mailbox={self.mailbox!r}, "
                f"messages={len(self.messages)})")


@dataclass(frozen=True)
class Check(Command):
    pass


@dataclass(frozen=True)
class Close(Command):
    pass


@dataclass(frozen=True)
class Unselect(Command):
    pass


@dataclass(frozen=True)
class Expunge(Command):
    uids: SequenceSet | None = None  # UID EXPUNGE


@dataclass(frozen=True)
class Fetch(Command):
    seqset: SequenceSet
    attrs: tuple[FetchAttr, ...]
    uid: bool = False
    changedsince: int | None = None
    """RFC 7162 CHANGEDSINCE: only messages whose modseq is above it."""
    vanished: bool = False
    """RFC 7162 VANISHED modifier (UID FETCH with CHANGEDSINCE, QRESYNC enabled)."""


@dataclass(frozen=True)
class StoreCmd(Command):
    seqset: SequenceSet
    mode: Literal["set", "add", "remove"]
    silent: bool
    flags: frozenset[str]
    uid: bool = False
    unchangedsince: int | None = None
    """RFC 7162 UNCHANGEDSINCE: messages changed after it are left alone ([MODIFIED])."""


@dataclass(frozen=True)
class Search(Command):
    key: SearchKey
    charset: str | None = None
    uid: bool = False
    returns: ReturnOptions | None = None
    """Set for the extended form (ESEARCH): the reply is ``* ESEARCH``, not ``* SEARCH``."""


@dataclass(frozen=True)
class SortCmd(Command):
    """RFC 5256 SORT: the search program's matches in ``criteria`` order."""

    criteria: tuple[tuple[str, bool], ...]
    key: SearchKey
    charset: str
    uid: bool = False
    returns: ReturnOptions | None = None
    """Set for the extended form (ESORT, CONTEXT=SORT)."""


@dataclass(frozen=True)
class ThreadCmd(Command):
    """RFC 5256 THREAD: the search program's matches as threads by ``algorithm``."""

    algorithm: str
    key: SearchKey
    charset: str
    uid: bool = False


@dataclass(frozen=True)
class Copy(Command):
    seqset: SequenceSet
    mailbox: str
    uid: bool = False
    move: bool = False


@dataclass(frozen=True)
class Idle(Command):
    pass


@dataclass(frozen=True)
class CancelUpdate(Command):
    """RFC 5267 CANCELUPDATE: stop the updates of the contexts created by these tags."""

    tags: tuple[str, ...]


NAMES: dict[type[Command], str] = {
    Capability: "CAPABILITY", Noop: "NOOP", StartTls: "STARTTLS", Logout: "LOGOUT", Id: "ID",
    Enable: "ENABLE",
    Login: "LOGIN", Authenticate: "AUTHENTICATE", Namespace: "NAMESPACE", ListCmd: "LIST",
    Select: "SELECT", Status: "STATUS", Create: "CREATE", Delete: "DELETE", Rename: "RENAME",
    Subscribe: "SUBSCRIBE", Append: "APPEND", Check: "CHECK", Close: "CLOSE",
    Unselect: "UNSELECT", Expunge: "EXPUNGE", Fetch: "FETCH", StoreCmd: "STORE",
    Search: "SEARCH", Copy: "COPY", Idle: "IDLE", SortCmd: "SORT", ThreadCmd: "THREAD",
    CancelUpdate: "CANCELUPDATE",
    AppendMany: "APPEND",
}
