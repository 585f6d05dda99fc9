"""Header fields out of a header block, Content-Type style parameters (RFC 2045, RFC 2231),
charsets and RFC 2047 encoded words — each linear in its input and bounded in its output."""

from __future__ import annotations

import binascii
import codecs
import itertools
import re
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from mailnode.mime.lexer import ATOM, PARAMS, QUOTED, SPECIAL, Lexer
from mailnode.mime.model import Params

MAX_VALUE = 16 * 1024  # raw bytes of one field value that are parsed and stored
MAX_FIELDS = 256  # interesting fields looked at per header block
MAX_PARAMS = 64  # parameters kept per Content-Type / Content-Disposition
_UNSAFE_CODECS = frozenset({"punycode", "idna"})  # super-linear decoders
_HEAD, _NAME, _VALUE, _SKIP = range(4)  # parse_params states
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNFOLD = re.compile(rb"\r?\n(?=[ \t])")
_FIELD_END = re.compile(rb"\n(?![ \t])")
_CHARSET_NAME = re.compile(r"[A-Za-z0-9_.:+-]{1,40}")
_SECTION = re.compile(r"(?:(\d{1,4})\*?)?")  # after "name*": "", "0", "0*"
_ATTRIBUTE_CHARS = "!#$&+-.^_`{|}~"  # RFC 2231 attribute-char beyond letters and digits
_TYPE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64})/([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64})\Z")


FieldPattern = tuple[re.Pattern[bytes], re.Pattern[bytes]]


def field_pattern(names: tuple[str, ...]) -> FieldPattern:
    """Patterns finding any of ``names`` (any case) as a field name: at the start of a block,
    and after a line break (a literal first byte lets the regex engine skip ahead fast)."""
    core = rb"(?i)(" + b"|".join(re.escape(n.encode("utf-8", "surrogateescape"))
                                for n in names) + rb")[ \t]*:"
    return re.compile(core), re.compile(rb"(?i)\n" + core[4:])


def fields(raw: bytes, start: int, end: int, pattern: FieldPattern,
           limit: int = MAX_FIELDS) -> tuple[list[tuple[str, bytes]], int]:
    """The (lower-case name, unfolded raw value) of fields matching ``pattern`` in
    ``raw[start:end]``, in order, at most ``limit`` of them, each value cut at
    ``MAX_VALUE`` bytes; and the number of bytes scanned. One regex pass over the block plus
    one bounded scan per field kept: linear."""
    out: list[tuple[str, bytes]] = []
    scanned = 0
    first = pattern[0].match(raw, start, end)
    field_end = _FIELD_END.search
    for m in itertools.chain([first] if first else [], pattern[1].finditer(raw, start, end)):
        if len(out) >= limit:
            break
        begin = m.end()
        stop = min(end, begin + MAX_VALUE)
        e = field_end(raw, begin, stop)
        value_end = e.start() if e is not None else stop
        scanned += value_end - begin
        value = raw[begin:value_end]
        if b"\n" in value:  # folded (most values are not: no regex pass for them)
            value = _UNFOLD.sub(b"", value)
        out.append((m.group(1).decode("utf-8", "surrogateescape").lower(),
                    value.lstrip(b" \t").rstrip(b"\r\n")))
    return out, scanned + (end - start)


STORED_FIELDS = ("FROM", "TO", "CC", "BCC", "SUBJECT", "DATE", "MESSAGE-ID", "IN-REPLY-TO",
                 "REFERENCES", "REPLY-TO", "SENDER", "CONTENT-TYPE", "MIME-VERSION",
                 "PRIORITY", "X-PRIORITY", "IMPORTANCE", "NEWSGROUPS", "LIST-ID",
                 "LIST-UNSUBSCRIBE", "LIST-POST", "CHAT-VERSION", "AUTOCRYPT-SETUP-MESSAGE")
"""The fields whose lines are kept apart at delivery (:func:`stored_fields`): what message
lists ask for. A ``HEADER.FIELDS`` naming only these is answered from them alone."""
STORED_FIELDS_VERSION = 1
"""The first byte of a stored-fields blob; a blob of another version (another field set) is
ignored, so changing ``STORED_FIELDS`` means a new version."""
_STORED = frozenset(STORED_FIELDS)
_STRUCTURE_ROOT = re.compile(rb"\[0,(\d{1,11}),")


def select_fields(header: bytes, names: tuple[str, ...], *, exclude: bool) -> bytes:
    """The header lines whose field name is (or, with ``exclude``, is not) in ``names``: one
    linear pass over the header slice."""
    wanted, wanted_ascii = _wanted(names)
    out = bytearray()
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out += line
            continue
        name = line.split(b":", 1)[0].strip()
        if wanted_ascii is not None and name.isascii():  # as below, without decoding
            keep = (name.upper() in wanted_ascii) != exclude
        else:
            keep = (name.decode("ascii", "replace").upper() in wanted) != exclude
        if keep:
            out += line
    return bytes(out) + b"\r\n"


@lru_cache(maxsize=64)
def _wanted(names: tuple[str, ...]) -> tuple[frozenset[str], frozenset[bytes] | None]:
    """``names`` upper-cased as :func:`select_fields` compares them, and as ASCII bytes when
    they all are (every message stored looks for ``STORED_FIELDS``)."""
    wanted = frozenset(n.upper() for n in names)
    if not all(n.isascii() for n in wanted):
        return wanted, None
    return wanted, frozenset(n.encode("ascii") for n in wanted)


def in_stored_fields(names: tuple[str, ...]) -> bool:
    """Whether ``HEADER.FIELDS (names)`` can be answered from the stored fields: each name
    is, as :func:`select_fields` compares them, one of ``STORED_FIELDS``."""
    return all(n.upper() in _STORED for n in names)


def stored_fields(raw: bytes, structure: bytes | None, version: int) -> bytes | None:
    """What the store keeps beside a message so that a message list's header FETCH neither
    copies the whole header block out nor scans it: the lines of ``STORED_FIELDS`` (with
    their continuation lines, byte for byte, in the message's order) and the blank line,
    after the version byte. Picking any of those fields from it gives exactly what picking
    them from the header block gives. ``structure``: the message's stored structure (format
    ``version``), which says where the header ends (None: no fields are stored either).
    None also where the last kept line has no line end: the appended blank line would make
    it a different line."""
    if structure is None or structure[:1] != bytes([version]):
        return None
    m = _STRUCTURE_ROOT.match(structure, 1)
    if m is None or int(m.group(1)) > len(raw):
        return None
    kept = select_fields(raw[:int(m.group(1))], STORED_FIELDS, exclude=False)
    if len(kept) > 2 and kept[-3:-2] not in (b"\r", b"\n"):
        return None
    return bytes([STORED_FIELDS_VERSION]) + kept


def text(value: bytes) -> str:
    """Bytes as a ``str`` that encodes back to the same bytes (UTF-8, surrogateescape)."""
    return value.decode("utf-8", "surrogateescape")


@lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    if not _CHARSET_NAME.fullmatch(charset):
        return None
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _UNSAFE_CODECS:
        return None
    return info.name


def decode(data: bytes, charset: str | None) -> str:
    """``data`` in ``charset``; an unknown, unsafe or missing charset falls back to UTF-8
    (8-bit content in a us-ascii part is usually UTF-8 in practice). Undecodable bytes become
    U+FFFD, and so do surrogates some codecs (UTF-7) let through: stored strings then hold
    no surrogates but the low ones ``surrogateescape`` makes, which JSON round-trips."""
    name = _codec(charset.strip().lower()) if charset else None
    if name is None or name == "ascii":
        name = "utf-8"
    try:
        out = data.decode(name, "replace")
    except (UnicodeError, LookupError, ValueError):
        out = data.decode("utf-8", "replace")
    return _SURROGATE.sub("\ufffd", out)


def _extended(value: str) -> str:
    """An RFC 2231 ``charset'language'%XX`` value decoded (an unknown charset: UTF-8)."""
    charset: str | None = None
    if value.count("'") >= 2:
        charset, _lang, value = value.split("'", 2)
    return decode(unquote_to_bytes(value.encode("utf-8", "surrogateescape")), charset or None)


def _collapse(base: str, pieces: list[tuple[int, bool, str]]) -> tuple[str, str]:
    """RFC 2231: continuation sections joined in order. With no charset-encoded section the
    result is the plain ``name``; otherwise ``name*`` stays in the ``charset'lang'%XX`` form
    (plain sections percent-encoded into it) so BODYSTRUCTURE hands the client a 7-bit value
    that still names its charset, as Dovecot does."""
    pieces.sort(key=lambda p: p[0])
    if not any(extended for _, extended, _ in pieces):
        return base, "".join(value for _, _, value in pieces)
    out: list[str] = []
    for index, (_, extended, value) in enumerate(pieces):
        if extended:
            out.append(value)
        else:
            out.append(quote(value.encode("utf-8", "surrogateescape"), safe=_ATTRIBUTE_CHARS))
        if index == 0 and not (extended and value.count("'") >= 2):
            out.insert(0, "''")
    return base + "*", "".join(out)


def param_value(params: Params, name: str) -> str | None:
    """The first parameter ``name``, or ``name*`` decoded from its charset."""
    encoded = None
    for key, value in params:
        if key == name:
            return value
        if encoded is None and key == name + "*":
            encoded = value
    return None if encoded is None else _extended(encoded)


def parse_params(value: str) -> tuple[str, Params, int]:
    """(first token, parameters, lexer steps) of ``type; a=b; c*0*=...``: names lower
    case, RFC 2231 sections joined and decoded; at most ``MAX_PARAMS`` parameters. One pass
    over the tokens, which stops once enough parameters are collected."""
    lexer = Lexer(value, PARAMS)
    head: list[str] = []
    raw_params: list[tuple[str, str]] = []
    state = _HEAD
    name_parts: list[str] = []
    words: list[str] = []
    quoted = False
    for t in lexer:
        if t.kind == SPECIAL and t.text == ";":
            if state == _VALUE and name_parts:
                raw_params.append(("".join(name_parts).lower(), "".join(words)))
            if len(raw_params) >= MAX_PARAMS * 4:
                state = _SKIP
                break
            state, name_parts, words, quoted = _NAME, [], [], False
        elif state == _HEAD:
            if t.text:
                head.append(t.source)
        elif state == _NAME:
            if t.kind == ATOM:
                name_parts.append(t.text)
            else:  # "=" starts the value; anything else: not a parameter, skip to ";"
                state = _VALUE if t.text == "=" else _SKIP
        elif state == _VALUE:
            if t.kind == QUOTED and not words:
                quoted = True
                words.append(t.text)
            elif not quoted:
                words.append((" " if t.space and words else "") + t.source)
    if state == _VALUE and name_parts:
        raw_params.append(("".join(name_parts).lower(), "".join(words)))
    # RFC 2231 continuations: sections are gathered per base name at its first position.
    result: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for name, val in raw_params:
        base, star, rest = name.partition("*")
        m = _SECTION.fullmatch(rest) if star else None
        if m is None or not base:
            result.append((name, val))
            continue
        if base not in sections:
            sections[base] = []
            first[base] = len(result)
            result.append((base, ""))
        number = int(m.group(1)) if m.group(1) else 0
        sections[base].append((number, name.endswith("*"), val))
    # A plain parameter repeating a name that has RFC 2231 sections loses (RFC 2231 §4).
    result = [(n, v) for i, (n, v) in enumerate(result) if n not in first or first[n] == i]
    for i, (name, _) in enumerate(result):
        if name in sections:
            result[i] = _collapse(name, sections[name])
    return " ".join(head), tuple(result[:MAX_PARAMS]), lexer.steps


def content_type(value: str | None, default: tuple[str, str]
                 ) -> tuple[tuple[str, str], Params, bool]:
    """(type, params, valid): a missing or malformed type gives the default (RFC 2045 §5.2)."""
    if value is None:
        return default, (), False
    head, params, _ = parse_params(value)
    m = _TYPE.match(head.replace(" ", ""))
    if m is None:
        return default, params, False
    return (m.group(1).lower(), m.group(2).lower()), params, True


# --- RFC 2047 encoded words (for SEARCH; ENVELOPE leaves them to the client) ---------------

_WORD = re.compile(r"=\?([^?\s*]{1,40})(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t\r\n]+(?==\?)")


def _word(m: re.Match[str]) -> str:
    charset, kind, payload = m.group(1), m.group(2).upper(), m.group(3)
    data = payload.encode("utf-8", "surrogateescape")
    try:
        if kind == "B":
            data = binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        else:
            data = binascii.a2b_qp(data.replace(b"_", b" "), header=True)
    except (binascii.Error, ValueError):
        return m.group()
    return decode(data, charset)


def decode_words(value: str) -> str:
    """Encoded words decoded in one regex pass (whitespace between two of them dropped)."""
    if "=?" not in value:
        return value
    return _WORD.sub(_word, _BETWEEN_WORDS.sub("", value))
