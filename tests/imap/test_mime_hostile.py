"""Hostile messages through FETCH and SEARCH: every item answers, well formed, from one
analysed structure; SEARCH decodes only the text parts the structure finds, within a budget."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from mailnode.imap import commands as c
from mailnode.imap import search
from mailnode.imap.fetch import render
from mailnode.mime import analyse
from mailnode.store.api import MessageMeta
from tests.imap.conftest import Dialog
from tests.imap.test_dialogues import append
from tests.mime.corpus import CLASSES
from tests.mime.imapsyntax import check_bodystructure, check_envelope, read

META = MessageMeta(1, frozenset(), datetime(2024, 1, 1, tzinfo=UTC), 0)
ITEMS = (c.FetchAttr("ENVELOPE"), c.FetchAttr("BODY"), c.FetchAttr("BODYSTRUCTURE"),
         c.FetchAttr("BODY", c.Section((1,))), c.FetchAttr("BODY", c.Section((2, 1), "MIME")),
         c.FetchAttr("BODY", c.Section((1,), "HEADER")),
         c.FetchAttr("BODY", c.Section((), "HEADER.FIELDS", ("FROM", "TO"))),
         c.FetchAttr("BODY", c.Section((), "TEXT"), partial=(0, 100)))
KEYS: tuple[c.SearchKey, ...] = (
    c.SearchText("needle", body_only=True), c.SearchText("needle", body_only=False),
    c.SearchHeader("to", "b@"), c.SearchHeader("x-nope", ""),
    c.SearchDate("on", datetime(2024, 1, 1, tzinfo=UTC), sent=True))


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_fetch_items_render_well_formed(name: str) -> None:
    raw = CLASSES[name](60_000)
    structure = analyse(raw)
    out = render(META, ITEMS, raw, structure)
    items = read(out)
    assert isinstance(items, list) and len(items) == 2 * len(ITEMS)
    check_envelope(render(META, ITEMS[:1], raw, structure)[len(b"(ENVELOPE "):-1])
    check_bodystructure(render(META, ITEMS[2:3], raw, structure)[len(b"(BODYSTRUCTURE "):-1],
                        extended=True)
    # Sections without a structure at hand are served by analysing once.
    assert render(META, ITEMS[3:], raw, None) == render(META, ITEMS[3:], raw, structure)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_search_keys_answer_on_hostile_messages(name: str) -> None:
    raw = CLASSES[name](60_000)
    structure = analyse(raw)
    for key in KEYS:
        with_structure = search.matches(key, search.Candidate(1, META, 1, 1, raw, structure))
        assert with_structure == search.matches(key, search.Candidate(1, META, 1, 1, raw))


def test_search_decodes_text_parts_found_by_the_structure() -> None:
    encoded = base64.b64encode("Grüße aus Köln, needle\n".encode()).decode()
    raw = ("From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           f"{encoded}\r\n--b\r\nContent-Type: application/octet-stream\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n"
           f"{base64.b64encode(b'secret haystack').decode()}\r\n--b--\r\n").encode()
    cand = search.Candidate(1, META, 1, 1, raw)
    assert search.matches(c.SearchText("köln", body_only=True), cand)
    for tail in (b"end xy", b"end xyz", b"end wxyz"):  # every padding length, and none
        padded = raw.replace(encoded.encode(), base64.b64encode(tail) + b"\r\n=\r\n")
        assert search.matches(c.SearchText(tail.decode()[-2:], body_only=True),
                              search.Candidate(1, META, 1, 1, padded))
    assert not search.matches(c.SearchText("haystack", body_only=True), cand)  # not text
    assert cand.structure is not None  # analysed once and kept for further keys


def test_search_decoded_text_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "MAX_DECODED", 1000)
    part = base64.b64encode(b"x" * 5000 + b"needle").decode()
    raw = ("Content-Type: multipart/mixed; boundary=b\r\n\r\n" + (
        "--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{part}\r\n") * 3 + "--b--\r\n").encode()
    cand = search.Candidate(1, META, 1, 1, raw)
    body_text = cand.body_text
    raw_body = raw[cand.tree.body_start:cand.tree.end]
    assert len(body_text) <= len(raw_body) + 1000 + 3
    assert not search.matches(c.SearchText("needle", body_only=True), cand)


def test_header_search_reads_folded_and_encoded_values() -> None:
    raw = (b"Subject: =?utf-8?q?Caf=C3=A9?=\r\n =?utf-8?b?w6k=?=\r\nX-Tag: one\r\nX-Tag: two\r\n"
           b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nbody")
    cand = search.Candidate(1, META, 1, 1, raw)
    assert search.matches(c.SearchHeader("subject", "caféé"), cand)
    assert search.matches(c.SearchHeader("X-TAG", "two"), cand)
    assert not search.matches(c.SearchHeader("x-tag", "three"), cand)
    assert search.matches(c.SearchDate("on", datetime(2024, 1, 1, tzinfo=UTC), sent=True), cand)


async def test_hostile_mailbox_stays_readable(dialog: Dialog) -> None:
    """Every hostile message in one mailbox: FETCH and SEARCH over all of them answer OK."""
    await dialog.login()
    names = sorted(CLASSES)
    for name in names:
        assert b"OK" in await append(dialog, CLASSES[name](30_000))
    await dialog.send(b"s SELECT INBOX\r\n")
    out = await dialog.send(b"f FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY.PEEK[1.MIME] "
                            b"BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert out.endswith(b"f OK FETCH completed\r\n")
    assert out.count(b" FETCH (") == len(names)
    for key in (b"TEXT needle", b"BODY needle", b"FROM a@", b"SENTSINCE 1-Jan-2000"):
        out = await dialog.send(b"q SEARCH " + key + b"\r\n")
        assert out.endswith(b"q OK SEARCH completed\r\n"), key


def test_a_given_structure_is_never_reanalysed(monkeypatch: pytest.MonkeyPatch) -> None:
    """FETCH and SEARCH work from the stored structure: with one given, nothing is parsed."""
    import mailnode.imap.fetch as fetch_module
    import mailnode.imap.mime as mime_module

    raw = CLASSES["many_parts"](20_000)
    structure = analyse(raw)

    def refuse(raw: bytes) -> None:
        raise AssertionError("analysed again")

    for module in (fetch_module, mime_module, search):
        monkeypatch.setattr(module, "analyse", refuse)
    assert render(META, ITEMS, raw, structure).startswith(b"(ENVELOPE (")
    for key in KEYS:
        search.matches(key, search.Candidate(1, META, 1, 1, raw, structure))
