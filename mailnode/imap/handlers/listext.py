"""LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819).

Parsing takes the parser's reader (the extended forms are only recognised when the client
uses them: a plain ``LIST ref pattern`` is still RFC 3501's); answering runs over the
user's mailbox and subscription names once, so a LIST costs one pass over at most
``MAX_MAILBOXES`` names per pattern, whatever the options. Parent names are climbed at most
``MAX_NAME_DEPTH`` levels (the same bound CREATE enforces).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap import responses as r
from mailnode.imap.errors import CommandNo

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader
    from mailnode.imap.session import ImapSession

SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH"})
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN"})
MAX_PATTERNS = 64
"""Patterns in one LIST: each is one more pass over the names."""


def parse_list(r: _Reader, tag: str, lsub: bool) -> c.ListCmd:
    """``LIST [(select-opts)] ref (pattern | (patterns)) [RETURN (return-opts)]``."""
    from mailnode.imap.parser import STATUS_ITEMS, decode_reference

    r.sp()
    select: frozenset[str] | None = None
    if not lsub and r.peek() == 0x28:
        words = r.paren_list(r.keyword)
        select = frozenset(words)
        unknown = select - SELECT_OPTIONS
        if unknown:
            raise r.error(f"Unknown LIST selection option {sorted(unknown)[0]}")
        if "RECURSIVEMATCH" in select and not select - {"RECURSIVEMATCH", "REMOTE"}:
            raise r.error("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = decode_reference(r)
    r.sp()
    several = not lsub and r.peek() == 0x28
    if several:
        patterns = r.paren_list(r.list_mailbox, allow_empty=False)
        if len(patterns) > MAX_PATTERNS:
            raise r.error("Too many patterns")
    else:
        patterns = [r.list_mailbox()]
    returns: set[str] = set()
    status: tuple[str, ...] = ()
    has_return = not lsub and r.take(b" RETURN ")
    if has_return:
        r.expect(b"(")
        while not r.take(b")"):
            if returns or status:
                r.sp()
            word = r.keyword()
            if word == "STATUS":
                r.sp()
                items = r.paren_list(r.keyword, allow_empty=False)
                bad = [i for i in items if i not in STATUS_ITEMS]
                if bad:
                    raise r.error(f"Unknown STATUS item {bad[0]}")
                status = tuple(dict.fromkeys(items))
            elif word in RETURN_OPTIONS:
                returns.add(word)
            else:
                raise r.error(f"Unknown LIST return option {word}")
    r.end()
    extended = None
    if select is not None or several or has_return:
        extended = c.ListOptions(tuple(patterns), select or frozenset(), frozenset(returns),
                                 status)
    return c.ListCmd(tag, reference, patterns[0], lsub, extended)


def _ancestors(name: str, delimiter: str) -> list[str]:
    out = []
    cut = name.rfind(delimiter)
    while cut > 0:
        out.append(name[:cut])
        cut = name.rfind(delimiter, 0, cut)
    return out


async def run(session: ImapSession, cmd: c.ListCmd) -> str:
    """Answer an extended LIST: the names the selection options pick that match a pattern,
    with the attributes and extended data asked for, and a STATUS after each one when
    RETURN (STATUS ...) was given."""
    from mailnode.imap.handlers.mailboxes import (
        DELIMITER,
        MAX_PATTERN_LENGTH,
        ListPattern,
        _add_parents,
        _has_children,
        status_response,
    )

    opts = cmd.extended
    assert opts is not None and session.user is not None
    if any(len(cmd.reference) + len(p) > MAX_PATTERN_LENGTH for p in opts.patterns):
        raise CommandNo("Mailbox pattern too long", "LIMIT")
    matchers = [ListPattern(cmd.reference + p) for p in opts.patterns]

    def matches(name: str) -> bool:
        return any(m(name) for m in matchers)

    store = session.store
    mailboxes = await store.list_mailboxes(session.user.id)
    special = {m.name: m.special_use for m in mailboxes}
    by_name = {m.name: m for m in mailboxes}
    by_subscription = "SUBSCRIBED" in opts.select
    show_subscribed = by_subscription or "SUBSCRIBED" in opts.returns
    subscribed = await store.subscriptions(session.user.id) if show_subscribed else set()
    existing = set(special)
    _add_parents(existing)  # placeholders: \Noselect parents of real mailboxes
    chosen = subscribed if by_subscription else existing
    childinfo: set[str] = set()
    if "RECURSIVEMATCH" in opts.select:
        # RFC 5258 3: a matching name whose descendants meet the selection criteria without
        # matching a pattern themselves is returned (even if it is not chosen) with CHILDINFO.
        for name in chosen:
            if not matches(name):
                childinfo.update(a for a in _ancestors(name, DELIMITER) if matches(a))
    listed = {n for n in chosen if matches(n)} | childinfo
    ordered = sorted(existing)
    for name in sorted(listed, key=lambda n: (n != "INBOX", n)):
        attrs: list[str] = []
        real = name in special
        if name not in existing:
            attrs.append("\\NonExistent")
        else:
            if not real:
                attrs.append("\\Noselect")
            attrs.append("\\HasChildren" if _has_children(ordered, name) else "\\HasNoChildren")
        if show_subscribed and name in subscribed:
            attrs.append("\\Subscribed")
        if special.get(name):
            attrs.append(str(special[name]))
        extended = b' (CHILDINFO ("SUBSCRIBED"))' if name in childinfo else b""
        session.emit(r.ListData(attrs, DELIMITER, session.wire_name(name), extended=extended))
        if opts.status and real:
            # the STATUS command's own code answers, from the listing just read (one
            # query for all mailboxes, not one per mailbox)
            await status_response(session, by_name[name], opts.status)
    return "LIST completed"
