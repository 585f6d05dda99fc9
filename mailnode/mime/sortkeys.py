"""The per-message keys RFC 5256 SORT / THREAD and RFC 5957 DISPLAY compare, and what SEARCH
FROM/TO/CC/BCC/SUBJECT look in, computed from a message's ENVELOPE (and its References and
Subject fields) by the functions here: once when the message is stored (:func:`stored_keys`,
the typed, indexed columns of ``message_keys``, migration 0013, which SORT orders by and
SEARCH matches in SQL), and by the pure paths (``mailnode.imap.sortthread``,
``mailnode.imap.search``) that answer from a message itself. One set of functions for both, so
that both answer the same. Pure, bounded for hostile headers."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import NamedTuple

from mailnode.mime import headers as mh
from mailnode.mime.model import Address, Envelope, MessageStructure, Part
from mailnode.mime.structure import TopFields

MAX_SUBJECT = 4096  # characters of a Subject value looked at for its base subject
MAX_DATE = 200  # characters of a Date value handed to the date parser
MAX_ID_FIELD = 16 * 1024  # trailing characters of a References / In-Reply-To value parsed
MAX_REFERENCES = 64  # message ids kept from one References field (the nearest ancestors)

_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_SPACES = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[\x01-\x5a\x5c\x5e-\x7f]*+\] *+"  # RFC 5256 subj-blob (after step 1: WSP = SP)
# subj-leader = (*subj-blob subj-refwd) / WSP, matched on the ASCII-lowered subject.
# Possessive: a blob never contains "[" or "]", so giving one back can never help.
_LEADER = re.compile(rf"(?:{_BLOB})*+(?:re|fwd?) *+(?:{_BLOB})?+:| ")
_BLOB_RE = re.compile(_BLOB)
_MSG_ID = re.compile(r"<[ \t]*([^<>\s]{1,998})[ \t]*>")


def casemap(value: str) -> str:
    """i;ascii-casemap: ASCII letters compare case-insensitively, everything else by code
    point (which orders as the UTF-8 octets do). ``str.upper`` is the same on ASCII, and
    several times faster than a translation table."""
    return value.upper() if value.isascii() else value.translate(_ASCII_UPPER)


def base_subject(subject: str | None) -> tuple[str, bool]:
    """RFC 5256 §2.1: the base subject of ``subject`` and whether extraction removed a
    reply/forward marker (``Re:``, ``Fwd:``, a trailing ``(fwd)``, or ``[fwd: ...]``). Linear:
    every step either consumes text or stops, and no slice is copied until the end."""
    if not subject:
        return "", False
    # (1) encoded words to UTF-8, tabs and continuations to space, runs of spaces to one.
    s = _SPACES.sub(" ", mh.decode_words(subject[:MAX_SUBJECT]))
    # ASCII letters lowered, same length as s: indexes match.
    low = s.lower() if s.isascii() else s.translate(_ASCII_LOWER)
    start, end = 0, len(s)
    reply = False
    while True:
        # (2) trailing subj-trailer = "(fwd)" / WSP, repeatedly.
        while end > start:
            if s[end - 1] == " ":
                end -= 1
            elif low.endswith("(fwd)", start, end):
                end -= 5
                reply = True
            else:
                break
        # (3) leading subj-leader, (4) a leading subj-blob if something remains; (5) repeat.
        while start < end:
            m = _LEADER.match(low, start, end)
            if m is not None:
                reply = reply or m.group() != " "
                start = m.end()
                continue
            m = _BLOB_RE.match(low, start, end)
            if m is not None and m.end() < end:  # no trailing WSP left: the rest is non-empty
                start = m.end()
                continue
            break
        # (6) "[fwd:" ... "]" wrapping: unwrap and go back to (2).
        if end - start >= 6 and low.startswith("[fwd:", start, end) and s[end - 1] == "]":
            start += 5
            end -= 1
            reply = True
            continue
        return s[start:end], reply


def parsed_sent(date: str | None) -> float | None:
    """The Date field as a timestamp; None when it is missing or unparsable (RFC 5256: the
    caller then uses the internal date)."""
    if not date:
        return None
    try:
        when = parsedate_to_datetime(date[:MAX_DATE])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def arrival(internaldate: datetime) -> float:
    """The internal date as a timestamp (a naive one taken as UTC)."""
    return internaldate.replace(tzinfo=internaldate.tzinfo or UTC).timestamp()


def sent_date(date: str | None, internaldate: datetime) -> float:
    """RFC 5256: the Date field, or the internal date when it is missing or unparsable."""
    sent = parsed_sent(date)
    return arrival(internaldate) if sent is None else sent


def first(addresses: Sequence[Address]) -> Address | None:
    """The first ENVELOPE address; a group's start marker counts, its mailbox being the
    group name (as Dovecot sorts ``Cc: team: a@b;`` under "team")."""
    return addresses[0] if addresses else None


def mailbox_key(addresses: Sequence[Address]) -> str:
    """RFC 5256: the addr-mailbox of the first address, ascii-casemapped; "" when none."""
    a = first(addresses)
    return casemap(a.mailbox or "") if a is not None else ""


def display_key(addresses: Sequence[Address]) -> str:
    """RFC 5957 §3: the decoded display name of the first address, else its addr-spec."""
    a = first(addresses)
    if a is None:
        return ""
    name = mh.decode_words(a.name).strip() if a.name else ""
    if not name:
        name = f"{a.mailbox or ''}@{a.host}" if a.host else (a.mailbox or "")
    return casemap(name)


def message_ids(value: str | None, limit: int) -> list[str]:
    """The ``<id>``s of a References value, the last ``limit`` of
    them, from at most the last ``MAX_ID_FIELD`` characters (a cut-off first id is dropped:
    it has no ``<``). Comparisons stay case-sensitive (RFC 5256 §3)."""
    if not value:
        return []
    found = _MSG_ID.findall(value[-MAX_ID_FIELD:])
    return found[-limit:] if limit else []


def first_id(value: str | None) -> str | None:
    """The first ``<id>`` of a Message-ID / In-Reply-To value (RFC 5256 §3 step 1A)."""
    m = _MSG_ID.search(value[:MAX_ID_FIELD]) if value else None
    return m.group(1) if m else None


_REFERENCES = mh.field_pattern(("references",))


class SortKeys(NamedTuple):
    """What SORT and THREAD compare of one message, apart from its internal date and size
    (which the listing has): each derived from the header exactly as at command time. A
    named tuple: made from a stored record fast (a frozen dataclass is several times slower
    to construct, which a SORT of 100,000 messages notices)."""

    base: tuple[str, bool]  # (casemapped base subject, whether a reply/forward marker was removed)
    sent: float | None  # the Date field's timestamp; None: the internal date stands in
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str
    message_id: str | None  # first_id of Message-ID
    parents: tuple[str, ...]  # References' ids, or the first id of In-Reply-To


def keys_of(envelope: Envelope | None, references: str | None) -> SortKeys:
    """The keys of a message with this ENVELOPE and References value."""
    e = envelope or Envelope()
    refs = message_ids(references, MAX_REFERENCES)
    if not refs:  # no usable References: the first id of In-Reply-To is the parent
        irt = first_id(e.in_reply_to)
        refs = [irt] if irt else []
    base, reply = base_subject(e.subject)
    return SortKeys((casemap(base), reply), parsed_sent(e.date), mailbox_key(e.from_),
                    mailbox_key(e.to), mailbox_key(e.cc), display_key(e.from_),
                    display_key(e.to), first_id(e.message_id), tuple(refs))


ADDRESS_FIELDS = ("FROM", "TO", "CC", "BCC")
MAX_HEADER_VALUES = 1000  # occurrences of one field a SEARCH HEADER key looks at


def address_texts(envelope: Envelope, name: str) -> tuple[str, ...]:
    """What SEARCH FROM/TO/CC/BCC look in (RFC 3501 6.4.4: the envelope's field): per stored
    address its display name with encoded words decoded, and ``mailbox@host`` as a reader
    sees it, comments and folding gone; a group's name. Case-folded. The stored envelope
    holds at most ``MAX_ADDRESSES`` addresses per field, so this is bounded however long
    the header."""
    e = envelope
    addresses = {"FROM": e.from_, "TO": e.to, "CC": e.cc, "BCC": e.bcc}[name]
    out: list[str] = []
    for a in addresses:
        if a.name:
            out.append(mh.decode_words(a.name).casefold())
        if a.mailbox is not None:
            out.append((a.mailbox + ("@" + a.host if a.host else "")).casefold())
    return tuple(out)


@lru_cache(maxsize=64)
def _field_pattern(name: str) -> mh.FieldPattern:
    return mh.field_pattern((name,))


def header_values(raw: bytes, root: Part, name: str) -> list[str]:
    """Every (unfolded, length-bounded) value of field ``name`` in the top header, as SEARCH
    HEADER compares them."""
    found, _ = mh.fields(raw, root.header_start, root.body_start,
                         _field_pattern(name.lower()), MAX_HEADER_VALUES)
    return [v.decode("utf-8", "replace") for _, v in found]


def references_value(raw: bytes, structure: MessageStructure) -> str | None:
    """The first References field of the top-level header (not part of the ENVELOPE)."""
    root = structure.root
    got, _ = mh.fields(raw, root.header_start, root.body_start, _REFERENCES, 1)
    return mh.text(got[0][1]) if got else None




SORT_COLUMNS = {"ARRIVAL": "arrival", "SIZE": "size", "DATE": "sent", "SUBJECT": "subject",
                "FROM": "from_addr", "TO": "to_addr", "CC": "cc_addr",
                "DISPLAYFROM": "display_from", "DISPLAYTO": "display_to"}
"""The ``message_keys`` column each RFC 5256 / RFC 5957 sort key compares (the common ones
indexed with the mailbox: ``models._KEY_INDEXES``)."""
SEARCH_COLUMNS = {"FROM": "from_text", "TO": "to_text", "CC": "cc_text", "BCC": "bcc_text",
                  "SUBJECT": "subject_text"}
"""The ``message_keys`` column SEARCH FROM/TO/CC/BCC/SUBJECT look in (``texts``)."""
SEPARATOR = "\x00"
"""Starts each value of a ``texts`` column: a needle without it can only match inside one
value, exactly as the values' own substring test would."""


def octets(value: str) -> bytes:
    """How a key is stored: UTF-8, keeping the lone surrogates that undecodable header bytes
    leave (``surrogatepass``). Comparing these octets (SQLite BLOBs compare with memcmp)
    orders as Python orders the strings, by code point: that is what makes a SORT in SQL
    answer as the pure one does."""
    return value.encode("utf-8", "surrogatepass")


def unoctets(value: bytes) -> str:
    """``octets`` undone."""
    return value.decode("utf-8", "surrogatepass")


def texts(values: Sequence[str]) -> bytes:
    """Values a SEARCH looks in, as one column: each after a ``SEPARATOR`` (so no values
    is empty and one empty value is not)."""
    return b"".join(octets(SEPARATOR + v) for v in values)


class StoredKeys(NamedTuple):
    """One message's row of ``message_keys`` (apart from mailbox, uid, internal date and
    size): its ``SortKeys`` and what SEARCH looks in, computed once when it is stored by the
    same functions the pure paths use. ``sent`` is None when the Date field is missing or
    unparsable (the row then takes the internal date, RFC 5256)."""

    sent: float | None
    subject: bytes  # casemapped base subject
    reply: int
    from_addr: bytes
    to_addr: bytes
    cc_addr: bytes
    display_from: bytes
    display_to: bytes
    message_id: bytes | None
    parents: bytes  # the parent ids, space-separated (an id never contains a space)
    from_text: bytes
    to_text: bytes
    cc_text: bytes
    bcc_text: bytes
    subject_text: bytes


STORED_COLUMNS = StoredKeys._fields


def stored_keys(raw: bytes, structure: MessageStructure,
                top: TopFields | None = None) -> StoredKeys:
    """The row of a message with these bytes (its header block is enough) and structure;
    ``top``: what ``analyse_top`` found of its header alongside, saving two passes."""
    env = structure.root.envelope or Envelope()
    if top is None:
        references = references_value(raw, structure)
        subject_values = header_values(raw, structure.root, "subject")
    else:
        references = None if top.references is None else mh.text(top.references)
        subject_values = [v.decode("utf-8", "replace")
                          for v in top.subjects[:MAX_HEADER_VALUES]]
    k = keys_of(env, references)
    subjects = [mh.decode_words(v).casefold() for v in subject_values]
    return StoredKeys(
        k.sent, octets(k.base[0]), int(k.base[1]), octets(k.from_), octets(k.to),
        octets(k.cc), octets(k.display_from), octets(k.display_to),
        None if k.message_id is None else octets(k.message_id),
        octets(" ".join(k.parents)),
        texts(address_texts(env, "FROM")), texts(address_texts(env, "TO")),
        texts(address_texts(env, "CC")), texts(address_texts(env, "BCC")), texts(subjects))


def sort_keys(sent: float, subject: bytes, reply: int, from_addr: bytes, to_addr: bytes,
              cc_addr: bytes, display_from: bytes, display_to: bytes,
              message_id: bytes | None, parents: bytes) -> SortKeys:
    """The ``SortKeys`` of a stored row."""
    return SortKeys((unoctets(subject), bool(reply)), sent, unoctets(from_addr),
                    unoctets(to_addr), unoctets(cc_addr), unoctets(display_from),
                    unoctets(display_to), None if message_id is None else unoctets(message_id),
                    tuple(unoctets(parents).split(" ")) if parents else ())


@contextmanager
def collection_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for a bulk step: reading the keys of 100,000
    messages and threading them allocates about ten objects per message, and each
    allocation threshold crossed started a collection that walked the whole heap (more than
    half the time of a THREAD of 100,000 messages, measured). What the step leaves behind
    is collected as usual once it is resumed. Process-wide: a step overlapping another may
    find it resumed early, which costs time, never correctness."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
