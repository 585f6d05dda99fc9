"""``analyse``: the MIME tree of a raw message in one forward pass, bounded everywhere.

How it stays linear: the message is read front to back exactly once by a single scanner.
At any point it searches (one compiled regex, in C) for either the end of the current header
block or a delimiter line of *any* enclosing multipart; what it finds decides what comes next
(body, next part, end of an enclosing part), and the search resumes where the last one ended.
So nested multiparts are not rescanned per level: every byte is looked at once by the
scanner, plus once by the field extractor if it lies in a header block. The regex tries the
alternation of active boundaries only at line starts that begin with ``--``, and at most
``MAX_DEPTH`` boundaries are active, so the total is O(len(raw) * MAX_DEPTH) in the worst
case and O(len(raw)) in practice. Values are parsed by the linear, non-recursive lexers of
:mod:`mailnode.mime.lexer`, on at most ``MAX_VALUE`` bytes each. Body line counts
(``bytes.count``, memchr speed) are taken per non-multipart part; only message/rfc822 parts
overlap their contents, so that is at most ``MAX_DEPTH`` passes too. Measured figures:
``python -m bench.mime_worst``.

Bounds (anything beyond degrades, never raises): nesting depth ``MAX_DEPTH`` (deeper
multipart or message parts become opaque ``application/octet-stream``), total parts
``MAX_PARTS`` (further parts of a multipart are left out of the tree, their bytes stay in
the enclosing part's body), interesting header fields per entity, bytes per parsed value,
parameters per header, addresses per field, and ``MAX_STORED`` characters of values in the
whole tree (so the stored blob stays small: values beyond it are left out, the structure
itself is kept).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from mailnode.mime.address import parse_addresses
from mailnode.mime.headers import (
    MAX_FIELDS,
    content_type,
    field_pattern,
    fields,
    param_value,
    parse_params,
    text,
)
from mailnode.mime.model import Address, Envelope, MessageStructure, Params, Part

MAX_DEPTH = 16
MAX_PARTS = 512
MAX_BOUNDARY = 200  # RFC 2046 allows 70; longer ones are treated as missing
MAX_ADDRESS_FIELDS = 32  # occurrences of one address field that are joined
MAX_ADDRESSES = 1000  # addresses kept per envelope field
MAX_STORED = 256 * 1024  # characters of header values kept in the whole tree (blob size)
MAX_ENCODING = 64  # a longer Content-Transfer-Encoding is garbage: treated as absent

_MIME_FIELDS = ("content-type", "content-disposition", "content-transfer-encoding",
                "content-id", "content-description", "content-md5", "content-language",
                "content-location")
_ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
                    "in-reply-to", "message-id", "references")
"""With References, which is not in the ENVELOPE but is what THREAD reads: the top-level
pass then finds all that the stored keys need (:class:`TopFields`)."""
_ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc"})
_MIME_ONLY = field_pattern(_MIME_FIELDS)
_WITH_ENVELOPE = field_pattern(_MIME_FIELDS + _ENVELOPE_FIELDS)
_OPAQUE = ("application", "octet-stream")
US_ASCII: Params = (("charset", "us-ascii"),)


@dataclass(frozen=True)
class _Delimiter:
    start: int  # where the part before it ends (the CRLF before "--" belongs to it)
    end: int  # where the next part starts
    boundary: bytes
    close: bool


_TAIL = rb")(--)?[ \t]*(?:\r?\n|\Z)"
# Each search is a pair of patterns: one tried at the search position when it is a line
# start, one that begins with a literal "\n" (so the regex engine skips ahead at memchr
# speed instead of trying an alternation at every byte).
Finder = tuple[re.Pattern[bytes], re.Pattern[bytes]]


def _pair(core: bytes) -> Finder:
    return re.compile(core), re.compile(rb"\n" + core)


@lru_cache(maxsize=128)
def _body_re(bounds: tuple[bytes, ...]) -> Finder:
    """A delimiter line of any of ``bounds``: group 1 the boundary, group 2 the close."""
    return _pair(b"--(" + b"|".join(re.escape(b) for b in bounds) + _TAIL)


@lru_cache(maxsize=128)
def _close_re(own: bytes, bounds: tuple[bytes, ...]) -> Finder:
    """Only the close delimiter of ``own``, or any delimiter of ``bounds``: how the rest of a
    multipart is skipped in one search once the part budget is spent."""
    alts = b"".join(b"|" + re.escape(b) for b in bounds)
    return _pair(b"--(" + re.escape(own) + b"(?=--)" + alts + _TAIL)


@lru_cache(maxsize=128)
def _header_re(bounds: tuple[bytes, ...]) -> Finder:
    """The blank line ending a header block (group 1), or a delimiter of any of ``bounds``
    (groups 2 and 3)."""
    if not bounds:
        return _pair(rb"(\r?\n)")
    return _pair(rb"(?:(\r?\n)|--(" + b"|".join(re.escape(b) for b in bounds) + _TAIL + rb")")


class _Kept(NamedTuple):
    """An entity's stored field values (see ``Part``)."""

    params: Params
    disposition: tuple[str, Params] | None
    id: str | None
    description: str | None
    encoding: str | None
    md5: str | None
    language: str | None
    location: str | None


class Analyser:
    """One run of :func:`analyse`; ``scanned`` counts the bytes its searches covered (tests
    use it to check the work is linear without timing anything)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.parts = 0
        self.scanned = 0
        self.steps = 0  # value-lexer loop steps
        self.room = MAX_STORED  # characters of values the tree may still keep
        self.top: list[tuple[str, bytes]] = []  # the top-level header's interesting fields

    def _keep(self, value: str | None) -> str | None:
        """``value`` if the stored-size budget still has room for it (earlier fields, so
        the top-level message's, come first), else None."""
        if value is None or len(value) > self.room:
            return None
        self.room -= len(value)
        return value

    def _keep_params(self, params: Params) -> Params:
        kept = []
        for key, value in params:
            if len(key) + len(value) <= self.room:
                self.room -= len(key) + len(value)
                kept.append((key, value))
        return tuple(kept)

    def _keep_addresses(self, addrs: list[Address]) -> tuple[Address, ...]:
        kept = []
        for a in addrs[:MAX_ADDRESSES]:
            size = (len(a.name or "") + len(a.adl or "") + len(a.mailbox or "")
                    + len(a.host or ""))
            if size > self.room:
                break
            self.room -= size
            kept.append(a)
        return tuple(kept)

    def run(self) -> MessageStructure:
        root, _ = self._entity(0, (), 0, ("text", "plain"), envelope=True)
        return MessageStructure(root)

    def _search(self, finder: Finder, pos: int) -> tuple[int, re.Match[bytes]] | None:
        """The first line at or after ``pos`` (a line start) that ``finder`` matches, and
        where the line break before it starts (it belongs to what was found)."""
        raw = self.raw
        m = finder[0].match(raw, pos) if pos == 0 or raw[pos - 1:pos] == b"\n" else None
        start = pos
        if m is None:
            m = finder[1].search(raw, pos)
            if m is not None:
                start = m.start() - 1 if raw[m.start() - 1:m.start()] == b"\r" and \
                    m.start() > pos else m.start()
        self.scanned += (m.end() if m is not None else len(raw)) - pos
        return (start, m) if m is not None else None

    def _delimiter(self, finder: Finder, pos: int) -> _Delimiter | None:
        found = self._search(finder, pos)
        if found is None:
            return None
        start, m = found
        return _Delimiter(start, m.end(), m.group(1), bool(m.group(2)))

    def _leaf_end(self, pos: int, bounds: tuple[bytes, ...]) -> tuple[int, _Delimiter | None]:
        """Where a part with no inner structure ends: the next enclosing delimiter."""
        if not bounds:
            return len(self.raw), None
        d = self._delimiter(_body_re(bounds), pos)
        return (d.start, d) if d is not None else (len(self.raw), None)

    def _entity(self, start: int, bounds: tuple[bytes, ...], depth: int,
                default: tuple[str, str], *, envelope: bool
                ) -> tuple[Part, _Delimiter | None]:
        raw = self.raw
        self.parts += 1
        # Header block: up to the blank line, or up to an enclosing delimiter (no body then).
        found_end = self._search(_header_re(bounds), start)
        delim: _Delimiter | None = None
        if found_end is None:
            body_start = len(raw)
            header_only = True
        elif found_end[1].group(1) is not None:
            body_start = found_end[1].end()
            header_only = False
        else:
            body_start, m = found_end
            delim = _Delimiter(body_start, m.end(), m.group(2), bool(m.group(3)))
            header_only = True
        found, scanned = fields(raw, start, body_start,
                                _WITH_ENVELOPE if envelope else _MIME_ONLY)
        self.scanned += scanned
        if depth == 0:
            self.top = found
        first: dict[str, str] = {}
        addresses: dict[str, list[str]] = {}
        for name, value in found:
            if name in _ADDRESS_FIELDS:
                if len(addresses.setdefault(name, [])) < MAX_ADDRESS_FIELDS:
                    addresses[name].append(text(value))
            else:
                first.setdefault(name, text(value))
        ctype, params, valid = content_type(first.get("content-type"), default)
        if not valid and ctype == ("text", "plain"):
            params = US_ASCII  # RFC 2045 §5.2: text/plain; charset=us-ascii
        env = self._envelope(first, addresses) if envelope else None
        children: tuple[Part, ...] = ()
        message: Part | None = None
        boundary = (param_value(params, "boundary") or "").encode("utf-8", "surrogateescape")
        if ctype[0] == "multipart" and not _usable(boundary):
            ctype, params = ("text", "plain"), US_ASCII  # no way to find the parts: flat
        descend = depth < MAX_DEPTH and self.parts < MAX_PARTS
        if (ctype[0] == "multipart" or ctype == ("message", "rfc822")) and not descend:
            ctype = _OPAQUE
        # This entity's values are charged to the size budget before its children's.
        kept = self._kept_fields(first, params)
        if header_only:
            end = body_start
            if ctype == ("message", "rfc822"):
                self.parts += 1
                message = Part(body_start, body_start, body_start, ("text", "plain"),
                               US_ASCII, envelope=Envelope())
        elif ctype[0] == "multipart":
            kids, end, delim = self._multipart(body_start, boundary, bounds, depth,
                                               ctype[1] == "digest")
            children = tuple(kids)
        elif ctype == ("message", "rfc822"):
            message, delim = self._entity(body_start, bounds, depth + 1, ("text", "plain"),
                                          envelope=True)
            end = message.end
        else:
            end, delim = self._leaf_end(body_start, bounds)
        part = Part(
            start, body_start, end, ctype, kept.params, kept.disposition, id=kept.id,
            description=kept.description, encoding=kept.encoding, md5=kept.md5,
            language=kept.language, location=kept.location,
            lines=0 if children or ctype[0] == "multipart" else raw.count(b"\n", body_start, end),
            children=children, message=message,
            envelope=env)
        return part, delim

    def _kept_fields(self, first: dict[str, str], params: Params) -> _Kept:
        """The stored values of one entity, as far as the size budget allows (the caller
        makes the Part: a placeholder Part copied with ``replace`` cost more than the rest
        of a small message's analysis together)."""
        disposition = None
        if "content-disposition" in first:
            kind, dparams, steps = parse_params(first["content-disposition"])
            self.steps += steps
            disposition = (self._keep(kind.lower()) or "", self._keep_params(dparams))
        encoding = _strip(first.get("content-transfer-encoding"))
        return _Kept(
            params=self._keep_params(params), disposition=disposition,
            id=self._keep(first.get("content-id")),
            description=self._keep(first.get("content-description")),
            encoding=encoding if encoding is None or len(encoding) <= MAX_ENCODING else None,
            md5=self._keep(first.get("content-md5")),
            language=self._keep(first.get("content-language")),
            location=self._keep(first.get("content-location")))

    def _multipart(self, body_start: int, own: bytes, bounds: tuple[bytes, ...], depth: int,
                   digest: bool) -> tuple[list[Part], int, _Delimiter | None]:
        """The parts between delimiters of ``own``; an enclosing delimiter ends it early."""
        inner = (own, *bounds)
        pattern = _body_re(inner)
        child_default = ("message", "rfc822") if digest else ("text", "plain")
        children: list[Part] = []
        d = self._delimiter(pattern, body_start)
        while True:
            if d is None:
                return children, len(self.raw), None
            if d.boundary != own:
                return children, d.start, d
            if d.close:
                end, outer = self._leaf_end(d.end, bounds)  # the epilogue
                return children, end, outer
            if self.parts >= MAX_PARTS:  # over budget: the remaining parts stay out of the tree
                d = self._delimiter(_close_re(own, bounds), d.end)
                continue
            child, d = self._entity(d.end, inner, depth + 1, child_default, envelope=False)
            children.append(child)

    def _envelope(self, first: dict[str, str], addresses: dict[str, list[str]]) -> Envelope:
        def addrs(name: str) -> tuple[Address, ...]:
            values = addresses.get(name)
            if not values:  # most of the six fields are absent
                return ()
            out: list[Address] = []
            for value in values:
                if len(out) >= MAX_ADDRESSES:
                    break
                parsed, steps = parse_addresses(value)
                self.steps += steps
                out.extend(parsed)
            return self._keep_addresses(out)

        keep = self._keep
        return Envelope(keep(first.get("date")), keep(first.get("subject")),
                        keep(first.get("in-reply-to")), keep(first.get("message-id")),
                        addrs("from"), addrs("sender"), addrs("reply-to"), addrs("to"),
                        addrs("cc"), addrs("bcc"))


def _usable(boundary: bytes) -> bool:
    return 0 < len(boundary) <= MAX_BOUNDARY and b"\r" not in boundary and b"\n" not in boundary


def _strip(value: str | None) -> str | None:
    return value.strip() if value is not None else None


class TopFields(NamedTuple):
    """What the top-level header pass saw of the fields the stored sort and search keys read
    beyond the ENVELOPE, as :func:`mailnode.mime.headers.fields` gives them: found once
    instead of in passes of their own."""

    subjects: list[bytes]  # every Subject value
    references: bytes | None  # the first References value


def analyse(raw: bytes) -> MessageStructure:
    """The MIME structure of ``raw``. Never raises on any input; time and memory linear in
    ``len(raw)``; depth, part count and parsed value sizes bounded (see module docstring)."""
    return analyse_top(raw)[0]


def analyse_top(raw: bytes) -> tuple[MessageStructure, TopFields | None]:
    """``analyse``, and the top-level ``TopFields``; None when that header had more
    interesting fields than one pass keeps (some Subject may lie beyond them)."""
    analyser = Analyser(raw)
    try:
        structure = analyser.run()
    except Exception:  # a bug must not make a mailbox unreadable: degrade to a flat message
        return MessageStructure(Part(0, len(raw), len(raw), ("text", "plain"), US_ASCII,
                                     lines=raw.count(b"\n"), envelope=Envelope())), None
    top = analyser.top
    if len(top) >= MAX_FIELDS:
        return structure, None
    return structure, TopFields([value for name, value in top if name == "subject"],
                                next((v for name, v in top if name == "references"), None))
