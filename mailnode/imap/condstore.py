"""CONDSTORE and QRESYNC (RFC 7162): the grammar of their command modifiers.

The parser calls these at the points where the extensions extend RFC 3501's commands, so the
extension's syntax lives in one place; the session's handlers act on the fields they fill in
(``Select.condstore/qresync``, ``Fetch.changedsince/vanished``, ``StoreCmd.unchangedsince``,
``SearchModseq``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap.sequences import SequenceSet

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader

MAX_MODSEQ = 2**63 - 1
"""``mod-sequence-value`` is at most 2^63-1 (RFC 7162 §7)."""


def modseq(r: _Reader, *, zero: bool = True) -> int:
    """A ``mod-sequence-valzer`` (or ``mod-sequence-value`` without ``zero``)."""
    raw = r._run(lambda ch: 0x30 <= ch <= 0x39)
    if not raw or len(raw) > 19 or int(raw) > MAX_MODSEQ or (not zero and int(raw) == 0):
        raise r.error("Expected a mod-sequence value")
    return int(raw)


def select_params(r: _Reader) -> tuple[bool, c.QresyncParams | None]:
    """``(CONDSTORE)`` / ``(QRESYNC (...))`` after SELECT/EXAMINE's mailbox."""
    r.expect(b"(")
    condstore = False
    qresync: c.QresyncParams | None = None
    while True:
        word = r.keyword()
        if word == "CONDSTORE" and not condstore:
            condstore = True
        elif word == "QRESYNC" and qresync is None:
            r.sp()
            qresync = _qresync(r)
        else:
            raise r.error(f"Unknown or repeated SELECT parameter {word}")
        if r.take(b")"):
            return condstore, qresync
        r.sp()


def _qresync(r: _Reader) -> c.QresyncParams:
    r.expect(b"(")
    uidvalidity = r.number()
    if uidvalidity == 0:
        raise r.error("UIDVALIDITY must be positive")
    r.sp()
    since = modseq(r, zero=False)
    known: SequenceSet | None = None
    if r.take(b" "):
        if r.peek() != 0x28:
            known = r.seqset()
            if any(low is None or high is None for low, high in known.ranges):
                raise r.error("Known UIDs cannot contain *")
            r.take(b" ")
        if r.peek() == 0x28:  # seq-match-data: a hint we do not need (tombstones are kept)
            r.expect(b"(")
            r.seqset()
            r.sp()
            r.seqset()
            r.expect(b")")
    r.expect(b")")
    return c.QresyncParams(uidvalidity, since, known)


def fetch_modifiers(r: _Reader) -> tuple[int | None, bool]:
    """``(CHANGEDSINCE n [VANISHED])`` after FETCH's items, in any order."""
    r.expect(b"(")
    changedsince: int | None = None
    vanished = False
    while True:
        word = r.keyword()
        if word == "CHANGEDSINCE" and changedsince is None:
            r.sp()
            changedsince = modseq(r)
        elif word == "VANISHED" and not vanished:
            vanished = True
        else:
            raise r.error(f"Unknown or repeated FETCH modifier {word}")
        if r.take(b")"):
            break
        r.sp()
    if vanished and changedsince is None:
        raise r.error("VANISHED needs CHANGEDSINCE")
    return changedsince, vanished


def store_modifier(r: _Reader) -> int:
    """``(UNCHANGEDSINCE n)`` before STORE's item, with the space after it."""
    r.expect(b"(")
    if r.keyword() != "UNCHANGEDSINCE":
        raise r.error("Unknown STORE modifier")
    r.sp()
    value = modseq(r)
    r.expect(b")")
    r.sp()
    return value


def search_modseq(r: _Reader) -> c.SearchModseq:
    """``MODSEQ [entry-name entry-type] n`` (the entry names a flag; modseqs here are per
    message, so any entry is answered by the message's modseq, which is at least as high)."""
    r.sp()
    if r.peek() == 0x22:
        r.quoted()
        r.sp()
        if r.keyword() not in ("PRIV", "SHARED", "ALL"):
            raise r.error("Expected priv, shared or all")
        r.sp()
    return c.SearchModseq(modseq(r))


def uses_modseq(key: c.SearchKey) -> bool:
    """Whether a search program has a MODSEQ key (the result then carries ``(MODSEQ n)``)."""
    return any(isinstance(k, c.SearchModseq) for k in c.search_nodes(key))
