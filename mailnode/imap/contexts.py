"""Updating search and sort contexts (RFC 5267 CONTEXT=SEARCH, CONTEXT=SORT): the pure part.

A SEARCH or SORT with ``RETURN (UPDATE)`` leaves a context behind: its search program and the
messages that matched. When messages change, the session re-evaluates only the changed ones
and this module turns the difference into ``ADDTO``/``REMOVEFROM`` data items: position 0 and
mailbox order for SEARCH contexts, real positions in sort order for SORT contexts (removals
from the end first, so every position is valid when the client applies it; additions in
ascending final position, so inserting them in turn rebuilds the new order).

Contexts are held by uid, so expunges and renumbering cannot confuse them; numbers are
turned into sequence numbers only when a response is written. Sequence numbers in the
search program are frozen to the messages they named when the context was made (a later
expunge would otherwise make "1:3" mean other messages).

Bounds: at most :data:`MAX_CONTEXTS` updating contexts per session (then ``NO [NOUPDATE]``,
RFC 5267 4.3.1) and :data:`MAX_CONTEXT_RESULTS` results in one, so what a session keeps is
bounded whatever the client asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mailnode.imap import commands as c
from mailnode.imap import esearch, sortthread
from mailnode.imap import responses as r
from mailnode.imap.sequences import SequenceSet

MAX_CONTEXTS = 8
"""Updating contexts one session may hold (RFC 5267 asks for at least one)."""
MAX_CONTEXT_RESULTS = 100_000
"""Results an updating context may hold; a larger result is returned but not kept updated."""


@dataclass
class Context:
    """One updating context: the program, and its current results by uid."""

    tag: str
    key: c.SearchKey
    uid: bool
    criteria: tuple[sortthread.Criterion, ...] | None = None
    """None for a SEARCH context; the sort criteria of a SORT context."""
    members: set[int] = field(default_factory=set)
    order: list[int] = field(default_factory=list)
    """SORT contexts: the uids in sort order."""
    messages: dict[int, sortthread.SortMessage] = field(default_factory=dict)
    """SORT contexts: what each member is sorted by (numbered by uid; sort keys never
    change for a message, so they are read once)."""

    @property
    def sorted(self) -> bool:
        return self.criteria is not None


class Contexts:
    """A session's updating contexts for its selected mailbox, and the uids changed since
    they were last brought up to date. Bound to one selection: when the session selects
    anew (or closes) the contexts of the old mailbox are dropped (RFC 5267 4.3: updates
    cease when the mailbox is no longer selected)."""

    def __init__(self) -> None:
        self._selection: object | None = None
        self._items: dict[str, Context] = {}
        self._dirty: set[int] = set()

    def bind(self, selection: object | None) -> None:
        """Drop everything if ``selection`` is not the one the contexts were made in."""
        if selection is not self._selection:
            self._selection = selection
            self._items.clear()
            self._dirty.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, tag: str) -> bool:
        return tag in self._items

    def full(self) -> bool:
        return len(self._items) >= MAX_CONTEXTS

    def add(self, ctx: Context) -> None:
        self._items[ctx.tag] = ctx

    def cancel(self, tags: Iterable[str]) -> list[str]:
        """Remove the named contexts; returns the tags that named none."""
        unknown = []
        for tag in tags:
            if self._items.pop(tag, None) is None:
                unknown.append(tag)
        return unknown

    def touch(self, uids: Iterable[int]) -> None:
        """Messages whose flags changed, or that are new: re-evaluated at the next flush."""
        if self._items:
            self._dirty.update(uids)

    def take_dirty(self) -> tuple[list[int], list[Context]]:
        """The changed uids (ascending) and the contexts to re-evaluate them for."""
        dirty = sorted(self._dirty)
        self._dirty.clear()
        return dirty, list(self._items.values())

    def expunging(self, uids: Iterable[int], seq_of: Mapping[int, int]) -> list[bytes]:
        """``REMOVEFROM`` responses for messages about to be reported expunged, numbered as
        the client still numbers them (RFC 5267 4.3.4: sent before the EXPUNGEs)."""
        gone = set(uids)
        self._dirty -= gone
        out = []
        for ctx in self._items.values():
            removed = ctx.members & gone
            if not removed:
                continue
            line = update_items(ctx, removed, {}, seq_of)
            if line is not None:
                out.append(line)
        return out


def update_items(ctx: Context, removed: set[int], added: Mapping[int, sortthread.SortMessage
                                                                   | None],
                 seq_of: Mapping[int, int]) -> bytes | None:
    """Apply a change to ``ctx`` and describe it: the ESEARCH response carrying REMOVEFROM
    for ``removed`` and ADDTO for ``added`` (uids; SORT contexts give each added message's
    sort data), or None when nothing changed for the client."""
    removed &= ctx.members
    fresh = {u: m for u, m in added.items() if u not in ctx.members}
    if not removed and not fresh:
        return None

    def number(uid: int) -> int:
        return uid if ctx.uid else seq_of[uid]

    data: list[bytes] = []
    if not ctx.sorted:
        if removed:
            data.append(b"REMOVEFROM (0 " + esearch.sequence(
                [number(u) for u in sorted(removed)]) + b")")
        ctx.members -= removed
        if fresh:
            data.append(b"ADDTO (0 " + esearch.sequence(
                [number(u) for u in sorted(fresh)]) + b")")
        ctx.members.update(fresh)
        return r.data(r.ESearch(ctx.tag, ctx.uid, data))
    assert ctx.criteria is not None
    old = ctx.order
    if removed:
        data.append(b"REMOVEFROM (" + b" ".join(
            _runs(old, removed, number, descending=True)) + b")")
    for uid in removed:
        ctx.members.discard(uid)
        ctx.messages.pop(uid, None)
    for uid, msg in fresh.items():
        assert msg is not None
        ctx.members.add(uid)
        ctx.messages[uid] = msg
    new = sortthread.sort(list(ctx.messages.values()), ctx.criteria) if fresh else \
        [u for u in old if u not in removed]
    if fresh:
        data.append(b"ADDTO (" + b" ".join(_runs(new, set(fresh), number)) + b")")
    ctx.order = new
    return r.data(r.ESearch(ctx.tag, ctx.uid, data))


def _runs(order: Sequence[int], chosen: set[int], number: Callable[[int], int],
          descending: bool = False) -> list[bytes]:
    """``position set`` pairs for the chosen uids of ``order``: each run of neighbours is
    one pair (1-based position of its first member, its numbers in order)."""
    runs: list[tuple[int, list[int]]] = []
    for i, uid in enumerate(order):
        if uid not in chosen:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == i + 1:
            runs[-1][1].append(number(uid))
        else:
            runs.append((i + 1, [number(uid)]))
    if descending:
        runs.reverse()
    return [b"%d %s" % (pos, esearch.sequence(nums)) for pos, nums in runs]


def freeze(key: c.SearchKey, uids: Sequence[int]) -> c.SearchKey:
    """``key`` with every sequence-number set replaced by the uids it names now (``uids``
    is the selected mailbox, in order), so the program keeps meaning the same messages."""
    if isinstance(key, c.SearchSeq):
        named = [u for i, u in enumerate(uids, start=1) if key.seqs.contains(i, len(uids))]
        return c.SearchUid(uid_set(named))
    if isinstance(key, c.SearchNot):
        return c.SearchNot(freeze(key.key, uids))
    if isinstance(key, c.SearchOr):
        return c.SearchOr(freeze(key.left, uids), freeze(key.right, uids))
    if isinstance(key, c.SearchAnd):
        return c.SearchAnd(tuple(freeze(k, uids) for k in key.keys))
    return key


def uid_set(uids: Sequence[int]) -> SequenceSet:
    """An ascending uid list as ranges (an empty list matches nothing)."""
    ranges: list[tuple[int | None, int | None]] = []
    for u in uids:
        if ranges and ranges[-1][1] == u - 1:
            ranges[-1] = (ranges[-1][0], u)
        else:
            ranges.append((u, u))
    return SequenceSet(tuple(ranges))
