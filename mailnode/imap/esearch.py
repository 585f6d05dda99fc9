"""Extended SEARCH and SORT results: RETURN options in, ``* ESEARCH`` data out.

RFC 4731 (ESEARCH: MIN, MAX, ALL, COUNT), RFC 5267 (ESORT; PARTIAL, CONTEXT and UPDATE of
CONTEXT=SEARCH/SORT) and RFC 5182 (SAVE). Pure functions: the session evaluates the search,
this module decides what is reported and how it is written. Every item is computed from the
result list once (a PARTIAL window is a slice, never a walk over the requested range), so a
client-chosen range such as ``PARTIAL 1:4294967295`` costs no more than the results.

Extensions that add result items (CONDSTORE's ``MODSEQ``, RFC 7162 3.1.5) pass them to
:func:`esearch` as ``extra`` items, computed from :func:`reported` (the numbers whose items
were returned), so the option parsing and rendering here need no change for them.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailnode.imap import commands as c
from mailnode.imap.sequences import MAX_NUMBER, compress

_FLAGS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "CONTEXT", "UPDATE")
MAX_OPTIONS = 16
"""Return options in one RETURN list (there are eight kinds; repeats beyond are hostile)."""


def parse_return_options(words: Sequence[bytes]) -> c.ReturnOptions:
    """``RETURN (...)``'s items (atoms as sent) into options; ``ValueError`` for an unknown
    option, a malformed PARTIAL range, or PARTIAL together with ALL or another PARTIAL
    (RFC 5267 4.4: one of them at most). The parser answers BAD."""
    if len(words) > MAX_OPTIONS:
        raise ValueError("too many return options")
    seen: dict[str, bool] = {}
    partial: tuple[int, int] | None = None
    i = 0
    while i < len(words):
        word = words[i].decode("ascii", "replace").upper()
        i += 1
        if word in _FLAGS:
            seen[word.lower()] = True
        elif word == "PARTIAL":
            if partial is not None or i >= len(words):
                raise ValueError("PARTIAL needs one range")
            partial = partial_range(words[i])
            i += 1
        else:
            raise ValueError(f"unknown return option {word[:40]!r}")
    if partial is not None and seen.get("all"):
        raise ValueError("PARTIAL and ALL exclude each other")
    return c.ReturnOptions(partial=partial, **seen)


def partial_range(raw: bytes) -> tuple[int, int]:
    """``n:m`` of non-zero numbers (no ``*``); returned low first (RFC 5267: 500:400 is
    400:500)."""
    low, sep, high = raw.partition(b":")
    if not sep:
        raise ValueError("PARTIAL range needs two numbers")
    a, b = _nz_number(low), _nz_number(high)
    return min(a, b), max(a, b)


def _nz_number(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 10 or raw.startswith(b"0"):
        raise ValueError("not a non-zero number")
    value = int(raw)
    if value > MAX_NUMBER:
        raise ValueError("number too large")
    return value


def wants_all(opts: c.ReturnOptions) -> bool:
    """An empty RETURN list asks for ALL (RFC 4731 3.1)."""
    return opts.all or opts == c.ReturnOptions()


def sends_response(opts: c.ReturnOptions) -> bool:
    """SAVE alone saves the result without an ESEARCH response (RFC 5182 2.1)."""
    return opts != c.ReturnOptions(save=True)


def reported(opts: c.ReturnOptions, numbers: Sequence[int]) -> list[int]:
    """The numbers whose data the response carries: what MODSEQ and SAVE refer to
    (RFC 5182 2.4: with MIN or MAX only those are saved)."""
    if not numbers:
        return []
    if wants_all(opts) or opts.count or not (opts.min or opts.max or opts.partial):
        return list(numbers)
    out: dict[int, None] = {}  # ordered, without repeats
    if opts.min:
        out[numbers[0]] = None
    if opts.max:
        out[numbers[-1]] = None
    if opts.partial is not None:
        low, high = opts.partial
        out.update(dict.fromkeys(numbers[low - 1:high]))
    return list(out)


def items(opts: c.ReturnOptions, numbers: Sequence[int]) -> list[bytes]:
    """The result data items for ``numbers`` (in mailbox order for SEARCH, in sort order for
    SORT, where MIN and MAX are the first and last sorted message, RFC 5267 3.1)."""
    out: list[bytes] = []
    if opts.min and numbers:
        out.append(b"MIN %d" % numbers[0])
    if opts.max and numbers:
        out.append(b"MAX %d" % numbers[-1])
    if wants_all(opts) and numbers:
        out.append(b"ALL " + sequence(numbers))
    if opts.partial is not None:
        low, high = opts.partial
        window = numbers[low - 1:high]
        out.append(b"PARTIAL (%d:%d %s)" % (low, high, sequence(window) if window else b"NIL"))
    if opts.count:
        out.append(b"COUNT %d" % len(numbers))
    return out


def sequence(numbers: Sequence[int]) -> bytes:
    """Numbers in the given order, runs of ascending neighbours as ranges (RFC 5267 3.2:
    a range always expands upwards, so a descending run stays a list)."""
    return compress(numbers).encode("ascii")
