"""RFC 5256 SORT and THREAD (ORDEREDSUBJECT, REFERENCES), and RFC 5957 DISPLAYFROM/TO.

Pure and sans-IO: the session fills one :class:`SortMessage` per message from the keys the
store computed when the message arrived (``mailnode.mime.sortkeys``; a SORT the store can
order itself, ``MailStore.sort_order``, comes here only when a message lacks them) and gets
numbers back; :func:`sort` is also what the store's SQL order is tested against.
Everything is bounded for hostile headers and large mailboxes: subjects and id lists are
capped before parsing, sorting is n log n per criterion, and the thread trees (which can be
as deep as there are messages) are walked with explicit stacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mailnode.mime import Address, Envelope

# The key functions live beside the stored record; re-exported for callers and tests.
from mailnode.mime.sortkeys import MAX_DATE as MAX_DATE
from mailnode.mime.sortkeys import MAX_ID_FIELD as MAX_ID_FIELD
from mailnode.mime.sortkeys import MAX_REFERENCES as MAX_REFERENCES
from mailnode.mime.sortkeys import MAX_SUBJECT as MAX_SUBJECT
from mailnode.mime.sortkeys import SortKeys, arrival, keys_of
from mailnode.mime.sortkeys import base_subject as base_subject
from mailnode.mime.sortkeys import first_id as first_id
from mailnode.mime.sortkeys import message_ids as message_ids

SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO",
                       "DISPLAYFROM", "DISPLAYTO"})
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


@dataclass(slots=True)
class SortMessage:
    """What SORT and THREAD need of one message; ``number`` is what the response shows
    (the sequence number, or the uid for UID SORT / UID THREAD; unique in one call) and
    breaks all ties.
    Header values are as stored in the ENVELOPE (unfolded, encoded words left in); the keys
    derived from them are computed on first use, or come ready from the store
    (:meth:`from_keys`), derived by the same functions when the message was stored."""

    number: int
    internaldate: datetime
    size: int
    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    _keys: SortKeys | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_envelope(cls, number: int, internaldate: datetime, size: int,
                      envelope: Envelope | None, references: str | None = None
                      ) -> SortMessage:
        """From the stored structure's ENVELOPE (``MessageStructure.root.envelope``); the
        References field is not part of it and comes from the header block."""
        e = envelope or Envelope()
        return cls(number, internaldate, size, e.date, e.subject, e.from_, e.to, e.cc,
                   e.message_id, e.in_reply_to, references)

    @classmethod
    def from_keys(cls, number: int, internaldate: datetime, size: int, keys: SortKeys,
                  ) -> SortMessage:
        """From the keys the store kept (``MailStore.sort_keys``)."""
        return cls(number, internaldate, size, _keys=keys)

    @property
    def keys(self) -> SortKeys:
        if self._keys is None:
            self._keys = keys_of(Envelope(
                date=self.date, subject=self.subject, from_=self.from_, to=self.to,
                cc=self.cc, message_id=self.message_id, in_reply_to=self.in_reply_to),
                self.references)
        return self._keys

    @property
    def sent(self) -> float:
        sent = self.keys.sent
        return arrival(self.internaldate) if sent is None else sent

    @property
    def base(self) -> tuple[str, bool]:
        """(base subject, is reply/forward)."""
        return self.keys.base

    @property
    def subject_key(self) -> str:
        """The base subject, i;ascii-casemapped (``keys_of``)."""
        return self.keys.base[0]


# --- SORT ---------------------------------------------------------------------------------

Criterion = tuple[str, bool]  # (key, reverse)


def parse_criteria(words: Iterable[str]) -> tuple[Criterion, ...]:
    """``[REVERSE] key`` words into criteria; ``ValueError`` on an unknown key, a dangling
    REVERSE, or none at all (the session answers BAD)."""
    out: list[Criterion] = []
    reverse = False
    for word in words:
        w = word.upper()
        if w == "REVERSE":
            if reverse:
                raise ValueError("REVERSE REVERSE")
            reverse = True
        elif w in SORT_KEYS:
            out.append((w, reverse))
            reverse = False
        else:
            raise ValueError(f"unknown sort key {word[:40]!r}")
    if reverse or not out:
        raise ValueError("sort criteria incomplete")
    return tuple(out)


def _key(m: SortMessage, name: str) -> str | int | float:
    if name == "ARRIVAL":
        return arrival(m.internaldate)
    if name == "DATE":
        return m.sent
    if name == "SIZE":
        return m.size
    if name == "SUBJECT":
        return m.subject_key
    if name == "FROM":
        return m.keys.from_
    if name == "TO":
        return m.keys.to
    if name == "CC":
        return m.keys.cc
    if name == "DISPLAYFROM":
        return m.keys.display_from
    if name == "DISPLAYTO":
        return m.keys.display_to
    raise ValueError(f"unknown sort key {name!r}")


def sort(messages: Sequence[SortMessage], criteria: Sequence[Criterion]) -> list[int]:
    """The numbers of ``messages`` in SORT order: criteria in turn, REVERSE flipping only
    its own; full ties by number. One stable sort per criterion, last first, each key
    computed once per message: O(k n log n)."""
    order = sorted(messages, key=lambda m: m.number)
    for name, reverse in reversed(criteria):
        keys = {id(m): _key(m, name) for m in order}
        order.sort(key=lambda m: keys[id(m)], reverse=reverse)  # stable, also reversed
    return [m.number for m in order]


# --- THREAD -------------------------------------------------------------------------------

@dataclass(slots=True)
class Thread:
    """One node of a THREAD response: a message, or (``number`` None) a placeholder that
    groups siblings whose common parent is missing or that share a subject."""

    number: int | None
    children: list[Thread] = field(default_factory=list)


def _order_key(m: SortMessage) -> tuple[float, int]:
    return m.sent, m.number


def thread_orderedsubject(messages: Sequence[SortMessage]) -> list[Thread]:
    """RFC 5256 ORDEREDSUBJECT: group by base subject; in each group the earliest message
    is the root and the others its children; threads in order of their roots' dates."""
    order = sorted(messages, key=lambda m: (m.subject_key, m.sent, m.number))
    threads: list[tuple[tuple[float, int], Thread]] = []
    last: str | None = None
    for m in order:
        if threads and m.subject_key == last:
            threads[-1][1].children.append(Thread(m.number))
        else:
            threads.append((_order_key(m), Thread(m.number)))
            last = m.subject_key
    threads.sort(key=lambda t: t[0])
    return [t for _, t in threads]


class _Node:
    """A REFERENCES container (RFC 5256 §3 step 1); ``msg`` is None for a dummy."""

    __slots__ = ("children", "msg", "parent")

    def __init__(self, msg: SortMessage | None = None) -> None:
        self.msg = msg
        self.parent: _Node | None = None
        self.children: dict[_Node, None] = {}  # ordered set: O(1) unlink


class _Linker:
    """Step 1: the id table and parent/child links, never forming a loop."""

    def __init__(self, budget: int) -> None:
        self.table: dict[str, _Node] = {}
        self.nodes: list[_Node] = []  # creation order (for a deterministic root order)
        self.steps = 0  # loop-check steps taken (tests check this stays linear)
        self.budget = budget

    def node(self, msg_id: str) -> _Node:
        n = self.table.get(msg_id)
        if n is None:
            n = self.table[msg_id] = _Node()
            self.nodes.append(n)
        return n

    def would_loop(self, parent: _Node, child: _Node) -> bool:
        """Whether ``parent`` is ``child`` or one of its descendants. Walks up from
        ``parent`` and through ``child``'s subtree in lockstep and stops when either ends,
        so a link costs the smaller of the two (a reply chain in either order: O(1) per
        link). Past the whole run's step budget, an undecided link is refused."""
        if parent is child:
            return True
        up = parent.parent
        down = [iter(child.children)]
        while True:
            self.steps += 1  # one step up and one down per round
            if self.steps > self.budget:
                return True
            if up is None:
                return False
            if up is child:
                return True
            up = up.parent
            while down:
                nxt = next(down[-1], None)
                if nxt is None:
                    down.pop()
                    continue
                if nxt is parent:
                    return True
                down.append(iter(nxt.children))
                break
            else:
                return False

    def link(self, parent: _Node, child: _Node) -> None:
        if not self.would_loop(parent, child):
            if child.parent is not None:
                del child.parent.children[child]
            child.parent = parent
            parent.children[child] = None


def _link_all(messages: Sequence[SortMessage]) -> tuple[list[_Node], int]:
    """RFC 5256 §3 step 1 (A and B) for every message in number order; the containers in
    creation order and the loop-check steps taken."""
    order = sorted(messages, key=lambda m: m.number)
    linker = _Linker(budget=8 * (MAX_REFERENCES + 2) * len(order) + 10_000)
    table, nodes = linker.table, linker.nodes
    for m in order:
        keys = m.keys
        mid = keys.message_id
        own = table.get(mid) if mid else None
        if own is None and mid:  # (``linker.node``, inline: once per message)
            own = table[mid] = _Node(m)
            nodes.append(own)
        elif own is not None and own.msg is None:
            own.msg = m
        else:  # no valid id, or a duplicate: a unique id of its own
            own = _Node(m)
            nodes.append(own)
        refs = keys.parents  # References, or In-Reply-To (``keys_of``)
        prev: _Node | None = None
        for ref in refs:  # (A) chain the references, keeping links that already exist
            n = linker.node(ref)
            if prev is not None and n.parent is None:
                linker.link(prev, n)
            prev = n
        # (B) the last reference is the parent: an existing parent link (from a truncated
        # References elsewhere) is broken first, even if the new link would loop and is
        # then not made; no references at all leave a root.
        if own.parent is not prev:
            if own.parent is not None:
                del own.parent.children[own]
                own.parent = None
            if prev is not None:
                linker.link(prev, own)
    return linker.nodes, linker.steps


def _prune(nodes: list[_Node]) -> list[Thread]:
    """Steps 2 and 4: the root set with dummies removed and their children promoted, except
    that several children of a root dummy stay under it (a dummy root with one child gives
    way to that child). Top-down in one pass: each real node hangs from its nearest real
    ancestor, or from its root when that is a dummy. Returns ``Thread`` trees."""
    roots = [n for n in nodes if n.parent is None]
    made: dict[_Node, Thread] = {}  # a real node, or a root dummy -> its Thread
    hang: dict[_Node, _Node] = {}  # node -> the node its children hang from
    stack = list(reversed(roots))
    while stack:
        n = stack.pop()
        p = n.parent
        if n.msg is not None:
            made[n] = Thread(n.msg.number)
            hang[n] = n
            if p is not None:
                made[hang[p]].children.append(made[n])
        elif p is None:
            made[n] = Thread(None)
            hang[n] = n
        else:
            hang[n] = hang[p]
        stack.extend(n.children)
    out: list[Thread] = []
    for r in roots:
        t = made[r]
        if t.number is not None or len(t.children) > 1:
            out.append(t)
        elif t.children:
            out.append(t.children[0])
    return out


def _merge_subjects(roots: list[Thread], by_number: dict[int, SortMessage]) -> list[Thread]:
    """Step 5: root threads with the same base subject are gathered under one."""
    def first(t: Thread) -> SortMessage:
        """The message whose subject a root stands for: its own, or (a dummy, whose
        children here are all real) its earliest child's."""
        if t.number is not None:
            return by_number[t.number]
        return min((by_number[c.number] for c in t.children if c.number is not None),
                   key=_order_key)

    def reply(t: Thread) -> bool:
        return t.number is not None and by_number[t.number].base[1]

    subjects = [first(t).subject_key for t in roots]
    table: dict[str, Thread] = {}
    for t, subj in zip(roots, subjects, strict=True):
        if not subj:
            continue
        have = table.get(subj)
        if have is None or (t.number is not None and (
                have.number is None or (not reply(t) and reply(have)))):
            table[subj] = t
    out = [t for t, subj in zip(roots, subjects, strict=True) if not subj]
    winners = {id(t) for t in table.values()}  # later wrapped in a dummy, still not moved
    for t, subj in zip(roots, subjects, strict=True):
        if not subj or id(t) in winners:
            continue
        have = table[subj]
        if t.number is None and have.number is None:
            have.children.extend(t.children)
        elif have.number is None or (reply(t) and not reply(have)):
            have.children.append(t)
        else:
            table[subj] = Thread(None, [have, t])
    out.extend(table.values())
    return out


def _sort_siblings(roots: list[Thread], by_number: dict[int, SortMessage]) -> None:
    """Step 6: every set of siblings by sent date (then number); a dummy dates as its first
    child after sorting. Bottom-up over an explicit pre-order list: no recursion."""
    order: list[Thread] = []
    stack = list(roots)
    while stack:
        t = stack.pop()
        order.append(t)
        stack.extend(t.children)
    keys: dict[int, tuple[float, int]] = {}
    for t in reversed(order):
        children = t.children
        if len(children) > 1:
            children.sort(key=lambda c: keys[id(c)])
        if t.number is not None:
            keys[id(t)] = _order_key(by_number[t.number])
        else:
            keys[id(t)] = keys[id(children[0])] if children else (0.0, 0)
    roots.sort(key=lambda c: keys[id(c)])


def thread_references(messages: Sequence[SortMessage]) -> list[Thread]:
    """RFC 5256 THREAD=REFERENCES (§3 steps 1-6)."""
    return _references(messages)[0]


def _references(messages: Sequence[SortMessage]) -> tuple[list[Thread], int]:
    by_number = {m.number: m for m in messages}
    nodes, steps = _link_all(messages)
    roots = _merge_subjects(_prune(nodes), by_number)
    _sort_siblings(roots, by_number)
    return roots, steps


def thread(algorithm: str, messages: Sequence[SortMessage]) -> list[Thread]:
    """THREAD by algorithm name (case-insensitive); ``ValueError`` for an unknown one."""
    name = algorithm.upper()
    if name == "REFERENCES":
        return thread_references(messages)
    if name == "ORDEREDSUBJECT":
        return thread_orderedsubject(messages)
    raise ValueError(f"unknown thread algorithm {algorithm[:40]!r}")


def serialise(threads: Sequence[Thread]) -> bytes:
    """The RFC 5256 thread-list syntax, e.g. ``(1 2)(3 (4)(5))``: a chain of single
    children as consecutive numbers, several children as nested lists. Iterative (threads can
    be as deep as the mailbox is large); a dummy shows only its children."""
    out: list[str] = []
    # Work items: a Thread to open as a thread-list, or a literal string to emit.
    stack: list[Thread | str] = []
    for t in reversed(threads):
        stack.append(")")
        stack.append(t)
        stack.append("(")
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        t = item
        # Follow the chain of only-children; a dummy with one child is transparent.
        while True:
            if t.number is not None:
                out.append(f"{t.number}" if out[-1] == "(" else f" {t.number}")
            if len(t.children) != 1:
                break
            t = t.children[0]
        if len(t.children) > 1:
            if out[-1] != "(":
                out.append(" ")
            for c in reversed(t.children):
                stack.append(")")
                stack.append(c)
                stack.append("(")
    return "".join(out).encode("ascii")
