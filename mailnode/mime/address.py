"""RFC 5322 address lists (with the obsolete forms) into RFC 3501 ENVELOPE addresses.

One pass over the tokens of :mod:`mailnode.mime.lexer`, no recursion, no backtracking:
linear in the length of the value. Groups become RFC 3501 §7.4.2 start/end markers, source
routes ``<@a,@b:user@host>`` the ``adl`` field; encoded words stay raw for the client.
"""

from __future__ import annotations

import re

from mailnode.mime.lexer import ADDRESS, SPECIAL, Lexer, Token
from mailnode.mime.model import Address

MAX_ADDRESSES = 1000
GROUP_END = Address(None, None, None, None)


def _phrase(tokens: list[Token]) -> str | None:
    """Display-name words joined as a reader sees them (one space where the source had any)."""
    out: list[str] = []
    for t in tokens:
        if not t.text:
            continue
        if out and t.space:
            out.append(" ")
        out.append(t.text)
    return "".join(out) or None


def _source(tokens: list[Token]) -> str:
    """The tokens as written (quoted local parts keep their quotes), comments and folding
    whitespace dropped."""
    return "".join(t.source for t in tokens)


def _addr_spec(tokens: list[Token]) -> tuple[str | None, str]:
    """(local part, domain) of ``local@domain``; the domain is ``""`` when absent."""
    for i, t in enumerate(tokens):
        if t.kind == SPECIAL and t.text == "@":
            return _source(tokens[:i]) or None, _source(tokens[i + 1:])
    return _source(tokens) or None, ""


def _angle(tokens: list[Token]) -> tuple[str | None, str | None, str]:
    """(adl, mailbox, host) from the inside of ``<...>``: an optional ``@a,@b:`` route."""
    adl = None
    if tokens and tokens[0].kind == SPECIAL and tokens[0].text == "@":
        for i, t in enumerate(tokens):
            if t.kind == SPECIAL and t.text == ":":
                adl = _source(tokens[:i]) or None
                tokens = tokens[i + 1:]
                break
    mailbox, host = _addr_spec(tokens)
    return adl, mailbox, host


def _finish(tokens: list[Token], comment: str | None, out: list[Address]) -> None:
    """Turn one collected mailbox into an Address (nothing for an empty list element)."""
    words = [t for t in tokens if t.kind != SPECIAL or t.text]
    if not words:
        return
    name: str | None
    lt = next((i for i, t in enumerate(words) if t.kind == SPECIAL and t.text == "<"), None)
    if lt is not None:
        gt = next((i for i in range(lt + 1, len(words))
                   if words[i].kind == SPECIAL and words[i].text == ">"), len(words))
        name = _phrase(words[:lt])
        adl, mailbox, host = _angle(words[lt + 1:gt])
    else:
        name = None
        adl = None
        mailbox, host = _addr_spec(words)
    if name is None and comment:
        name = comment  # obsolete "user@host (Real Name)"
    if mailbox is None and not host and name is None:
        return
    out.append(Address(name, adl, mailbox, host))


# The shape of nearly every address field: ``local@domain``, ``<local@domain>`` or ``Display
# Name <local@domain>`` / ``"Display Name" <local@domain>`` with dot-atoms, and lists of
# those. Matched by one regex without nested quantifiers over the same characters (linear),
# they skip the tokenizer, which costs ~20 times more; anything else (comments, groups,
# routes, escapes, domain literals, encoded words with specials) takes the full path. Tests
# check that both paths agree on every value the fast one accepts. Every repetition is
# possessive (``*+``, ``++``): what follows each can never be what it repeats, so giving
# characters back could not help a match, and would make a long run of blanks quadratic.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]++"
_DOT_ATOM = _ATEXT + r"(?:\." + _ATEXT + ")*+"
ADDR_SPEC = re.compile(_DOT_ATOM + "@" + _DOT_ATOM)
"""``local@domain`` of dot-atoms: the form nearly every address takes (SMTP paths too)."""
_SIMPLE = re.compile(
    r"[ \t]*+(?:"
    r"(?P<bare>" + _DOT_ATOM + "@" + _DOT_ATOM + ")"
    r'|(?:"(?P<quoted>[^"\\\r\n]*+)"|(?P<phrase>' + _ATEXT + r"(?:[ \t]++" + _ATEXT
    + r")*+))?"
    r"[ \t]*+<(?P<angle>" + _DOT_ATOM + "@" + _DOT_ATOM + ")>"
    r")[ \t]*+(?:,|$)")


def _simple(value: str) -> tuple[Address, ...] | None:
    """The addresses of a list of simple mailboxes (see ``_SIMPLE``), else None."""
    out: list[Address] = []
    pos, n = 0, len(value)
    while pos < n:
        m = _SIMPLE.match(value, pos)
        if m is None or len(out) >= MAX_ADDRESSES:
            return None
        spec = m["bare"] or m["angle"]
        local, _, domain = spec.partition("@")
        quoted, phrase = m["quoted"], m["phrase"]
        name = (quoted or None) if quoted is not None else (
            None if phrase is None else " ".join(phrase.split()))
        out.append(Address(name, None, local, domain))
        pos = m.end()
    return tuple(out)


def parse_addresses(value: str) -> tuple[tuple[Address, ...], int]:
    """The addresses in one header value, and the tokenizer's step count (for tests)."""
    simple = _simple(value)
    if simple is not None:
        return simple, len(simple)
    return _parse_tokens(value)


def _parse_tokens(value: str) -> tuple[tuple[Address, ...], int]:
    """``parse_addresses`` through the tokenizer: every form RFC 5322 allows."""
    lexer = Lexer(value, ADDRESS)
    out: list[Address] = []
    current: list[Token] = []
    in_angle = False
    in_group = False
    for t in lexer:
        if len(out) >= MAX_ADDRESSES:
            break
        if t.kind == SPECIAL:
            if t.text == "<":
                in_angle = True
            elif t.text == ">":
                in_angle = False
            elif in_angle:
                pass  # "," and ":" inside <> belong to a source route
            elif t.text == ",":
                _finish(current, t.comment, out)
                current = []
                continue
            elif t.text == ":" and not in_group and not any(
                    c.kind == SPECIAL and c.text in ("<", "@") for c in current):
                out.append(Address(None, None, _phrase(current) or "", None))
                in_group = True
                current = []
                continue
            elif t.text == ";" and in_group:
                _finish(current, t.comment, out)
                out.append(GROUP_END)
                in_group = False
                current = []
                continue
            elif t.text == "" and t.comment is not None:
                _finish(current, t.comment, out)
                current = []
                continue
        current.append(t)
    else:
        _finish(current, None, out)
    if in_group and len(out) < MAX_ADDRESSES:
        out.append(GROUP_END)  # an unterminated group is closed, so markers always pair
    return tuple(out[:MAX_ADDRESSES]), lexer.steps
