"""SEARCHRES (RFC 5182): ``RETURN (SAVE)`` keeps a search result, ``$`` refers to it.

The parser reads ``$`` as :data:`SAVED`, a sequence set that names nothing by itself; the
session resolves it against the saved result (held as uids, so expunges and renumbering
need no bookkeeping: what is gone is simply not selected any more) just before a command
uses its set, as sequence numbers or uids depending on the command. The saved result
belongs to one selection and starts empty with each (RFC 5182 2.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailnode.imap import commands as c
from mailnode.imap.contexts import uid_set
from mailnode.imap.sequences import SequenceSet


@dataclass(frozen=True)
class SavedMarker(SequenceSet):
    """``$``: the saved search result, resolved by :meth:`Saved.resolve`. Unresolved it
    is an empty set (it can never select messages by accident)."""

    def __str__(self) -> str:
        return "$"


SAVED = SavedMarker(())


class Saved:
    """The saved result of one session, tied to its selection."""

    def __init__(self) -> None:
        self._selection: object | None = None
        self._uids: frozenset[int] = frozenset()

    def bind(self, selection: object | None) -> None:
        if selection is not self._selection:
            self._selection = selection
            self._uids = frozenset()

    def save(self, selection: object | None, uids: Iterable[int]) -> None:
        """Replace the saved result (an empty one when the saving search failed)."""
        self.bind(selection)
        self._uids = frozenset(uids)

    def resolve(self, selection: object | None, seqset: SequenceSet, uids: Sequence[int],
                *, as_uids: bool) -> SequenceSet:
        """``seqset`` itself, or for ``$`` the saved messages still selected, as uids or as
        their sequence numbers in ``uids`` (the selected mailbox, ascending)."""
        if not isinstance(seqset, SavedMarker):
            return seqset
        self.bind(selection)
        if as_uids:
            return uid_set([u for u in uids if u in self._uids])
        return uid_set([i for i, u in enumerate(uids, start=1) if u in self._uids])

    def resolve_key(self, selection: object | None, key: c.SearchKey,
                    uids: Sequence[int]) -> c.SearchKey:
        """The search program with ``$`` (as a key, or after UID) turned into the uids saved."""
        if isinstance(key, c.SearchSeq | c.SearchUid) and isinstance(
                key.seqs if isinstance(key, c.SearchSeq) else key.uids, SavedMarker):
            return c.SearchUid(self.resolve(selection, SAVED, uids, as_uids=True))
        if isinstance(key, c.SearchNot):
            return c.SearchNot(self.resolve_key(selection, key.key, uids))
        if isinstance(key, c.SearchOr):
            return c.SearchOr(self.resolve_key(selection, key.left, uids),
                              self.resolve_key(selection, key.right, uids))
        if isinstance(key, c.SearchAnd):
            return c.SearchAnd(tuple(self.resolve_key(selection, k, uids) for k in key.keys))
        return key
