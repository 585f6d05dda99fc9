"""A selected session's view of its mailbox, kept current from the store's change feed.

The session holds the uids it has told the client of (an ascending array) and the modseq it
has caught up to. Catching up applies ``MailStore.changes_since``: new messages become
EXISTS, flag changes FETCH, expunges EXPUNGE or (with QRESYNC) VANISHED. The work follows
the number of changes; nothing here re-lists the mailbox. Pure code: the session does the
I/O and writes the lines this module returns (made by ``responses.data``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from mailnode.imap import responses as r
from mailnode.store.api import SYSTEM_FLAGS, Changes, Mailbox, MessageMeta

SYSTEM_FLAG_LIST = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_REBUILD_ABOVE = 64
"""Expunges reported at once beyond which the uid array is rebuilt rather than cut."""


class SeqIndex(Mapping[int, int]):
    """uid -> sequence number, by bisection over the ascending uid array: there is nothing
    to rebuild when messages come and go (a dict of positions had to be redone each time)."""

    def __init__(self, uids: list[int]) -> None:
        self._uids = uids

    def __getitem__(self, uid: int) -> int:
        i = bisect_left(self._uids, uid)
        if i < len(self._uids) and self._uids[i] == uid:
            return i + 1
        raise KeyError(uid)

    def __contains__(self, uid: object) -> bool:
        if not isinstance(uid, int):
            return False
        i = bisect_left(self._uids, uid)
        return i < len(self._uids) and self._uids[i] == uid

    def __iter__(self) -> Iterator[int]:
        return iter(self._uids)

    def __len__(self) -> int:
        return len(self._uids)


class Metas(dict[int, MessageMeta]):
    """uid -> message of the view, with the uids lacking \\Seen kept as a set beside it:
    ``SEARCH UNSEEN`` (what every client asks) costs the unseen messages, not the mailbox."""

    def __init__(self, metas: dict[int, MessageMeta] | None = None) -> None:
        super().__init__(metas or {})
        self.unseen = {u for u, m in self.items() if "\\Seen" not in m.flags}

    def __setitem__(self, uid: int, meta: MessageMeta) -> None:
        super().__setitem__(uid, meta)
        if "\\Seen" in meta.flags:
            self.unseen.discard(uid)
        else:
            self.unseen.add(uid)

    def __delitem__(self, uid: int) -> None:
        super().__delitem__(uid)
        self.unseen.discard(uid)

    def _unsupported(self, *_args: object, **_kwargs: object) -> None:
        raise TypeError("Metas keeps its unseen set through item assignment only")

    update = pop = popitem = setdefault = clear = _unsupported  # type: ignore[assignment]


@dataclass
class Selected:
    """The session's view of its mailbox: what the client has been told so far."""

    mailbox: Mailbox
    readonly: bool
    uids: list[int]
    metas: dict[int, MessageMeta]
    version: int
    max_uid: int = 0
    recent: set[int] = field(default_factory=set)
    """Uids that are \\Recent in this session (claimed by it, or unclaimed when read-only)."""
    modseq: int = 0
    """The modseq the view is current to: the next catch-up asks for changes after it."""
    gone: set[int] = field(default_factory=set)
    """Expunged uids not yet reported: they keep their sequence numbers until a command
    during which RFC 3501 §7.4.1 allows EXPUNGE."""
    keywords: set[str] = field(default_factory=set)
    """Keywords announced in FLAGS: a FETCH never shows one before it is announced."""
    gone_since: int = 0
    """While expunges wait in ``gone``: a modseq from before the first of them, which the
    client is told as HIGHESTMODSEQ so that it never resyncs past them (RFC 7162 §3.2.10,
    RFC 5162 erratum 1810)."""

    def __post_init__(self) -> None:
        if not isinstance(self.metas, Metas):
            self.metas = Metas(self.metas)

    @property
    def unseen(self) -> set[int]:
        """Uids of the view without \\Seen (kept by ``Metas``)."""
        assert isinstance(self.metas, Metas)
        return self.metas.unseen

    @property
    def seq_of(self) -> SeqIndex:
        return SeqIndex(self.uids)

    def shown(self, meta: MessageMeta) -> MessageMeta:
        """The message as this session reports it: with \\Recent where it applies."""
        if meta.uid in self.recent:
            return replace(meta, flags=meta.flags | {"\\Recent"})
        return meta


@dataclass
class Update:
    """What catching up produced: untagged lines to send in order, then new messages for
    the session to announce with EXISTS (after claiming their \\Recent)."""

    lines: list[bytes]
    new: list[MessageMeta]
    expunged: dict[int, int] = field(default_factory=dict)
    """Uids the lines report expunged -> the sequence numbers the client knew them by
    (for whatever must be said about them before those lines: RFC 5267 REMOVEFROM)."""
    changed: list[int] = field(default_factory=list)
    """Uids of the view whose flags another session changed."""


def flag_lines(sel: Selected) -> list[bytes]:
    """FLAGS and PERMANENTFLAGS for the view's announced keywords."""
    keywords = sorted(sel.keywords)
    listed = (*SYSTEM_FLAG_LIST, *keywords)
    # The keywords too (as RFC 3501's example and Dovecot do): a client learns they stick.
    permanent = "" if sel.readonly else " ".join([*SYSTEM_FLAG_LIST, *keywords, "\\*"])
    return [r.data(r.Flags(listed)),
            r.data(r.Condition("OK", "Permanent flags", f"PERMANENTFLAGS ({permanent})"))]


def announce_keywords(sel: Selected, metas: list[MessageMeta]) -> list[bytes]:
    """FLAGS again when ``metas`` carry keywords the client was not told of yet."""
    fresh = {f for m in metas for f in m.flags} - SYSTEM_FLAGS - sel.keywords - {"\\Recent"}
    if not fresh:
        return []
    sel.keywords |= fresh
    return flag_lines(sel)


def fetch_line(sel: Selected, meta: MessageMeta, *, condstore: bool, uid: bool = True,
               flags: bool = True) -> bytes:
    """``n FETCH (UID u FLAGS (..) MODSEQ (m))`` for a message of the view."""
    return r.data(r.Fetch(sel.seq_of[meta.uid], meta.uid if uid else None,
                          sel.shown(meta).flags if flags else None,
                          meta.modseq if condstore else None))


def report_gone(sel: Selected, *, qresync: bool,
                numbered: dict[int, int] | None = None) -> list[bytes]:
    """EXPUNGE lines (highest sequence number first, so each number is still right when
    sent) or one VANISHED, for the expunged uids the client still sees; removes them.
    Then RECENT if that changed this session's count: it comes with a change in the
    mailbox's size and the client records it (RFC 3501 §7.3.2), as it does with EXISTS.
    ``numbered`` receives each reported uid with its sequence number before removal."""
    gone = sorted(u for u in sel.gone if u in sel.metas)
    sel.gone.clear()
    if not gone:
        return []
    index = sel.seq_of
    seqs = [index[u] for u in gone]
    if numbered is not None:
        numbered.update(zip(gone, seqs, strict=True))
    lines = ([r.data(r.Vanished(gone))] if qresync
             else [r.data(r.Expunge(s)) for s in reversed(seqs)])
    if len(gone) > _REBUILD_ABOVE:
        dropped = set(gone)
        sel.uids[:] = [u for u in sel.uids if u not in dropped]
    else:
        for s in reversed(seqs):
            del sel.uids[s - 1]
    recent = len(sel.recent)
    for u in gone:
        del sel.metas[u]
        sel.recent.discard(u)
    if len(sel.recent) != recent:
        lines.append(r.data(r.Recent(len(sel.recent))))
    return lines


def apply(sel: Selected, changes: Changes, *, allow_expunge: bool, condstore: bool,
          qresync: bool) -> Update:
    """Bring the view up to ``changes`` (read with ``changes_since(sel.modseq)``)."""
    if not sel.gone:
        sel.gone_since = sel.modseq
    sel.gone.update(u for u in changes.vanished if u in sel.metas)
    expunged: dict[int, int] = {}
    lines = report_gone(sel, qresync=qresync, numbered=expunged) if allow_expunge else []
    changed = []
    updates = [m for m in changes.changed
               if m.uid <= sel.max_uid and m.uid in sel.metas and m.uid not in sel.gone]
    new = [m for m in changes.changed if m.uid > sel.max_uid]
    lines += announce_keywords(sel, updates + new)
    for meta in updates:
        old = sel.metas[meta.uid]
        if old == meta:
            continue  # this session's own change, already reported
        sel.metas[meta.uid] = meta
        if old.flags != meta.flags:
            changed.append(meta.uid)
        if old.flags != meta.flags or condstore:
            lines.append(fetch_line(sel, meta, condstore=condstore))
    sel.modseq = max(sel.modseq, changes.highest_modseq)
    return Update(lines, new, expunged, changed)


def diff(sel: Selected, metas: list[MessageMeta], highest: int) -> Changes:
    """The changes between the view and a full listing: the fallback when the feed cannot
    say what vanished that long ago (its tombstones were dropped)."""
    present = {m.uid for m in metas}
    vanished = [u for u in sel.uids if u not in present]
    changed = [m for m in metas if sel.metas.get(m.uid) != m]
    return Changes(changed, vanished, highest)
