"""Property tests: analyse never raises and stays within its bounds on arbitrary bytes, finds
exactly the tree a generated MIME message was built from, and its blob round-trips."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailnode.imap import mime as imap_mime
from mailnode.mime import (
    Address,
    Envelope,
    MessageStructure,
    Part,
    address,
    analyse,
    sortkeys,
    structure,
)
from mailnode.mime.address import parse_addresses
from mailnode.mime.headers import MAX_FIELDS, decode_words, parse_params, select_fields, text
from tests.mime.test_analyse import check

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that make MIME interesting: delimiters, header syntax, folding, 8-bit, NUL.
_TOKENS = [b"\r\n", b"\n", b"--", b"b", b":", b";", b"=", b'"', b"(", b")", b"<", b">", b"@",
           b",", b" ", b"\t", b"\\", b"\x00", b"\xff", b"Content-Type", b"multipart/mixed",
           b"message/rfc822", b"boundary=b", b"From", b"To", b"*0*=utf-8''%41"]
mimeish = st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=8), max_size=200).map(
    b"".join)


@FAST
@given(st.binary(max_size=2000) | mimeish)
def test_analyse_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


# --- generated MIME trees -------------------------------------------------------------------


@dataclass
class Node:
    ctype: str
    body: bytes = b""
    children: tuple[Node, ...] = ()
    message: Node | None = None


_LEAF_TYPES = ["text/plain", "text/html", "application/pdf", "image/png"]
_BODY = st.lists(st.sampled_from([b"line", b"x y", b"-", b"--", b"=20", b"\xc3\xa9", b"\t"]),
                 max_size=6).map(lambda words: b"\r\n".join(words))


def _trees() -> st.SearchStrategy[Node]:
    leaves = st.builds(Node, st.sampled_from(_LEAF_TYPES), _BODY)
    return st.recursive(leaves, lambda kids: st.one_of(
        st.builds(lambda cs: Node("multipart/mixed", children=tuple(cs)),
                  st.lists(kids, min_size=1, max_size=4)),
        st.builds(lambda m: Node("message/rfc822", message=m), kids)), max_leaves=12)


def render(node: Node, counter: list[int], eol: bytes) -> bytes:
    if node.children:
        counter[0] += 1
        boundary = b"=_bound%d" % counter[0]
        out = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + eol + eol
        out += b"preamble" + eol
        for child in node.children:
            out += b"--" + boundary + eol + render(child, counter, eol) + eol
        return out + b"--" + boundary + b"--" + eol + b"epilogue"
    if node.message is not None:
        return (b"Content-Type: message/rfc822" + eol + eol + b"Subject: inner" + eol
                + render(node.message, counter, eol))
    return b"Content-Type: " + node.ctype.encode() + eol + eol + node.body


def same_tree(raw: bytes, node: Node, part: Part) -> None:
    assert "/".join(part.content_type) == node.ctype
    assert len(part.children) == len(node.children)
    for n, p in zip(node.children, part.children, strict=True):
        same_tree(raw, n, p)
    if node.message is not None:
        assert part.message is not None
        same_tree(raw, node.message, part.message)
    elif not node.children:
        assert raw[part.body_start:part.end] == node.body


@FAST
@given(_trees(), st.sampled_from([b"\r\n", b"\n"]))
def test_generated_trees_are_found_exactly(tree: Node, eol: bytes) -> None:
    raw = b"From: a@b" + eol + b"MIME-Version: 1.0" + eol + render(tree, [0], eol)
    structure, _ = check(raw)
    same_tree(raw, tree, structure.root)
    # Every part's BODY[n.m] is what was put there.
    assert imap_mime.section_bytes(raw, structure, (), None, ()) == raw


# --- encode/decode --------------------------------------------------------------------------

_text = st.binary(max_size=12).map(text)  # what analyse stores: surrogate-escaped bytes
_opt = st.none() | _text
_params = st.lists(st.tuples(_text, _text), max_size=3).map(tuple)
_addr = st.builds(Address, _opt, _opt, _opt, _opt)
_addrs = st.lists(_addr, max_size=3).map(tuple)
_env = st.builds(Envelope, _opt, _opt, _opt, _opt, _addrs, _addrs, _addrs, _addrs, _addrs,
                 _addrs)
_n = st.integers(0, 2**40)


def _make(offsets: list[int], *rest: object) -> Part:
    return Part(*offsets, *rest)  # type: ignore[arg-type]


def _part(children: st.SearchStrategy[tuple[Part, ...]], message: st.SearchStrategy[Part | None]
          ) -> st.SearchStrategy[Part]:
    return st.builds(
        _make, st.lists(_n, min_size=3, max_size=3).map(sorted), st.tuples(_text, _text),
        _params, st.none() | st.tuples(_text, _params), _opt, _opt, _opt, _opt, _opt, _opt,
        _n, children, message, st.none() | _env)


_parts = st.recursive(
    _part(st.just(()), st.none()),
    lambda inner: _part(st.lists(inner, max_size=2).map(tuple), st.none() | inner),
    max_leaves=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_parts)
def test_decode_encode_round_trips(root: Part) -> None:
    structure = MessageStructure(root)
    blob = structure.encode()
    assert blob[0] == 1
    assert MessageStructure.decode(blob) == structure


@FAST
@given(st.binary(max_size=300))
def test_decode_never_accepts_truncated_blobs(raw: bytes) -> None:
    blob = analyse(b"From: a@b\r\nSubject: " + raw + b"\r\n\r\nx").encode()
    for cut in (1, len(blob) // 2, len(blob) - 1):
        try:
            MessageStructure.decode(blob[:cut])
        except ValueError:
            continue
        raise AssertionError("a truncated blob decoded")


_HEADERISH = st.text(alphabet=st.sampled_from(list('()<>@,;:\\".[] \t\r\naZ=?*\'%é\udcff')),
                     max_size=300)


@FAST
@given(_HEADERISH)
def test_value_parsers_take_at_most_one_step_per_character(value: str) -> None:
    addrs, steps = parse_addresses(value)
    assert steps <= len(value)
    groups = sum(1 for a in addrs if a.mailbox is not None and a.host is None)
    ends = sum(1 for a in addrs if a == Address(None, None, None, None))
    assert groups == ends  # group markers always pair
    _, params, steps = parse_params(value)
    assert steps <= len(value) and all(k and k == k.lower() for k, _ in params)
    assert isinstance(decode_words(value), str)


_ATOMS = st.sampled_from(["a", "Zed", "x-y", "b.c", "=?utf-8?q?Caf=C3=A9?=", "o'k", "é", ""])
_GAPS = st.sampled_from(["", " ", "  ", "\t", " \t"])
_NAMES = st.one_of(st.just(""), st.lists(_ATOMS, max_size=3).map(" ".join),
                   st.lists(_ATOMS, max_size=3).map(lambda w: '"' + "  ".join(w) + '"'))
_SIMPLE_MAILBOX = st.one_of(
    st.tuples(_ATOMS, _ATOMS).map(lambda p: f"{p[0]}@{p[1]}"),
    st.tuples(_NAMES, _GAPS, _ATOMS, _ATOMS).map(lambda p: f"{p[0]}{p[1]}<{p[2]}@{p[3]}>"))
_NOISE = st.sampled_from(["(c)", ":", ";", "\\", '"', "<", ">", "@", ",", ".", "[", "\r\n "])


@st.composite
def _near_simple(draw: st.DrawFn) -> str:
    """Lists of the common shapes, sometimes with one stray character or comment: the
    values on both sides of the fast path's border."""
    gaps = st.tuples(_GAPS, _GAPS).map("".join)
    value = ",".join(draw(gaps) + draw(m) + draw(gaps)
                     for m in draw(st.lists(st.just(_SIMPLE_MAILBOX), min_size=1, max_size=3)))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(_NOISE) + value[at:]
    return value


@settings(max_examples=1000, deadline=None)
@given(_near_simple())
def test_simple_address_fast_path_agrees_with_the_tokenizer(value: str) -> None:
    """Common address shapes skip the tokenizer; whatever the fast path accepts must parse
    exactly as the tokenizer parses it."""
    fast = address._simple(value)
    if fast is not None:
        assert fast == address._parse_tokens(value)[0]


def test_simple_address_fast_path_takes_the_common_shapes() -> None:
    for value in ("a@b.c", " <a.b@c> ", 'Joe  Q <j@h.example>', '"Q, Joe" <j@h>',
                  '"" <a@b>', "a@b, Joe <c@d>,", "=?utf-8?q?Caf=C3=A9?= <a@b>"):
        fast = address._simple(value)
        assert fast is not None, value
        assert fast == address._parse_tokens(value)[0]
    for value in ("(c) a@b", "g: a@b;", "<@r:a@b>", '"a\\"b" <a@b>', "a@[1.2.3.4]", "a@b,,c@d",
                  " ", "a@b c"):
        assert address._simple(value) is None, value


# --- the shortcuts of the stored keys and fields agree with the long ways ---------------------

_FIELD_NAMES = st.sampled_from([b"Subject", b"subject", b"SUBJECT", b"References", b"From",
                                b"To", b"Cc", b"Date", b"Message-ID", b"In-Reply-To",
                                b"Content-Type", b"X-Other", b"Subj\xffect", b"Received"])
_VALUES = st.lists(st.sampled_from([b"Re: x", b"[fwd: a]", b"<a@b>", b" <c@d>", b"\r\n <e@f>",
                                    b"\n\tfolded", b"=?utf-8?q?Caf=C3=A9?=", b"\xc3\xa9",
                                    b"\xff", b"a@b", b"", b" "]), max_size=4).map(b"".join)


@st.composite
def _headers(draw: st.DrawFn) -> bytes:
    """Header blocks full of the fields the stored keys read, repeated, folded, odd-cased."""
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    lines = [draw(_FIELD_NAMES) + draw(st.sampled_from([b":", b" :", b":\t"])) + draw(_VALUES)
             for _ in range(draw(st.integers(0, 12)))]
    return eol.join(lines) + eol + eol + b"body" + eol


@FAST
@given(_headers() | mimeish)
def test_keys_from_the_analysers_pass_equal_the_keys_from_their_own_passes(raw: bytes) -> None:
    tree, top = structure.analyse_top(raw)
    assert tree == analyse(raw)
    if top is not None:
        assert sortkeys.stored_keys(raw, tree, top) == sortkeys.stored_keys(raw, tree)


def test_a_header_with_more_fields_than_one_pass_keeps_gives_no_top_fields() -> None:
    raw = b"".join(b"To: a%d@b\r\n" % i for i in range(MAX_FIELDS)) + b"Subject: late\r\n\r\n"
    tree, top = structure.analyse_top(raw)
    assert top is None  # the Subject lies beyond the pass: stored_keys looks for itself
    assert sortkeys.stored_keys(raw, tree).subject_text == sortkeys.texts(["late"])


def _select_fields_by_decoding(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The header lines named (or not) in ``names``, every name decoded and upper-cased."""
    wanted = {n.upper() for n in names}
    out = bytearray()
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out += line
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").upper()
        keep = (name in wanted) != exclude
        if keep:
            out += line
    return bytes(out) + b"\r\n"


@FAST
@given(_headers() | mimeish, st.lists(st.sampled_from(
    ["subject", "FROM", "x-other", "ß", "subj\ufffdect", "References", ""]), max_size=4),
       st.booleans())
def test_select_fields_compares_names_as_decoding_them_would(
        raw: bytes, names: list[str], exclude: bool) -> None:
    assert select_fields(raw, tuple(names), exclude=exclude) == \
        _select_fields_by_decoding(raw, tuple(names), exclude)


@FAST
@given(st.text(max_size=40))
def test_casemap_changes_only_ascii_letters(value: str) -> None:
    table = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
    assert sortkeys.casemap(value) == value.translate(table)
