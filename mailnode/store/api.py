"""The storage contract the protocol layers program against (IMAP, SMTP, delivery).

Every method is a coroutine; the SQLite implementation runs its transactions on one database
thread so the event loop never blocks on disk and there is exactly one writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from mailnode.mime.sortkeys import SortKeys

SPECIAL_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
"""Mailboxes every user has, with their RFC 6154 special-use attribute."""



def is_protected(name: str, special_use: str | None) -> bool:
    """INBOX and the special mailboxes every user has cannot be deleted or renamed; a
    mailbox the user made with a special use (CREATE-SPECIAL-USE) can."""
    return name.upper() == "INBOX" or (name, special_use) in SPECIAL_MAILBOXES


SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

FlagMode = Literal["set", "add", "remove"]


class StoreError(Exception):
    """Base of storage errors that protocol layers map to NO responses."""


class NoSuchMailbox(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class MailboxProtected(StoreError):
    """INBOX and the special mailboxes cannot be deleted or renamed away."""


class OverQuota(StoreError):
    """Storing this would take the user past their storage quota (RFC 9208 OVERQUOTA)."""


class MetadataFull(StoreError):
    """Setting these annotations would give the user more entries than allowed."""


@dataclass(frozen=True)
class Usage:
    """What a user's mail takes (RFC 9208 resources) and the limit, in bytes (None: none)."""

    storage: int
    messages: int
    limit: int | None


@dataclass(frozen=True)
class User:
    """A local user: login ``name`` and self-certifying ``address``."""

    id: int
    name: str
    address: str


@dataclass(frozen=True)
class Mailbox:
    """A mailbox with the counts STATUS and SELECT report."""

    id: int
    user_id: int
    name: str
    uidvalidity: int
    uidnext: int
    special_use: str | None
    messages: int
    unseen: int
    recent: int = 0
    """Messages no session has yet claimed as \\Recent (see ``MailStore.claim_recent``)."""
    mailboxid: str = ""
    """RFC 8474 MAILBOXID: kept across RENAME, never given to another mailbox."""
    highest_modseq: int = 0
    """The modseq of the mailbox's newest change (RFC 7162 HIGHESTMODSEQ)."""


@dataclass(frozen=True)
class MessageMeta:
    """One message as IMAP lists it; sequence numbers are positions in uid order."""

    uid: int
    flags: frozenset[str]
    internaldate: datetime
    size: int
    modseq: int = 0
    """The modseq of its last change: its arrival, or its flags' last change."""


@dataclass(frozen=True)
class Changes:
    """What changed in a mailbox after a modseq: the change feed sessions catch up from."""

    changed: list[MessageMeta]
    """Messages (new, or with changed flags) whose modseq is above it, in uid order."""
    vanished: list[int]
    """Uids expunged after it (or moved out), ascending."""
    highest_modseq: int
    complete: bool = True
    """False when tombstones that old were dropped (``TOMBSTONE_LIMIT``): ``vanished`` is
    then empty and the caller finds expunges by comparing uids with ``list_messages``."""


TOMBSTONE_LIMIT = 10_000
"""Tombstones kept per mailbox. Past it the oldest half goes and the mailbox remembers the
highest modseq dropped (its floor); asking for changes since a modseq below the floor gives
``complete=False``, so a client that was away that long gets a full resync, never a wrong one.
"""


@dataclass(frozen=True)
class MessageObjects:
    """What RFC 8474 and RFC 8514 add to a message, read only when asked for (listings do
    not carry it)."""

    emailid: str
    """The same for every copy of the same stored bytes (COPY, MOVE, local recipients)."""
    threadid: str | None
    """None: threads are not tracked (RFC 8474 allows NIL)."""
    savedate: datetime | None
    """When the message was put into this mailbox."""


class MailStore(Protocol):
    """Mailboxes and messages of the node's users."""

    async def authenticate(self, login: str, password: str) -> User | None:
        """``login`` is the user name or the full address; hashing runs off the event loop."""

    async def list_mailboxes(self, user_id: int) -> list[Mailbox]: ...

    async def count_mailboxes(self, user_id: int) -> int:
        """How many mailboxes the user has (without the per-mailbox counts of a listing)."""

    async def get_mailbox(self, user_id: int, name: str) -> Mailbox | None:
        """``INBOX`` matches case-insensitively, other names exactly."""

    async def create_mailbox(self, user_id: int, name: str,
                             special_use: str | None = None) -> Mailbox:
        """``special_use`` (RFC 6154 CREATE-SPECIAL-USE): one attribute, checked by the
        caller; such a mailbox can be deleted and renamed (``is_protected``)."""

    async def delete_mailbox(self, user_id: int, name: str) -> None:
        """Ids are never reused; sessions that had it selected learn of it through
        ``ChangeNotifier.retired``."""

    async def rename_mailbox(self, user_id: int, old: str, new: str) -> None:
        """The renamed mailbox gets a new UIDVALIDITY (a new name is a new mailbox to
        clients); UIDVALIDITY values only ever grow, node-wide."""

    async def subscriptions(self, user_id: int) -> set[str]:
        """Names the user subscribed to (LSUB); the special mailboxes from the start."""

    async def subscribe(self, user_id: int, name: str, subscribed: bool) -> None: ...

    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        """All messages in uid order (position + 1 is the IMAP sequence number)."""

    async def snapshot(self, mailbox_id: int) -> tuple[list[MessageMeta], int]:
        """``list_messages`` with the mailbox's highest modseq as of the same read: a
        session that SELECTs from it and then follows ``changes_since`` misses nothing."""

    async def fetch_bodies(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, bytes]:
        """Full RFC 5322 bytes of the given messages (missing uids are left out)."""

    async def fetch_structures(self, mailbox_id: int, uids: Sequence[int],
                               ) -> dict[int, bytes | None]:
        """The MIME structure stored when each message arrived (``mailnode.mime``); None
        where there is none yet (the caller computes it, off the event loop)."""

    async def sort_order(self, mailbox_id: int, criteria: Sequence[tuple[str, bool]],
                         upto: int | None = None) -> list[int]:
        """The uids of the mailbox's messages (those up to ``upto``, when given) in RFC 5256
        SORT order by ``criteria``
        ((key, reverse) pairs, ``mailnode.imap.sortthread``), full ties by uid; from the
        keys computed when each message was stored (``mailnode.mime.sortkeys``)."""

    async def sort_keys(self, mailbox_id: int, uids: Sequence[int] | None, *,
                        thread: bool = False) -> dict[int, SortKeys]:
        """The stored SORT/THREAD keys of the given messages (None: all the mailbox's;
        missing uids are left out); ``thread``: only what THREAD compares is filled."""

    async def search_texts(self, mailbox_id: int, name: str, needle: str) -> set[int]:
        """The uids of messages whose SEARCH FROM/TO/CC/BCC/SUBJECT (``name``) values
        contain ``needle`` (case-folded; it never contains ``sortkeys.SEPARATOR``); an
        empty needle (SUBJECT only, as SEARCH has it): those with a Subject field."""

    async def fetch_messages(self, mailbox_id: int, uids: Sequence[int],
                             ) -> dict[int, tuple[bytes, bytes | None]]:
        """``fetch_bodies`` and ``fetch_structures`` in one read (a FETCH of sections or
        ENVELOPE with body data needs both)."""

    async def fetch_headers(self, mailbox_id: int, uids: Sequence[int], *,
                            small: bool = False, fields: bool = False,
                            ) -> dict[int, bytes | None]:
        """The top-level header block of each message (with the blank line that ends it),
        cut where its stored structure says, without reading the body out; None where
        there is no stored structure (the caller reads the whole message). ``small``: the
        caller knows the messages to be few and small in all, so the store may read them
        without a hop to another thread. ``fields``: the caller only picks fields that
        :func:`mailnode.mime.headers.in_stored_fields` accepts, so the store may give the
        fields it kept at delivery (:func:`~mailnode.mime.headers.stored_fields`) instead
        of the block: picking those fields from either gives the same bytes."""

    async def save_structures(self, mailbox_id: int, structures: dict[int, bytes]) -> None:
        """Keep structures computed later for messages stored without one."""

    async def store_flags(self, mailbox_id: int, uids: Sequence[int], flags: frozenset[str],
                          mode: FlagMode) -> list[MessageMeta]:
        """Change flags; returns the new state of the messages that still exist."""

    async def store_flags_unchanged_since(
            self, mailbox_id: int, uids: Sequence[int], flags: frozenset[str], mode: FlagMode,
            unchangedsince: int | None) -> tuple[list[MessageMeta], list[int]]:
        """``store_flags`` only on messages whose modseq is at most ``unchangedsince``
        (RFC 7162 UNCHANGEDSINCE), checked in the writing transaction; returns the new state
        of the messages it stored on and the uids that failed the condition."""

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        """The change feed: what changed after ``modseq``, read with the index on modseqs
        (the cost follows the number of changes, not the size of the mailbox)."""

    async def append(self, mailbox_id: int, body: bytes, flags: frozenset[str],
                     internaldate: datetime | None) -> tuple[int, int]:
        """Add a message; returns ``(uidvalidity, uid)``."""

    async def append_many(self, mailbox_id: int,
                          items: Sequence[tuple[bytes, frozenset[str], datetime | None]],
                          ) -> tuple[int, list[int]]:
        """Add several messages in one step (MULTIAPPEND, RFC 3502): all or none of them;
        returns ``(uidvalidity, uids)``."""

    async def expunge(self, mailbox_id: int, uids: Iterable[int] | None = None) -> list[int]:
        """Remove ``\\Deleted`` messages (only among ``uids`` if given); returns removed uids."""

    async def copy(self, src_mailbox_id: int, uids: Sequence[int],
                   dst_mailbox_id: int) -> list[tuple[int, int]]:
        """Copy messages; returns ``(source uid, new uid)`` pairs."""

    async def message_objects(self, mailbox_id: int, uids: Sequence[int],
                              ) -> dict[int, MessageObjects]:
        """EMAILID, THREADID and SAVEDATE of the given messages (missing uids left out)."""

    async def claim_recent(self, mailbox_id: int, known: int, claim: bool = True,
                           ) -> tuple[int, int]:
        """``(before, upto)``: uids in ``before < uid <= upto`` are \\Recent to the caller.

        ``known`` is the newest uid the caller's session has been told of: ``upto`` never
        passes it, so that a message arriving meanwhile stays for the first session to tell
        of it (RFC 3501 §2.3.2). With ``claim`` (a read-write SELECT) they stop being recent
        for every other session; without it (EXAMINE) nothing changes.
        """

    async def move(self, src_mailbox_id: int, uids: Sequence[int],
                   dst_mailbox_id: int) -> list[tuple[int, int]]:
        """Copy and remove in one step (RFC 6851): no session sees both or neither."""

    async def usage(self, user_id: int) -> Usage:
        """The user's storage in use (sum of message sizes, copies counted) and quota."""

    async def get_metadata(self, user_id: int, mailbox_id: int | None) -> dict[str, bytes]:
        """RFC 5464 annotations of a mailbox (or, with None, of the server for this user),
        entry name (lower-cased) to value."""

    async def set_metadata(self, user_id: int, mailbox_id: int | None,
                           changes: dict[str, bytes | None], max_entries: int) -> None:
        """Set (value) or remove (None) entries in one step; raises MetadataFull, setting
        nothing, when the user would end up with more than ``max_entries`` entries."""
