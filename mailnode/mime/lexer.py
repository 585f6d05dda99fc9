"""A linear, iterative tokenizer for structured header values (RFC 5322 / RFC 2045).

Why not the stdlib: its address parser recurses once per nested comment (``((((...``
raises RecursionError) and has super-linear paths. Here every loop iteration consumes at
least one character, comments are skipped with a depth counter (no recursion; unbalanced
parentheses simply run to the end of the value), and quoted strings, domain literals and
comments that never close end at the end of the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

# Kinds of token.
ATOM, QUOTED, LITERAL, SPECIAL = "atom", "quoted", "literal", "special"

_COMMENT = re.compile(r"[^()\\]+|\\.|[()\\]", re.DOTALL)
_WS = r"(?P<ws>[ \t\r\n]+)"
_QS = r'(?P<qs>"[^"\\]*(?:\\.[^"\\]*)*"?)'
_DL = r"(?P<dl>\[[^\]\\]*(?:\\.[^\]\\]*)*\]?)"
_PAREN = r"(?P<paren>[()])"
ADDRESS = re.compile(_WS + "|" + _QS + "|" + _DL + "|" + _PAREN
                     + r'|(?P<atom>[^ \t\r\n()<>@,;:\\".\[\]]+)|(?P<sp>.)', re.DOTALL)
PARAMS = re.compile(_WS + "|" + _QS + "|" + _PAREN + r'|(?P<atom>[^ \t\r\n()";=]+)|(?P<sp>.)',
                    re.DOTALL)
_UNQUOTE = re.compile(r"\\(.)", re.DOTALL)
MAX_COMMENT_TEXT = 256


class Token(NamedTuple):
    """``text`` is the decoded value (quotes and escapes removed); ``source`` the original;
    ``space`` says whether whitespace or a comment preceded it. (A NamedTuple: cheap to make,
    and values can hold many tokens.)"""

    kind: str
    text: str
    source: str
    space: bool
    comment: str | None = None  # the last top-level comment seen right before it


def unquote(quoted: str) -> str:
    """The content of a quoted string or domain literal, quoted-pairs resolved."""
    inner = quoted[1:]
    if inner.endswith('"') and not _ends_escaped(inner[:-1]):
        inner = inner[:-1]
    return _UNQUOTE.sub(r"\1", inner)


def _ends_escaped(text: str) -> bool:
    n = len(text) - len(text.rstrip("\\"))
    return n % 2 == 1


class Lexer:
    """Iterates over the tokens of ``value`` (comments dropped), lazily, so a caller that has
    all it may keep stops early. ``steps`` counts loop iterations; it never exceeds
    ``len(value)`` (each consumes at least one character): tests use it to check linearity
    without timing."""

    def __init__(self, value: str, pattern: re.Pattern[str]) -> None:
        self.value = value
        self.pattern = pattern
        self.steps = 0

    def __iter__(self) -> Iterator[Token]:
        value, pattern = self.value, self.pattern
        pos, depth, n = 0, 0, len(value)
        space = False
        comment: list[str] = []
        comment_len = 0
        last_comment: str | None = None
        while pos < n:
            self.steps += 1
            if depth:
                m = _COMMENT.match(value, pos)
                assert m is not None  # the last alternative matches any single character
                t = m.group()
                pos = m.end()
                if t == "(":
                    depth += 1
                elif t == ")":
                    depth -= 1
                    if depth == 0:
                        last_comment = "".join(comment).strip()
                        space = True
                elif depth == 1 and comment_len < MAX_COMMENT_TEXT:
                    comment.append(_UNQUOTE.sub(r"\1", t[:MAX_COMMENT_TEXT]))
                    comment_len += len(comment[-1])
                continue
            m = pattern.match(value, pos)
            assert m is not None
            pos = m.end()
            kind = m.lastgroup
            t = m.group()
            if kind == "ws":
                space = True
                continue
            if kind == "paren":
                if t == "(":
                    depth, comment, comment_len = 1, [], 0
                space = True  # a stray ")" is ignored like whitespace
                continue
            if kind == "qs":
                yield Token(QUOTED, unquote(t), t, space, last_comment)
            elif kind == "dl":
                yield Token(LITERAL, t, t, space, last_comment)
            elif kind == "atom":
                yield Token(ATOM, t, t, space, last_comment)
            else:
                yield Token(SPECIAL, t, t, space, last_comment)
            space = False
            last_comment = None
        if depth and comment:
            last_comment = "".join(comment).strip()
        if last_comment is not None:
            yield Token(SPECIAL, "", "", space, last_comment)  # carries a trailing comment
