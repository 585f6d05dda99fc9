"""Section extraction, partials, header field selection, ENVELOPE and BODYSTRUCTURE."""

from __future__ import annotations

from mailnode.imap import commands as c
from mailnode.imap import mime
from mailnode.imap.fetch import body_section
from mailnode.mime import analyse

MULTIPART = (
    b"From: a@example.mailnode\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"first part\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"From: b@example.mailnode\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XX\r\n"
    b'Content-Type: application/octet-stream; name="x.bin"\r\n'
    b"Content-Disposition: attachment; filename=x.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--XX--\r\n"
    b"epilogue\r\n"
)

SIMPLE = (b"From: Alice <alice@example.mailnode>\r\nSubject: hi\r\n"
          b"X-Long: one\r\n two\r\n\r\nbody line\r\nsecond\r\n")


def section(raw: bytes, parts: tuple[int, ...] = (), text: str | None = None,
            fields: tuple[str, ...] = (), partial: tuple[int, int] | None = None) -> bytes:
    attr = c.FetchAttr("BODY", c.Section(parts, text, fields), partial=partial)
    return body_section(raw, attr)


def test_whole_header_text() -> None:
    assert section(SIMPLE) == SIMPLE
    assert section(SIMPLE, text="HEADER") == SIMPLE[:SIMPLE.index(b"\r\n\r\n") + 4]
    assert section(SIMPLE, text="TEXT") == b"body line\r\nsecond\r\n"
    assert section(SIMPLE, (1,)) == b"body line\r\nsecond\r\n"


def test_header_fields_keep_folding_and_end_with_blank_line() -> None:
    assert section(SIMPLE, text="HEADER.FIELDS", fields=("X-LONG", "SUBJECT")) == \
        b"Subject: hi\r\nX-Long: one\r\n two\r\n\r\n"
    assert section(SIMPLE, text="HEADER.FIELDS.NOT", fields=("X-LONG", "SUBJECT")) == \
        b"From: Alice <alice@example.mailnode>\r\n\r\n"
    assert section(SIMPLE, text="HEADER.FIELDS", fields=("NOPE",)) == b"\r\n"


def test_partial() -> None:
    assert section(SIMPLE, partial=(0, 4)) == b"From"
    assert section(SIMPLE, text="TEXT", partial=(5, 4)) == b"line"
    assert section(SIMPLE, partial=(10_000, 5)) == b""


def test_multipart_parts() -> None:
    assert section(MULTIPART, (1,)) == b"first part"
    assert section(MULTIPART, (1,), "MIME") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert section(MULTIPART, (2, 1)) == b"inner body"
    assert section(MULTIPART, (2,), "HEADER") == \
        b"Subject: inner\r\nFrom: b@example.mailnode\r\n\r\n"
    assert section(MULTIPART, (2,), "TEXT") == b"inner body"
    assert section(MULTIPART, (3,)) == b"AAEC"
    assert section(MULTIPART, (4,)) == b""
    assert section(MULTIPART, (1, 5)) == b""


def test_bodystructure_of_multipart() -> None:
    root = analyse(MULTIPART).root
    bs = mime.bodystructure(root, extended=True)
    assert bs.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 10 0')
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT"' in bs
    assert b'("ATTACHMENT" ("FILENAME" "x.bin"))' in bs
    assert bs.endswith(b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)')
    body = mime.bodystructure(root, extended=False)
    assert body.endswith(b' "MIXED")') and b"ATTACHMENT" not in body


def test_bodystructure_defaults_for_plain_message() -> None:
    bs = mime.bodystructure(analyse(SIMPLE).root, extended=False)
    assert bs == b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 19 2)'


def test_envelope() -> None:
    env = mime.envelope(analyse(SIMPLE))
    assert env == (b'(NIL "hi" (("Alice" NIL "alice" "example.mailnode")) '
                   b'(("Alice" NIL "alice" "example.mailnode")) '
                   b'(("Alice" NIL "alice" "example.mailnode")) NIL NIL NIL NIL NIL)')


def test_message_without_header_end() -> None:
    assert section(b"Subject: x\r\n", text="TEXT") == b""
    assert mime.bodystructure(analyse(b"").root, extended=True).startswith(b'("TEXT" "PLAIN"')
