"""Commands on the selected mailbox's messages: CHECK, CLOSE, UNSELECT, EXPUNGE, FETCH,
STORE, SEARCH, SORT, THREAD, COPY/MOVE, and what they share: running a search program over
the view (``matches``, also used by ESEARCH and the updating contexts) and loading bodies and
stored structures in bounded batches.

Handlers take the session as ``self`` (they were its methods; the bodies are unchanged so that
work on them elsewhere still merges) and are routed in :mod:`mailnode.imap.dispatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from mailnode.imap import commands as c
from mailnode.imap import condstore, feed, objects, search, sortthread
from mailnode.imap import responses as r
from mailnode.imap.errors import CommandBad, CommandNo
from mailnode.imap.feed import Selected
from mailnode.imap.fetch import (
    HEADER_SECTIONS,
    STRUCTURE_ITEMS,
    HeaderLines,
    header_lines,
    listing_lines,
    render_chunks,
)
from mailnode.imap.handlers import binary
from mailnode.imap.handlers import esearch as ext_search
from mailnode.imap.sequences import SequenceSet, compress
from mailnode.imap.states import State
from mailnode.mime import MessageStructure, analyse, sortkeys
from mailnode.mime import headers as mh
from mailnode.store.api import Changes

if TYPE_CHECKING:
    from mailnode.imap.session import ImapSession


BODY_BATCH = 64
KEYED_BATCH = 5000
"""Messages tested per batch when a search reads no message (no body, no objects)."""
INLINE_SEARCH_KEYS = 8
"""Search programs longer than this are evaluated in a worker thread, a batch at a time."""
BODY_BATCH_BYTES = 1024 * 1024
"""FETCH/SEARCH load at most BODY_BATCH bodies at once, and FETCH no more than about this many
bytes of them (at least one message), so memory stays near one message, not 64 of them."""
SMALL_READ_BYTES = 256 * 1024
"""A batch of header FETCH whose messages are no larger than this in all is read without a
hop to a reader thread: the hop cost more than reading a message list's page of headers,
and the bound keeps the event loop from reading large bodies' pages itself."""
_LISTING_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})
_UNSEEN = c.SearchFlag("\\Seen", present=False)


async def do_check(self: ImapSession, cmd: c.Check) -> str:
    return "CHECK completed"


async def do_close(self: ImapSession, cmd: c.Close) -> str:
    sel = self.selected
    assert sel is not None
    self.selected = None
    self.state = State.AUTHENTICATED
    if not sel.readonly:
        await self.store.expunge(sel.mailbox.id)
    return "CLOSE completed"


async def do_unselect(self: ImapSession, cmd: c.Unselect) -> str:
    self.selected = None
    self.state = State.AUTHENTICATED
    return "UNSELECT completed"


async def do_expunge(self: ImapSession, cmd: c.Expunge) -> str | r.Completed:
    sel = self._require_writable()
    uids = None if cmd.uids is None else self.saved.resolve(
        sel, cmd.uids, sel.uids, as_uids=True).uids(sel.uids)
    if uids:
        await self.store.expunge(sel.mailbox.id, uids)
    elif uids is None:
        await self.store.expunge(sel.mailbox.id)
    if not self.qresync:
        return "EXPUNGE completed"
    # RFC 7162 §3.2.7: with QRESYNC the tagged OK tells the modseq after the VANISHED,
    # so they are reported first
    await self._sync(allow_expunge=True)
    return r.Completed("EXPUNGE completed", f"HIGHESTMODSEQ {sel.modseq}")


async def vanished_earlier(self: ImapSession, sel: Selected, since: int,
                           within: SequenceSet | None) -> tuple[list[int], Changes]:
    """Uids expunged after ``since`` (within ``within``), for VANISHED (EARLIER); when the
    tombstones do not reach back that far, every uid below UIDNEXT the mailbox lacks."""
    changes = await self.store.changes_since(sel.mailbox.id, since)
    if changes.complete:
        gone = [u for u in changes.vanished if u not in sel.metas]
    else:
        gone = [u for u in range(1, sel.max_uid + 1) if u not in sel.metas]
    if within is not None:  # "*" is the mailbox's largest uid, not the largest gone
        largest = sel.uids[-1] if sel.uids else sel.max_uid
        gone = [u for u in gone if within.contains(u, largest)]
    return gone, changes


class _FetchPlan(NamedTuple):
    """What a FETCH's item list asks for, worked out once per distinct list (see
    :func:`_fetch_plan`)."""

    attrs: tuple[c.FetchAttr, ...]
    enables_condstore: bool
    with_flags: tuple[c.FetchAttr, ...]
    """The items for messages whose \\Seen this FETCH set (RFC 3501: FLAGS then follow)."""
    listing: bool
    sets_seen: bool
    needs_raw: bool
    needs_structure: bool
    headers_only: bool
    binary_items: bool
    needs_extra: bool
    lister: HeaderLines | None
    flagged: HeaderLines | None
    stored_fields: bool
    """Only HEADER.FIELDS of fields the store keeps apart (``MailStore.fetch_headers``)."""


@lru_cache(maxsize=128)
def _fetch_plan(items: tuple[c.FetchAttr, ...], uid: bool, condstore: bool,
                changedsince: bool) -> _FetchPlan:
    """The plan for a FETCH of ``items``: a client sends the same item list for every page
    of its message list, and working it out each time cost more than a tenth of such a
    FETCH. ``condstore``: CONDSTORE was enabled before this command."""
    attrs = _unique_items(items)
    if uid and not any(a.name == "UID" for a in attrs):
        attrs = (c.FetchAttr("UID"), *attrs)
    enables = changedsince or any(a.name == "MODSEQ" for a in attrs)
    condstore = condstore or enables
    if condstore and (changedsince or any(a.name == "FLAGS" for a in attrs)) \
            and not any(a.name == "MODSEQ" for a in attrs):
        attrs = (*attrs, c.FetchAttr("MODSEQ"))
    with_flags = attrs
    if not any(a.name == "FLAGS" for a in attrs):
        with_flags = (*with_flags, c.FetchAttr("FLAGS"))
    if condstore and not any(a.name == "MODSEQ" for a in with_flags):
        with_flags = (*with_flags, c.FetchAttr("MODSEQ"))
    needs_raw = any(a.needs_body and (a.name not in STRUCTURE_ITEMS or a.section is not None)
                    for a in attrs)
    # Sections other than the whole message are located with the structure stored at
    # delivery (decoding it is far cheaper than analysing the message again).
    needs_structure = any((a.name in STRUCTURE_ITEMS and a.section is None)
                          or (a.section is not None
                              and (a.section.parts or a.section.text is not None))
                          for a in attrs)
    # Only top-level header sections (what a message list shows): the stored structure
    # says where the header ends, and the store cuts it out; bodies stay in the database.
    headers_only = needs_raw and all(
        a.section is not None and not a.section.parts and a.name not in binary.ITEMS
        and a.section.text in HEADER_SECTIONS for a in attrs if a.needs_body)
    # A message list: whole lines from a plan made once per item list.
    lister = header_lines(attrs) if headers_only else None
    return _FetchPlan(
        attrs, enables, with_flags, all(a.name in _LISTING_ITEMS for a in attrs),
        any(a.sets_seen for a in attrs), needs_raw, needs_structure, headers_only,
        any(a.name in binary.ITEMS for a in attrs), objects.wanted(attrs), lister,
        header_lines(with_flags) if lister is not None else None,
        headers_only and all(a.section is not None and a.section.text == "HEADER.FIELDS"
                             and mh.in_stored_fields(a.section.fields)
                             for a in attrs if a.needs_body))


async def do_fetch(self: ImapSession, cmd: c.Fetch) -> str:
    sel = self.selected
    assert sel is not None
    if cmd.vanished and not (cmd.uid and self.qresync):
        raise CommandBad("VANISHED needs UID FETCH with QRESYNC enabled")
    plan = _fetch_plan(cmd.attrs, cmd.uid, self.condstore, cmd.changedsince is not None)
    if plan.enables_condstore:
        self._enable("CONDSTORE")
    attrs = plan.attrs
    targets = self._targets(cmd.seqset, cmd.uid)
    if cmd.changedsince is not None:
        since = cmd.changedsince
        targets = [(seq, u) for seq, u in targets if sel.metas[u].modseq > since]
        if cmd.vanished:
            gone, _ = await vanished_earlier(self, sel, since, cmd.seqset)
            if gone:
                self.emit(r.Vanished(gone, earlier=True))
    seen_changed: set[int] = set()
    if not sel.readonly and plan.sets_seen:
        unseen = [u for _, u in targets if "\\Seen" not in sel.metas[u].flags]
        if unseen:
            stored = await self.store.store_flags(sel.mailbox.id, unseen,
                                                  frozenset({"\\Seen"}), "add")
            self._keywords(stored)
            for meta in stored:
                sel.metas[meta.uid] = meta
                seen_changed.add(meta.uid)
            ext_search.touched(self, seen_changed)
    if plan.listing:
        await _listing_lines(self, sel, targets, attrs)
        return f"{'UID ' if cmd.uid else ''}FETCH completed"
    with_flags = plan.with_flags
    needs_raw, needs_structure = plan.needs_raw, plan.needs_structure
    headers_only, binary_items, needs_extra = (plan.headers_only, plan.binary_items,
                                               plan.needs_extra)
    lister, flagged = plan.lister, plan.flagged
    missing = False
    for batch in _body_batches(self, targets, needs_raw or needs_structure):
        uids = [u for _, u in batch]
        extra = (await self.store.message_objects(sel.mailbox.id, uids) if needs_extra
                 else {})
        blocks: set[int] = set()
        if headers_only:
            bodies, blocks = await _headers(self, uids, small=sum(
                sel.metas[u].size for u in uids) <= SMALL_READ_BYTES,
                fields=plan.stored_fields)
            structures = {}
            want = uids
        elif needs_raw and needs_structure:  # both in one read
            both = await self.store.fetch_messages(sel.mailbox.id, uids)
            bodies = {u: body for u, (body, _) in both.items()}
            structures = _decoded({u: blob for u, (_, blob) in both.items()})
            want = uids
        else:
            structures = await _structures(self, uids) if needs_structure else {}
            want = [u for u in uids
                    if needs_raw or (needs_structure and u not in structures)]
            bodies = await self.store.fetch_bodies(sel.mailbox.id, want) if want else {}
        if needs_structure and not headers_only:
            analysed = await _analyse_missing(structures, bodies, uids)
            if analysed:  # mail stored before structures were: never analysed twice
                structures.update(analysed)
                await self.store.save_structures(
                    sel.mailbox.id, {u: st.encode() for u, st in analysed.items()})
        if lister is not None and flagged is not None:
            lines = []  # a batch's lines in one write: its messages are few and small
            for seq, uid in batch:
                raw = bodies.get(uid)
                if raw is None:
                    missing = True
                    continue
                shape = flagged if uid in seen_changed else lister
                meta = sel.metas[uid]
                lines.append(shape.line(seq, sel.shown(meta) if shape.shows_flags else meta,
                                        raw, uid in blocks))
            self._write(b"".join(lines))
            await self._flush_if_full()
            continue
        wanted = set(want)
        for seq, uid in batch:
            raw = bodies.pop(uid, None)
            if (uid in wanted and raw is None) or (needs_extra and uid not in extra):
                missing = True
                continue
            items = with_flags if uid in seen_changed else attrs
            if binary_items and raw is not None:  # NO [UNKNOWN-CTE] before it begins
                binary.check(raw, structures.get(uid), attrs)
            self._write(r.fetch_open(seq))
            for chunk in render_chunks(sel.shown(sel.metas[uid]), items, raw,
                                       structures.get(uid), extra.get(uid),
                                       header_block=uid in blocks):
                self._write(chunk)
                await self._flush_if_full()
            self._write(r.CRLF)
    if missing:
        raise CommandNo("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return f"{'UID ' if cmd.uid else ''}FETCH completed"


async def _listing_lines(self: ImapSession, sel: Selected, targets: list[tuple[int, int]],
                         attrs: tuple[c.FetchAttr, ...]) -> None:
    """FETCH of UID, FLAGS and MODSEQ only (how clients sync a mailbox): written in
    batches of LINE_BATCH lines (see :func:`fetch.listing_lines`)."""
    from mailnode.imap.session import LINE_BATCH  # the wire engine's bound, read when used

    for chunk in listing_lines(targets, sel.metas, sel.recent, attrs, LINE_BATCH):
        self._write(chunk)
        await self._flush_if_full()


async def _headers(self: ImapSession, uids: list[int], *, small: bool = False,
                   fields: bool = False) -> tuple[dict[int, bytes], set[int]]:
    """What to render header sections from: the header block (or with ``fields``, where
    the store has them, the fields it kept apart), or the whole message (analysed as before)
    where no structure was stored; and the uids given a block. ``small``: the messages are
    small in all (see ``MailStore.fetch_headers``)."""
    sel = self.selected
    assert sel is not None
    heads = await self.store.fetch_headers(sel.mailbox.id, uids, small=small, fields=fields)
    lacking = [u for u, head in heads.items() if head is None]
    raws = await self.store.fetch_bodies(sel.mailbox.id, lacking) if lacking else {}
    blocks = set()
    for uid, head in heads.items():
        if head is not None:
            raws[uid] = head
            blocks.add(uid)
    return raws, blocks


async def _structures(self: ImapSession, uids: list[int]) -> dict[int, MessageStructure]:
    """The MIME structures stored at delivery (left out: none stored, or unreadable)."""
    sel = self.selected
    assert sel is not None
    return _decoded(await self.store.fetch_structures(sel.mailbox.id, uids))


def _body_batches(self: ImapSession, targets: list[tuple[int, int]], bodies: bool,
                  ) -> Iterator[list[tuple[int, int]]]:
    """Targets in groups to load together: BODY_BATCH at most, and when bodies are loaded
    no more than BODY_BATCH_BYTES of them (a group holds at least one message)."""
    sel = self.selected
    assert sel is not None
    batch: list[tuple[int, int]] = []
    size = 0
    for target in targets:
        weight = sel.metas[target[1]].size if bodies else 0
        if batch and (len(batch) >= BODY_BATCH or size + weight > BODY_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(target)
        size += weight
    if batch:
        yield batch


async def do_store(self: ImapSession, cmd: c.StoreCmd) -> str:
    sel = self._require_writable()
    targets = self._targets(cmd.seqset, cmd.uid)
    if cmd.unchangedsince is not None:
        self._enable("CONDSTORE")
    failed: list[int] = []
    if targets:
        before = {u: sel.metas[u].modseq for _, u in targets}
        metas, failed = await self.store.store_flags_unchanged_since(
            sel.mailbox.id, [u for _, u in targets], cmd.flags, cmd.mode,
            cmd.unchangedsince)
        self._keywords(metas)
        for meta in metas:
            sel.metas[meta.uid] = meta
        ext_search.touched(self, (m.uid for m in metas))
        for meta in metas:
            if not cmd.silent:
                line = feed.fetch_line(sel, meta, condstore=self.condstore, uid=cmd.uid)
            elif self.condstore and meta.modseq != before[meta.uid]:
                # RFC 7162 §3.1.3: .SILENT still tells the new modseq of what changed
                line = feed.fetch_line(sel, meta, condstore=True, uid=cmd.uid, flags=False)
            else:
                continue
            self._untagged(line)
    code = ""
    if failed:
        numbers = failed if cmd.uid else [sel.seq_of[u] for u in failed]
        code = f"[MODIFIED {compress(numbers)}] "
    return f"{code}{'UID ' if cmd.uid else ''}STORE completed"


async def do_search(self: ImapSession, cmd: c.Search) -> str:
    if cmd.returns is not None:
        return await ext_search.search(self, cmd)
    sel = self.selected
    assert sel is not None
    if cmd.uid and cmd.key == _UNSEEN and cmd.charset is None:
        # What clients poll with: the uids come straight from the view's unseen set,
        # with no sequence number looked up for each (a bisection per match).
        self.emit(r.SearchData(sorted(sel.unseen)))
    else:
        found = await matches(self, cmd.key, cmd.charset)
        self.emit(r.SearchData([uid if cmd.uid else seq for seq, uid in found],
                               _modseq_tail(self, cmd.key, found)))
    return f"{'UID ' if cmd.uid else ''}SEARCH completed"


def _modseq_tail(self: ImapSession, key: c.SearchKey, found: list[tuple[int, int]]) -> int | None:
    """`` (MODSEQ n)``, the highest modseq among the matches, when the program has a
    MODSEQ key (RFC 7162 §3.1.5, SEARCH and SORT); such a search enables CONDSTORE."""
    if not condstore.uses_modseq(key):
        return None
    self._enable("CONDSTORE")
    sel = self.selected
    assert sel is not None
    if not found:
        return None
    return max(sel.metas[u].modseq for _, u in found)


async def matches(self: ImapSession, key: c.SearchKey, charset: str | None,
                  targets: list[tuple[int, int]] | None = None,
                  ) -> list[tuple[int, int]]:
    """(sequence number, uid) of the selected messages ``key`` matches, in order (of
    ``targets``, when given, else of all)."""
    sel = self.selected
    assert sel is not None
    if charset is not None and charset not in search.CHARSETS:
        raise CommandNo("Unsupported charset", "BADCHARSET (US-ASCII UTF-8)")
    key = self.saved.resolve_key(sel, key, sel.uids)
    if targets is None and key == _UNSEEN:
        uids = sel.uids
        return [(bisect_left(uids, u) + 1, u) for u in sorted(sel.unseen)]
    if targets is None and isinstance(key, c.SearchAll):  # what SORT and THREAD mostly use
        return list(enumerate(sel.uids, start=1))
    if targets is None and isinstance(key, c.SearchFlag) and key.flag != "\\Recent":
        # One flag test per message: no candidates, no bodies.
        flag, present, metas = key.flag, key.present, sel.metas
        return [(seq, u) for seq, u in enumerate(sel.uids, start=1)
                if (flag in metas[u].flags) == present]
    need_body = search.needs_body(key)
    # FROM/TO/CC/BCC and SUBJECT are answered by the store from the texts it keeps per
    # message (``MailStore.search_texts``): one query per such key, no message read.
    hits: dict[c.SearchHeader, set[int]] | None = None
    if need_body and search.keys_suffice(key):
        hits = {}
        for node in c.search_nodes(key):
            header = search.stored(node)
            if header is not None and header not in hits:
                hits[header] = await self.store.search_texts(
                    sel.mailbox.id, header.name.upper() if header.envelope else "SUBJECT",
                    header.value.casefold())
        need_body = False
        if targets is None and isinstance(key, c.SearchHeader):  # the usual: one key
            found_uids = hits[key]
            return [(seq, u) for seq, u in enumerate(sel.uids, start=1) if u in found_uids]
    need_extra = objects.needs_objects(key)
    heavy = need_body or _key_count(key) > INLINE_SEARCH_KEYS
    found: list[tuple[int, int]] = []
    max_seq = len(sel.uids)
    max_uid = sel.uids[-1] if sel.uids else 0
    if targets is None:
        targets = list(enumerate(sel.uids, start=1))

    async def evaluate(batch: list[tuple[int, int]]) -> set[int]:
        """The uids of ``batch`` that match, from their bytes and structures when the key
        needs them."""
        uids = [u for _, u in batch]
        bodies = await self.store.fetch_bodies(sel.mailbox.id, uids) if need_body else {}
        structures = await _structures(self, uids) if need_body else {}
        extra = (await self.store.message_objects(sel.mailbox.id, uids) if need_extra
                 else {})
        candidates = [search.Candidate(seq, sel.shown(sel.metas[uid]), max_seq, max_uid,
                                       bodies.pop(uid, None), structures.get(uid),
                                       extra.get(uid), hits)
                      for seq, uid in batch]
        # Decoding bodies and headers, or a program of hundreds of keys, is bounded but
        # not free: never on the event loop.
        matched = (await asyncio.to_thread(_matching, key, candidates) if heavy
                   else _matching(key, candidates))
        return {cand.meta.uid for cand in matched}

    batches = (_body_batches(self, targets, need_body) if hits is None or need_extra
               else (targets[i:i + KEYED_BATCH] for i in range(0, len(targets), KEYED_BATCH)))
    for batch in batches:
        got = await evaluate(batch)
        found.extend(t for t in batch if t[1] in got)
    return found


async def sort_messages(self: ImapSession, found: list[tuple[int, int]], uid: bool,
                        references: bool) -> list[sortthread.SortMessage]:
    """What SORT and THREAD compare: the keys stored at delivery, read from their columns
    (``references``: only those THREAD compares). A message expunged meanwhile (still in
    this session's view) has none and compares as one without those header fields."""
    sel = self.selected
    assert sel is not None
    whole = len(found) == len(sel.uids)  # all of the view: one statement for the mailbox
    keyed = await self.store.sort_keys(sel.mailbox.id, None if whole else
                                       [u for _, u in found], thread=references)
    empty = sortkeys.keys_of(None, None)
    metas, make = sel.metas, sortthread.SortMessage.from_keys
    with sortkeys.collection_paused():
        return [make(u if uid else seq, metas[u].internaldate, metas[u].size,
                     keyed.get(u, empty)) for seq, u in found]


async def sorted_numbers(self: ImapSession, found: list[tuple[int, int]], uid: bool,
                         criteria: tuple[sortthread.Criterion, ...]) -> list[int]:
    """The numbers of ``found`` in SORT order: the store orders the whole mailbox in SQL
    (``SqlStore.sort_order``) and the matches are picked out of that order. Should a
    match have no stored keys (expunged meanwhile, still in this session's view), the
    pure sort over ``sort_messages`` answers instead."""
    sel = self.selected
    assert sel is not None
    if not found:
        return []
    order = await self.store.sort_order(sel.mailbox.id, criteria)
    if uid and len(found) == len(sel.uids):  # all of the view (SORT ... ALL)
        metas = sel.metas
        numbers = [u for u in order if u in metas]
    else:
        wanted = {u: seq for seq, u in found}
        numbers = [u if uid else wanted[u] for u in order if u in wanted]
    if len(numbers) == len(found):
        return numbers
    messages = await sort_messages(self, found, uid, references=False)
    return await asyncio.to_thread(sortthread.sort, messages, criteria)


async def do_sort(self: ImapSession, cmd: c.SortCmd) -> str:
    if cmd.returns is not None:
        return await ext_search.sort(self, cmd)
    sel = self.selected
    assert sel is not None
    if isinstance(cmd.key, c.SearchAll) and cmd.charset in (None, *search.CHARSETS) \
            and sel.uids:
        # SORT ... ALL, what clients send: the store orders the messages up to the view's
        # last uid (newer ones are not in it; every older one is, or was expunged). When as
        # many come back as the view has, they are the view: no per-message list is made.
        order = await self.store.sort_order(sel.mailbox.id, cmd.criteria, upto=sel.uids[-1])
        if len(order) == len(sel.uids):
            index = sel.seq_of
            self.emit(r.SearchData(order if cmd.uid else [index[u] for u in order],
                                   sort=True))
            return f"{'UID ' if cmd.uid else ''}SORT completed"
    found = await matches(self, cmd.key, cmd.charset)
    ordered = await sorted_numbers(self, found, cmd.uid, cmd.criteria)
    self.emit(r.SearchData(ordered, _modseq_tail(self, cmd.key, found), sort=True))
    return f"{'UID ' if cmd.uid else ''}SORT completed"


async def do_thread(self: ImapSession, cmd: c.ThreadCmd) -> str:
    found = await matches(self, cmd.key, cmd.charset)
    messages = await sort_messages(self, found, cmd.uid, references=True)

    def threaded() -> bytes:
        with sortkeys.collection_paused():
            threads = sortthread.thread(cmd.algorithm, messages)
            return sortthread.serialise(threads) if threads else b""
    self.emit(r.ThreadData(await asyncio.to_thread(threaded)))
    return f"{'UID ' if cmd.uid else ''}THREAD completed"


async def do_copy(self: ImapSession, cmd: c.Copy) -> str | r.Completed:
    sel = self._require_writable() if cmd.move else self.selected
    assert sel is not None
    verb = ("UID " if cmd.uid else "") + ("MOVE" if cmd.move else "COPY")
    targets = self._targets(cmd.seqset, cmd.uid)
    dest = await self._mailbox(cmd.mailbox, trycreate=True)
    if not targets:
        return f"{verb} completed"
    move_or_copy = self.store.move if cmd.move else self.store.copy
    pairs = await move_or_copy(sel.mailbox.id, [u for _, u in targets], dest.id)
    code = ""
    if pairs:
        code = (f"COPYUID {dest.uidvalidity} {compress([p[0] for p in pairs])} "
                f"{compress([p[1] for p in pairs])}")
    if cmd.move:  # RFC 6851: COPYUID comes untagged, before the EXPUNGEs
        if code:
            self.emit(r.Condition("OK", "Moved", code))
        return f"{verb} completed"
    return r.Completed(f"{verb} completed", code or None)


def _unique_items(attrs: tuple[c.FetchAttr, ...]) -> tuple[c.FetchAttr, ...]:
    """Each fetch item once, in first-mention order (BODY[] and BODY.PEEK[] answer the same
    item; the non-peeking one wins). ``BODY[] BODY[] ...`` a thousand times would otherwise
    send the message a thousand times."""
    unique: dict[c.FetchAttr, c.FetchAttr] = {}
    for attr in attrs:
        key = replace(attr, peek=False)
        if key not in unique or not attr.peek:
            unique[key] = attr
    return tuple(unique.values())


def _decoded(blobs: dict[int, bytes | None]) -> dict[int, MessageStructure]:
    """Stored structures decoded (left out: none stored, or an older format, which the
    caller analyses again)."""
    out = {}
    for uid, blob in blobs.items():
        if blob is not None:
            with contextlib.suppress(ValueError):
                out[uid] = MessageStructure.decode(blob)
    return out


def _key_count(key: c.SearchKey) -> int:
    """How many keys a search program evaluates per message."""
    return sum(1 for _ in c.search_nodes(key))


def _matching(key: c.SearchKey, candidates: list[search.Candidate]) -> list[search.Candidate]:
    return [cand for cand in candidates if search.matches(key, cand)]


async def _analyse_missing(structures: dict[int, MessageStructure], bodies: dict[int, bytes],
                           uids: list[int]) -> dict[int, MessageStructure]:
    """Structures for messages stored without one (older mail), analysed off the loop."""
    todo = {u: bodies[u] for u in uids if u not in structures and u in bodies}
    if not todo:
        return {}
    return await asyncio.to_thread(lambda: {u: analyse(raw) for u, raw in todo.items()})
