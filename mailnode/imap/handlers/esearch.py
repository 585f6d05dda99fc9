"""Extended SEARCH and SORT (ESEARCH, ESORT, CONTEXT=SEARCH/SORT) for a session.

The search program runs in :func:`mailnode.imap.handlers.messages.matches` (off the event
loop for heavy programs), which also builds sort data (``sort_messages``); this module decides
what is returned (:mod:`mailnode.imap.esearch`) and keeps updating contexts
(:mod:`mailnode.imap.contexts`). The session calls three hooks: :func:`touched` when message
flags change or messages arrive, :func:`expunging` just before it reports expunges, and
:func:`flush` after each command and on IDLE wake-ups, which re-evaluates only the touched
messages and sends ADDTO/REMOVEFROM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap import condstore, esearch, sortthread
from mailnode.imap import responses as r
from mailnode.imap.contexts import MAX_CONTEXT_RESULTS, Context, freeze, update_items
from mailnode.imap.errors import CommandBad, CommandNo
from mailnode.imap.handlers import messages as selected
from mailnode.store.api import StoreError

if TYPE_CHECKING:
    from mailnode.imap.session import ImapSession

INLINE_SORT = 2_000
"""Sort contexts larger than this are re-sorted in a worker thread."""


def _check_update(s: ImapSession, tag: str, opts: c.ReturnOptions) -> None:
    s.contexts.bind(s.selected)
    if opts.update and tag in s.contexts:
        # RFC 5267 4.3: updates are correlated by tag, so a tag in use is refused.
        raise CommandBad("Tag already names an updating context")


def _noupdate(tag: str, text: str) -> r.Condition:
    """RFC 5267 4.3.1: this context is not (or no longer) updated."""
    return r.Condition("NO", text, "NOUPDATE " + r.string(tag).decode("ascii"))


def _keep(s: ImapSession, ctx: Context, size: int) -> None:
    """Register an updating context, or say why not (RFC 5267 4.3.1: other return options
    are still honoured)."""
    if s.contexts.full() or size > MAX_CONTEXT_RESULTS:
        s.emit(_noupdate(ctx.tag, "Too many or too large updating contexts"))
        return
    s.contexts.add(ctx)


def _respond(s: ImapSession, cmd: c.Search | c.SortCmd, opts: c.ReturnOptions,
             numbers: list[int]) -> None:
    extra = _modseq(s, cmd, opts, numbers)
    if esearch.sends_response(opts):
        s.emit(r.ESearch(cmd.tag, cmd.uid, [*esearch.items(opts, numbers), *extra]))


def _modseq(s: ImapSession, cmd: c.Search | c.SortCmd, opts: c.ReturnOptions,
            numbers: list[int]) -> list[bytes]:
    """``MODSEQ n`` when the program has a MODSEQ key: the highest modseq among the messages
    the response reports (RFC 7162 3.1.5, RFC 4731 3.2: with MIN/MAX only, of those). Such
    a search enables CONDSTORE."""
    if not condstore.uses_modseq(cmd.key):
        return []
    s._enable("CONDSTORE")
    sel = s.selected
    assert sel is not None
    shown = esearch.reported(opts, numbers)
    if not shown:
        return []
    uids = shown if cmd.uid else [sel.uids[n - 1] for n in shown]
    return [b"MODSEQ %d" % max(sel.metas[u].modseq for u in uids)]


async def search(s: ImapSession, cmd: c.Search) -> str:
    """``SEARCH RETURN (...)``: an ESEARCH response, a context if UPDATE was asked, the
    result saved for ``$`` if SAVE was."""
    opts = cmd.returns
    sel = s.selected
    assert opts is not None and sel is not None
    with _saving(s, opts):
        _check_update(s, cmd.tag, opts)
        key = s.saved.resolve_key(sel, cmd.key, sel.uids)  # "$" means the result before
        found = await selected.matches(s, key, cmd.charset)
        numbers = [u if cmd.uid else q for q, u in found]
        if opts.update:
            _keep(s, Context(cmd.tag, freeze(key, sel.uids), cmd.uid,
                             members={u for _, u in found}), len(found))
        _save(s, cmd.uid, opts, numbers)
        _respond(s, cmd, opts, numbers)
    return f"{'UID ' if cmd.uid else ''}SEARCH completed"


async def sort(s: ImapSession, cmd: c.SortCmd) -> str:
    """``SORT RETURN (...)``: ESEARCH in sort order (RFC 5267 3), a context if UPDATE."""
    opts = cmd.returns
    sel = s.selected
    assert opts is not None and sel is not None
    with _saving(s, opts):
        _check_update(s, cmd.tag, opts)
        key = s.saved.resolve_key(sel, cmd.key, sel.uids)
        found = await selected.matches(s, key, cmd.charset)
        messages = await selected.sort_messages(s, found, True, references=False)  # numbered by uid
        ordered = await asyncio.to_thread(sortthread.sort, messages, cmd.criteria)
        numbers = ordered if cmd.uid else [sel.seq_of[u] for u in ordered]
        if opts.update:
            _keep(s, Context(cmd.tag, freeze(key, sel.uids), cmd.uid, cmd.criteria,
                             members=set(ordered), order=ordered,
                             messages={m.number: m for m in messages}), len(found))
        _save(s, cmd.uid, opts, numbers)
        _respond(s, cmd, opts, numbers)
    return f"{'UID ' if cmd.uid else ''}SORT completed"


@contextmanager
def _saving(s: ImapSession, opts: c.ReturnOptions) -> Iterator[None]:
    """A saving search that fails leaves ``$`` empty (RFC 5182 2.1)."""
    try:
        yield
    except Exception:
        if opts.save:
            s.saved.save(s.selected, ())
        raise


def _save(s: ImapSession, uid: bool, opts: c.ReturnOptions, numbers: list[int]) -> None:
    """SAVE keeps what the response reports: only MIN/MAX when only they were asked for
    (RFC 5182 2.4)."""
    sel = s.selected
    if not opts.save or sel is None:
        return
    kept = esearch.reported(opts, numbers)
    s.saved.save(sel, kept if uid else [sel.uids[n - 1] for n in kept])


async def cancel_update(s: ImapSession, cmd: c.CancelUpdate) -> str:
    """RFC 5267 4.3.5. Every tag must name a context; otherwise nothing is cancelled (NO:
    the command is well formed, there is just nothing by that name)."""
    s.contexts.bind(s.selected)
    unknown = [t for t in cmd.tags if t not in s.contexts]
    if unknown:
        raise CommandNo("No updating context has that tag")
    s.contexts.cancel(cmd.tags)
    return "CANCELUPDATE completed"


def touched(s: ImapSession, uids: Iterable[int]) -> None:
    """Messages whose flags changed or that arrived: re-evaluated at the next flush."""
    s.contexts.bind(s.selected)
    s.contexts.touch(uids)


def expunging(s: ImapSession, uids: list[int],
              numbered: Mapping[int, int] | None = None) -> None:
    """Call just before reporting these uids expunged: REMOVEFROM goes first, while the
    client's sequence numbers still name them (RFC 5267 4.3.4). ``numbered`` gives those
    numbers when the view has already dropped the uids (the change feed's catch-up)."""
    sel = s.selected
    s.contexts.bind(sel)
    if sel is None or not uids or not len(s.contexts):
        return
    for line in s.contexts.expunging(uids, sel.seq_of if numbered is None else numbered):
        s._untagged(line)


async def flush(s: ImapSession) -> None:
    """Re-evaluate the touched messages against each updating context and report what
    entered or left (ADDTO after the EXISTS that announced new messages, RFC 5267 4.3.3).
    Work is the touched messages times the contexts, not the mailbox."""
    sel = s.selected
    s.contexts.bind(sel)
    if sel is None or not len(s.contexts):
        return
    dirty, contexts = s.contexts.take_dirty()
    targets = [(sel.seq_of[u], u) for u in dirty if u in sel.seq_of]
    if not targets:
        return
    for ctx in contexts:
        try:
            line = await _reevaluate(s, ctx, targets)
        except StoreError:  # the mailbox went away under us: stop updating, say so
            s.contexts.cancel([ctx.tag])
            s.emit(_noupdate(ctx.tag, "Context lost"))
            continue
        if line is not None:
            s._untagged(line)
        if len(ctx.members) > MAX_CONTEXT_RESULTS:  # grown too large to keep: stop updating
            s.contexts.cancel([ctx.tag])
            s.emit(_noupdate(ctx.tag, "Context grew too large"))


async def _reevaluate(s: ImapSession, ctx: Context, targets: list[tuple[int, int]],
                      ) -> bytes | None:
    """Which of ``targets`` match ``ctx`` now, applied to it: its update response."""
    sel = s.selected
    assert sel is not None
    matched = {u for _, u in await selected.matches(s, ctx.key, None, targets)}
    removed = {u for _, u in targets if u not in matched}
    fresh = sorted(u for u in matched if u not in ctx.members)
    added: dict[int, sortthread.SortMessage | None] = dict.fromkeys(fresh)
    if ctx.sorted and fresh:
        msgs = await selected.sort_messages(s, [(sel.seq_of[u], u) for u in fresh], True,
                                      references=False)
        added = {m.number: m for m in msgs}
    if ctx.sorted and len(ctx.members) + len(added) > INLINE_SORT:
        return await asyncio.to_thread(update_items, ctx, removed, added, sel.seq_of)
    return update_items(ctx, removed, added, sel.seq_of)
