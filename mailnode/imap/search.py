"""Evaluation of SEARCH keys against one message (metadata, and its bytes when needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32, default
from email.utils import parsedate_to_datetime

from mailnode.imap import commands as c
from mailnode.imap.mime import split_header
from mailnode.store.api import MessageMeta

CHARSETS = frozenset({"US-ASCII", "UTF-8"})


def needs_body(key: c.SearchKey) -> bool:
    """Whether evaluating ``key`` requires the message bytes (header/body/sent-date keys)."""
    if isinstance(key, c.SearchHeader | c.SearchText):
        return True
    if isinstance(key, c.SearchDate):
        return key.sent
    if isinstance(key, c.SearchNot):
        return needs_body(key.key)
    if isinstance(key, c.SearchOr):
        return needs_body(key.left) or needs_body(key.right)
    if isinstance(key, c.SearchAnd):
        return any(needs_body(k) for k in key.keys)
    return False


@dataclass
class Candidate:
    """A message being tested; the parsed header is computed at most once."""

    seq: int
    meta: MessageMeta
    max_seq: int
    max_uid: int
    raw: bytes | None = None
    _fields: Message | None = field(default=None, repr=False)
    _body_text: str | None = field(default=None, repr=False)

    @property
    def fields(self) -> Message:
        if self._fields is None:
            header, _ = split_header(self.raw or b"")
            self._fields = BytesHeaderParser(policy=compat32).parsebytes(header)
        return self._fields

    @property
    def body_text(self) -> str:
        """The body as a reader sees it: the raw text plus every text part decoded from its
        transfer encoding and charset (so base64 and quoted-printable mail is searchable)."""
        if self._body_text is None:
            raw = self.raw or b""
            texts = [split_header(raw)[1].decode("utf-8", "replace")]
            message = BytesParser(policy=default).parsebytes(raw)
            for part in message.walk():
                if part.get_content_maintype() == "text" and not part.is_multipart():
                    try:
                        texts.append(part.get_content())
                    except (LookupError, UnicodeError, ValueError, AssertionError):
                        continue  # an unknown charset or broken encoding: raw text only
            self._body_text = "\n".join(texts).casefold()
        return self._body_text


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


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
    if isinstance(key, c.SearchDate):
        return _match_date(key, m)
    if isinstance(key, c.SearchHeader):
        needle = key.value.casefold()
        values = m.fields.get_all(key.name) or []
        if not needle:
            return bool(values)
        return any(needle in _decoded(str(v)).casefold() for v in values)
    if isinstance(key, c.SearchText):
        needle = key.value.casefold()
        if needle in m.body_text:
            return True
        if key.body_only:
            return False
        header = split_header(m.raw or b"")[0].decode("utf-8", "replace")
        return needle in header.casefold() or needle in _decoded(header).casefold()
    raise AssertionError(f"unhandled search key {key!r}")


def _match_date(key: c.SearchDate, m: Candidate) -> bool:
    if key.sent:
        value = m.fields.get("date")
        if value is None:
            return False
        try:
            when = parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            return False
    else:
        when = m.meta.internaldate
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    day = _day(when)
    target = key.date.date()
    if key.op == "before":
        return day < target
    if key.op == "on":
        return day == target
    return day >= target
