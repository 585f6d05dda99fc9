"""analyse() on hostile and ordinary messages: it returns, its bounds hold, its work is
linear (counted, not timed), its blob round-trips and what IMAP renders from it is well
formed."""

from __future__ import annotations

import pytest

from mailnode.imap import mime as imap_mime
from mailnode.mime import MAX_DEPTH, MAX_PARTS, Address, MessageStructure, Part, analyse
from mailnode.mime.address import parse_addresses
from mailnode.mime.headers import (
    MAX_PARAMS,
    MAX_VALUE,
    decode,
    decode_words,
    param_value,
    parse_params,
)
from mailnode.mime.structure import Analyser
from tests.mime.corpus import CLASSES, HEAD
from tests.mime.imapsyntax import check_bodystructure, check_envelope


def walk(part: Part, depth: int = 1) -> list[tuple[Part, int]]:
    out = [(part, depth)]
    for child in part.children:
        out += walk(child, depth + 1)
    if part.message is not None:
        out += walk(part.message, depth + 1)
    return out


def check(raw: bytes) -> tuple[MessageStructure, Analyser]:
    """Everything that must hold for any input; run without analyse()'s safety net."""
    analyser = Analyser(raw)
    structure = analyser.run()
    parts = walk(structure.root)
    assert len(parts) <= MAX_PARTS
    assert max(d for _, d in parts) <= MAX_DEPTH + 1
    for part, _ in parts:
        assert 0 <= part.header_start <= part.body_start <= part.end <= len(raw)
        previous = part.body_start
        for child in part.children:
            assert previous <= child.header_start and child.end <= part.end
            previous = child.end
        if part.message is not None:
            assert part.message.header_start == part.body_start
            assert part.message.end == part.end
    assert MessageStructure.decode(structure.encode()) == structure
    check_envelope(imap_mime.envelope(structure))
    for extended in (True, False):
        check_bodystructure(imap_mime.bodystructure(structure.root, extended), extended)
    return structure, analyser


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_hostile_class_is_analysed_within_bounds_and_linear_work(name: str) -> None:
    small, large = CLASSES[name](50_000), CLASSES[name](200_000)
    for raw in (small, large):
        structure, analyser = check(raw)
        # Linear work, counted: the scanner covers each byte once; header blocks are looked
        # at again by the field finder and the value extractor. The value lexers take at
        # most one step per character.
        assert analyser.scanned <= 3 * len(raw) + 100
        assert analyser.steps <= len(raw)
        assert analyse(raw) == structure


def test_deep_comment_nesting_100k_does_not_recurse() -> None:
    addrs, steps = parse_addresses("(" * 100_000 + "a@b")
    assert addrs == () and steps <= 100_003
    addrs, steps = parse_addresses("(" * 100_000 + ")" * 100_000 + " a@b")
    assert addrs == (Address(None, None, "a", "b"),)
    assert steps <= 200_004
    structure, _ = check(b"From: " + b"(" * 100_000 + b"\r\nSubject: s\r\n\r\nbody\r\n")
    env = structure.root.envelope
    assert env is not None and env.subject == "s" and env.from_ == ()


def test_5000_parts_are_cut_at_the_part_budget() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i
                     for i in range(5000))
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\nepi"
    structure, analyser = check(raw)
    root = structure.root
    assert len(root.children) == MAX_PARTS - 1 and analyser.parts == MAX_PARTS
    assert root.end == len(raw)  # the parts left out stay inside the multipart's body
    assert imap_mime.section_bytes(raw, structure, (511,), None, ()) == b"part 510"
    assert imap_mime.section_bytes(raw, structure, (600,), None, ()) == b""


def test_depth_1000_nesting_becomes_opaque_at_the_depth_bound() -> None:
    depth = 1000
    raw = CLASSES["deep_multipart"](64 * depth)
    structure, _ = check(raw)
    node = structure.root
    for _ in range(MAX_DEPTH):
        assert node.content_type == ("multipart", "mixed") and len(node.children) == 1
        node = node.children[0]
    assert node.content_type == ("application", "octet-stream") and not node.children
    assert raw[node.body_start:node.end].startswith(b"--b%d\r\n" % MAX_DEPTH)
    assert structure.root.end == len(raw)


def test_message_rfc822_nesting_is_bounded() -> None:
    structure, _ = check(CLASSES["deep_message"](100_000))
    depths = [d for _, d in walk(structure.root)]
    assert max(depths) == MAX_DEPTH + 1
    deepest = next(p for p, d in walk(structure.root) if d == MAX_DEPTH + 1)
    assert deepest.content_type == ("application", "octet-stream")


def test_100k_header_fields() -> None:
    raw = HEAD + b"X-Spam: v\r\n" * 100_000 + b"Subject: late\r\n\r\nbody\r\n"
    structure, _ = check(raw)
    env = structure.root.envelope
    assert env is not None and env.subject == "hostile"  # the first Subject counts
    raw = b"To: a@b\r\n" * 100_000 + b"\r\n"
    structure, _ = check(raw)
    assert structure.root.envelope is not None
    assert 0 < len(structure.root.envelope.to) <= 32


def test_1mb_of_parameters_is_bounded() -> None:
    raw = (HEAD + b"Content-Type: text/plain; charset=utf-8" + b"; p=v" * 200_000
           + b"\r\n\r\nbody\r\n")
    structure, _ = check(raw)
    assert structure.root.params[0] == ("charset", "utf-8")
    assert len(structure.root.params) <= MAX_PARAMS
    _, params, steps = parse_params("text/plain" + "; p=v" * 200_000)
    assert len(params) == MAX_PARAMS and steps <= 1_000_010


def test_10mb_single_header_line() -> None:
    raw = b"Subject: " + b"x" * 10_000_000 + b"\r\n\r\nbody\r\n"
    structure, analyser = check(raw)
    env = structure.root.envelope
    assert env is not None and env.subject is not None
    assert env.subject == "x" * len(env.subject) and MAX_VALUE - 2 <= len(env.subject) <= MAX_VALUE
    assert raw[structure.root.body_start:] == b"body\r\n"
    assert analyser.scanned <= 3 * len(raw) + 100


def test_unbalanced_quotes_and_brackets() -> None:
    for value in ['"never closed <a@b>', "<a@b", "a@[1.2.3.4", "a@b>", "\\", '"\\', "(((",
                  ")))a@b", "<<<<>>>>", ":;:;:;", "@@@", ",,,"]:
        addrs, _ = parse_addresses(value)
        assert all(isinstance(a, Address) for a in addrs)
        check(b"To: " + value.encode() + b"\r\n\r\n")
    assert parse_addresses("<a@b")[0] == (Address(None, None, "a", "b"),)


def test_group_syntax_renders_rfc3501_markers() -> None:
    raw = (b'To: Friends: a@b, "C D" <c@d>;, e@f\r\nCc: Undisclosed recipients:;\r\n'
           b"\r\nbody\r\n")
    structure, _ = check(raw)
    env = imap_mime.envelope(structure)
    assert b'((NIL NIL "Friends" NIL)(NIL NIL "a" "b")("C D" NIL "c" "d")(NIL NIL NIL NIL)'\
           b'(NIL NIL "e" "f"))' in env
    assert b'((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL))' in env
    # An unterminated group is still closed, so clients always see paired markers.
    addrs, _ = parse_addresses("g: a@b")
    assert addrs[-1] == Address(None, None, None, None)


def test_source_routes_and_obsolete_forms() -> None:
    addrs, _ = parse_addresses("Joe <@r1.example,@r2.example:joe@h.example>, "
                               "x@y (Comment Name), J.R. Tolkien <t@x>, bare")
    assert addrs == (Address("Joe", "@r1.example,@r2.example", "joe", "h.example"),
                     Address("Comment Name", None, "x", "y"),
                     Address("J.R. Tolkien", None, "t", "x"),
                     Address(None, None, "bare", ""))
    addrs, _ = parse_addresses('"quoted \\"name\\"" <"odd local"@[10.0.0.1]>')
    assert addrs == (Address('quoted "name"', None, '"odd local"', "[10.0.0.1]"),)
    addrs, _ = parse_addresses("=?utf-8?q?Caf=C3=A9?= <a@b>")
    assert addrs[0].name == "=?utf-8?q?Caf=C3=A9?="  # left for the client to decode


def test_rfc2231_continuations_and_charsets() -> None:
    _, params, _ = parse_params("attachment; filename*1=sum; filename*0*=utf-8''r%C3%A9;"
                                " filename*2*=%C3%A9.pdf; filename=plain.pdf; size=3")
    # Sections joined in order; a charset-encoded value keeps its charset (the plain "sum"
    # section percent-encoded into it), and decodes on lookup.
    assert params == (("filename*", "utf-8''r%C3%A9sum%C3%A9.pdf"), ("size", "3"))
    assert param_value(params, "filename") == "résumé.pdf"
    _, params, _ = parse_params("text/plain; name*=iso-8859-1'de'%E4rger; x*=bogus'en'%41")
    assert params == (("name*", "iso-8859-1'de'%E4rger"), ("x*", "bogus'en'%41"))
    assert (param_value(params, "name"), param_value(params, "x")) == ("ärger", "A")
    _, params, _ = parse_params("text/plain; title*=punycode''abc-")
    assert param_value(params, "title") == "abc-"  # a super-linear codec is never used
    _, params, _ = parse_params('a/b; t*1*=%41; t*0="x y"; u*0="a"; u*1="b c"')
    assert params == (("t*", "''x%20y%41"), ("u", "ab c"))


def test_disposition_and_rfc2231_render_byte_exact() -> None:
    raw = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment;"
           b" filename*=utf-8''%E2%82%AC.txt\r\n\r\nx")
    structure, _ = check(raw)
    assert structure.root.disposition == ("attachment", (("filename*", "utf-8''%E2%82%AC.txt"),))
    bs = imap_mime.bodystructure(structure.root, extended=True)
    assert b'("ATTACHMENT" ("FILENAME*" "utf-8\'\'%E2%82%AC.txt"))' in bs


def test_boundary_trouble_gives_a_flat_or_empty_structure() -> None:
    no_boundary = HEAD + b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n"
    structure, _ = check(no_boundary)
    assert structure.root.content_type == ("text", "plain") and not structure.root.children
    never_used = HEAD + b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nno parts\r\n"
    structure, _ = check(never_used)
    assert structure.root.content_type == ("multipart", "mixed") and not structure.root.children
    assert b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0)' in \
        imap_mime.bodystructure(structure.root, extended=False)
    unclosed = HEAD + b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\r\nlast"
    structure, _ = check(unclosed)
    assert imap_mime.section_bytes(unclosed, structure, (1,), None, ()) == b"last"
    huge = HEAD + b"Content-Type: multipart/mixed; boundary=" + b"z" * 1000 + b"\r\n\r\nx"
    assert check(huge)[0].root.content_type == ("text", "plain")


def test_an_outer_boundary_ends_inner_parts() -> None:
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: multipart/alternative; boundary=bb\r\n\r\n--bb\r\n\r\ninner\r\n"
           b"--b\r\n\r\nsecond outer\r\n--b--\r\n")
    structure, _ = check(raw)
    first, second = structure.root.children
    assert [raw[c.body_start:c.end] for c in first.children] == [b"inner"]
    assert raw[second.body_start:second.end] == b"second outer"


def test_digest_children_default_to_message_rfc822() -> None:
    raw = (HEAD + b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
           b"Subject: one\r\n\r\nfirst\r\n--d\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
           b"--d--\r\n")
    structure, _ = check(raw)
    one, two = structure.root.children
    assert one.content_type == ("message", "rfc822") and one.message is not None
    assert one.message.envelope is not None and one.message.envelope.subject == "one"
    assert two.content_type == ("text", "plain") and two.params == ()


def test_duplicates_garbage_nuls_lf_only_no_separator() -> None:
    raw = (b"Subject: first\r\nSubject: second\r\nContent-Type: text/html\r\n"
           b"Content-Type: image/png\r\nX-Bin: \x00\xff\x80\r\n\r\nbody")
    structure, _ = check(raw)
    assert structure.root.content_type == ("text", "html")
    assert structure.root.envelope is not None and structure.root.envelope.subject == "first"
    raw = b"From: \xff\x00 <a@b>\r\nSubject: caf\xc3\xa9 \xff\r\n\r\nbody"
    env = imap_mime.envelope(check(raw)[0])
    assert b"{7}\r\ncaf\xc3\xa9 \xff" in env
    assert b'{2}\r\n\xff\x00 NIL "a" "b"' in env
    raw = b"From: a@b\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b--\n"
    structure, _ = check(raw)
    assert imap_mime.section_bytes(raw, structure, (1,), None, ()) == b"one"
    raw = b"Subject: no body separator\r\nX: y\r\n"
    structure, _ = check(raw)
    assert structure.root.body_start == structure.root.end == len(raw)


@pytest.mark.parametrize("blob", [
    b"", b"\x02[]", b"\x01", b"\x01not json", b"\x01[1,2,3]", b"\x01" + b"[" * 100_000,
    b'\x01[0,5,1,"text","plain",[],null,null,null,null,null,null,null,0,[],null,null]',
    b'\x01[0,0,1,"text","plain",[["a"]],null,null,null,null,null,null,null,0,[],null,null]',
    b'\x01[0,0,1,"text","plain",[],null,null,null,null,null,null,null,true,[],null,null]',
    b'\x01[0,0,1,"text",7,[],null,null,null,null,null,null,null,0,[],null,null]',
    b'\x01[0,0,1,"text","plain",[],null,null,null,null,null,null,null,0,[],null,[1]]',
    b'\x01[0,0,1,"text","plain",[],null,null,null,null,null,null,null,0,{},null,null]',
    b"\x01\xff\xfe",
])
def test_decode_refuses_garbage(blob: bytes) -> None:
    with pytest.raises(ValueError):
        MessageStructure.decode(blob)


def test_encoded_words_and_charsets_for_search() -> None:
    assert decode_words("=?utf-8?q?Caf=C3=A9?= =?UTF-8?B?w6k=?= x") == "Caféé x"
    assert decode_words("=?x-unknown?q?a=41?=") == "aA"
    assert decode_words("=?utf-8?b?!!!?= x") == " x"  # undecodable base64: nothing
    assert decode(b"\xe4", "iso-8859-1") == "ä"
    assert decode(b"abc-", "punycode") == "abc-"  # refused: punycode decoding is quadratic
    assert decode(b"x", "base64_codec") == "x"  # not a text encoding
    assert decode(b"+2D0-", "utf-7") == "\ufffd"  # a lone surrogate from UTF-7


def test_stored_values_are_bounded_so_the_blob_stays_small() -> None:
    from mailnode.mime.structure import MAX_STORED

    part = (b"--b\r\nContent-Type: text/plain; name=\"" + b"\xff" * 4000 + b"\"\r\n"
            b"Content-Description: " + b"d" * 15000 + b"\r\n\r\nx\r\n")
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * 400
           + b"--b--\r\n")
    structure, _ = check(raw)
    root = structure.root
    assert root.envelope is not None and root.envelope.subject == "hostile"
    assert root.params == (("boundary", "b"),)  # the top level is charged first
    assert len(root.children) == 400  # the tree is whole; only values are left out
    kept = sum(len(c.description or "") + sum(len(v) for _, v in c.params)
               for c in root.children)
    assert 0 < kept <= MAX_STORED
    assert len(structure.encode()) <= 6 * MAX_STORED + 300 * MAX_PARTS
