"""Evaluation of SEARCH keys against one message (metadata, and its bytes when needed)."""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime

from mailnode.imap import commands as c
from mailnode.imap import objects
from mailnode.mime import Envelope, MessageStructure, Part, analyse, sortkeys
from mailnode.mime import headers as mh
from mailnode.store.api import MessageMeta, MessageObjects

CHARSETS = frozenset({"US-ASCII", "UTF-8"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")  # "=" too: padding is redone
MAX_DATE = 200  # characters of a Date value handed to the date parser
MAX_DECODED = 8 * 1024 * 1024  # decoded text-part characters searched per message


def needs_body(key: c.SearchKey) -> bool:
    """Whether evaluating ``key`` requires the message bytes (header/body/sent-date keys)."""
    return any(isinstance(k, c.SearchHeader | c.SearchText)
               or (isinstance(k, c.SearchDate) and k.sent) for k in c.search_nodes(key))


def keys_suffice(key: c.SearchKey) -> bool:
    """Whether the texts stored at delivery (``MailStore.search_texts``) answer every key
    of ``key`` that would otherwise read the message: FROM/TO/CC/BCC with a value,
    SUBJECT."""
    return all(_stored_key_answers(k) for k in c.search_nodes(key))


def stored(key: c.SearchKey) -> c.SearchHeader | None:
    """``key`` when the stored texts answer it: FROM/TO/CC/BCC with a value, SUBJECT; a
    value holding the texts' separator (a NUL: not IMAP text) is left to the message."""
    if not isinstance(key, c.SearchHeader) or sortkeys.SEPARATOR in key.value:
        return None
    if (bool(key.value) and key.name.upper() in sortkeys.ADDRESS_FIELDS) if key.envelope \
            else key.name.lower() == "subject":
        return key
    return None


def _stored_key_answers(key: c.SearchKey) -> bool:
    if isinstance(key, c.SearchText):
        return False
    if isinstance(key, c.SearchHeader):
        return stored(key) is not None
    if isinstance(key, c.SearchDate):
        return not key.sent
    return True


@dataclass
class Candidate:
    """A message being tested. Its structure (the stored one, or analysed here once when
    the caller has none) locates the header and the text parts, so nothing is re-parsed per
    key, and what is decoded for BODY/TEXT is bounded by ``MAX_DECODED``."""

    seq: int
    meta: MessageMeta
    max_seq: int
    max_uid: int
    raw: bytes | None = None
    structure: MessageStructure | None = None
    extra: MessageObjects | None = None
    """EMAILID and save date, loaded when the key needs them (``objects.needs_objects``)."""
    hits: Mapping[c.SearchHeader, AbstractSet[int]] | None = None
    """The uids each stored-text key (``stored``) matches, worked out by the store for the
    whole mailbox: given instead of ``raw`` when ``keys_suffice``."""
    _body_text: str | None = field(default=None, repr=False)

    @property
    def tree(self) -> Part:
        if self.structure is None:
            self.structure = analyse(self.raw or b"")
        return self.structure.root

    @property
    def header(self) -> bytes:
        """The top-level header block."""
        root = self.tree
        return (self.raw or b"")[root.header_start:root.body_start]

    def header_values(self, name: str) -> list[str]:
        """Every (unfolded, length-bounded) value of field ``name`` in the top header."""
        return sortkeys.header_values(self.raw or b"", self.tree, name)

    def address_texts(self, name: str) -> tuple[str, ...]:
        """What SEARCH FROM/TO/CC/BCC look in (``sortkeys.address_texts``)."""
        return sortkeys.address_texts(self.tree.envelope or Envelope(), name)

    @property
    def body_text(self) -> str:
        """The body as a reader sees it: the raw text plus every text part decoded from its
        transfer encoding and charset (so base64 and quoted-printable mail is searchable)."""
        if self._body_text is None:
            raw = self.raw or b""
            root = self.tree
            texts = [raw[root.body_start:root.end].decode("utf-8", "replace")]
            budget = MAX_DECODED
            for part in _text_parts(root):
                if budget <= 0:
                    break
                body = raw[part.body_start:min(part.end, part.body_start + 2 * budget)]
                decoded = mh.decode(_transfer_decode(body, part.encoding),
                                    mh.param_value(part.params, "charset"))[:budget]
                budget -= len(decoded)
                texts.append(decoded)
            self._body_text = "\n".join(texts).casefold()
        return self._body_text


def _text_parts(root: Part) -> list[Part]:
    """The text leaves, in order, including those of encapsulated messages."""
    out: list[Part] = []
    stack = [root]
    while stack:
        part = stack.pop()
        if part.children:
            stack.extend(reversed(part.children))
        elif part.message is not None:
            stack.append(part.message)
        elif part.content_type[0] == "text":
            out.append(part)
    return out


def _transfer_decode(body: bytes, encoding: str | None) -> bytes:
    """Undo base64 / quoted-printable (both linear, in C); anything else is taken as is."""
    kind = (encoding or "").lower()
    try:
        if kind == "base64":  # lenient like mail readers: stray characters and padding
            data = _NOT_BASE64.sub(b"", body)
            data = data[:len(data) - 1] if len(data) % 4 == 1 else data
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        if kind == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        pass
    return body


def _decoded(value: str) -> str:
    return mh.decode_words(value)


def _day(value: datetime) -> date:
    return value.date()


def matches(key: c.SearchKey, m: Candidate) -> bool:
    """Whether message ``m`` satisfies ``key`` (RFC 3501 §6.4.4 semantics)."""
    if isinstance(key, c.SearchAll):
        return True
    if isinstance(key, c.SearchFlag):
        return (key.flag in m.meta.flags) == key.present
    if isinstance(key, c.SearchNew):  # NEW is RECENT UNSEEN; OLD is NOT RECENT
        recent = "\\Recent" in m.meta.flags
        if not key.recent:
            return not recent
        return recent and not (key.unseen_too and "\\Seen" in m.meta.flags)
    if isinstance(key, c.SearchSeq):
        return key.seqs.contains(m.seq, m.max_seq)
    if isinstance(key, c.SearchUid):
        return key.uids.contains(m.meta.uid, m.max_uid)
    if isinstance(key, c.SearchNot):
        return not matches(key.key, m)
    if isinstance(key, c.SearchOr):
        return matches(key.left, m) or matches(key.right, m)
    if isinstance(key, c.SearchAnd):
        return all(matches(k, m) for k in key.keys)
    if isinstance(key, c.SearchSize):
        return m.meta.size > key.size if key.larger else m.meta.size < key.size
    if isinstance(key, c.SearchModseq):
        return m.meta.modseq >= key.modseq
    if isinstance(key, c.SearchDate):
        return _match_date(key, m)
    if isinstance(key, c.SearchHeader):
        if m.hits is not None and key in m.hits:
            return m.meta.uid in m.hits[key]
        needle = key.value.casefold()
        if key.envelope and needle:
            return any(needle in text for text in m.address_texts(key.name))
        values = m.header_values(key.name)
        if not needle:
            return bool(values)
        return any(needle in _decoded(v).casefold() for v in values)
    if isinstance(key, c.SearchObject):
        return objects.matches(key, m.meta, m.extra)
    if isinstance(key, c.SearchText):
        needle = key.value.casefold()
        if needle in m.body_text:
            return True
        if key.body_only:
            return False
        header = m.header.decode("utf-8", "replace")
        return needle in header.casefold() or needle in _decoded(header).casefold()
    raise AssertionError(f"unhandled search key {key!r}")


def _match_date(key: c.SearchDate, m: Candidate) -> bool:
    if key.sent:
        envelope = m.tree.envelope
        value = envelope.date if envelope is not None else None
        if value is None:
            return False
        try:
            when = parsedate_to_datetime(value[:MAX_DATE])
        except (TypeError, ValueError):
            return False
    else:
        when = m.meta.internaldate
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return objects.compare_day(_day(when), key.op, key.date.date())
