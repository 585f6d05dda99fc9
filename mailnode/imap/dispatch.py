"""The one command table: each command type -> the states it may run in -> its handler.

The session looks a parsed command up here and nowhere else; a command without a route, or
in a state its route does not list, gets BAD. A handler is ``async (session, command) ->
text of the tagged OK`` (None when the command continues: AUTHENTICATE, IDLE); it raises
ImapError (or a StoreError) to fail. ``numbered`` marks the commands whose replies use
sequence numbers unless sent as UID commands: while one runs no EXPUNGE may be sent
(RFC 3501 §7.4.1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailnode.imap import commands as c
from mailnode.imap import responses as r
from mailnode.imap.handlers import (
    auth,
    compress,
    esearch,
    mailboxes,
    messages,
    metadata,
    multiappend,
    quota,
)
from mailnode.imap.states import ANY, AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, State

if TYPE_CHECKING:
    from mailnode.imap.session import ImapSession

Handler = Callable[["ImapSession", Any], Awaitable[str | r.Completed | None]]


@dataclass(frozen=True, slots=True)
class Route:
    states: frozenset[State]
    handler: Handler
    numbered: bool = False


def table(routes: Iterable[tuple[type[c.Command], frozenset[State], Handler]
                          | tuple[type[c.Command], frozenset[State], Handler, bool]],
          ) -> dict[type[c.Command], Route]:
    """The routes as a lookup table; a command routed twice is a programming error."""
    out: dict[type[c.Command], Route] = {}
    for cmd, states, handler, *numbered in routes:
        if cmd in out:
            raise ValueError(f"{cmd.__name__} is routed twice")
        out[cmd] = Route(states, handler, *numbered)
    return out


def allowed(routes: dict[type[c.Command], Route]) -> dict[State, frozenset[type[c.Command]]]:
    """Which commands each state accepts (a view of the table)."""
    return {state: frozenset(cmd for cmd, route in routes.items() if state in route.states)
            for state in State}


ROUTES = table([
    (c.Capability, ANY, auth.do_capability),
    (c.Noop, ANY, auth.do_noop),
    (c.Logout, ANY, auth.do_logout),
    (c.Id, ANY, auth.do_id),
    (c.StartTls, NOT_AUTHENTICATED, auth.do_starttls),
    (c.Login, NOT_AUTHENTICATED, auth.do_login),
    (c.Authenticate, NOT_AUTHENTICATED, auth.do_authenticate),
    (c.Enable, AUTHENTICATED, mailboxes.do_enable),
    (c.Namespace, AUTHENTICATED, mailboxes.do_namespace),
    (c.ListCmd, AUTHENTICATED, mailboxes.do_list),
    (c.Select, AUTHENTICATED, mailboxes.do_select),
    (c.Status, AUTHENTICATED, mailboxes.do_status),
    (c.Create, AUTHENTICATED, mailboxes.do_create),
    (c.Delete, AUTHENTICATED, mailboxes.do_delete),
    (c.Rename, AUTHENTICATED, mailboxes.do_rename),
    (c.Subscribe, AUTHENTICATED, mailboxes.do_subscribe),
    (c.Append, AUTHENTICATED, mailboxes.do_append),
    (c.AppendMany, AUTHENTICATED, multiappend.run),
    (c.Idle, AUTHENTICATED, mailboxes.do_idle),
    (metadata.GetMetadata, AUTHENTICATED, metadata.do_get),
    (metadata.SetMetadata, AUTHENTICATED, metadata.do_set),
    (quota.GetQuota, AUTHENTICATED, quota.do_getquota),
    (quota.GetQuotaRoot, AUTHENTICATED, quota.do_getquotaroot),
    (quota.SetQuota, AUTHENTICATED, quota.do_setquota),
    (compress.Compress, AUTHENTICATED, compress.do_compress),
    (c.Check, SELECTED, messages.do_check),
    (c.Close, SELECTED, messages.do_close),
    (c.Unselect, SELECTED, messages.do_unselect),
    (c.Expunge, SELECTED, messages.do_expunge),
    (c.Fetch, SELECTED, messages.do_fetch, True),
    (c.StoreCmd, SELECTED, messages.do_store, True),
    (c.Search, SELECTED, messages.do_search, True),
    (c.SortCmd, SELECTED, messages.do_sort, True),
    (c.ThreadCmd, SELECTED, messages.do_thread, True),
    (c.Copy, SELECTED, messages.do_copy),
    (c.CancelUpdate, SELECTED, esearch.cancel_update),
])
"""Every command: the states it may run in, its handler, and whether it is numbered."""

ALLOWED = allowed(ROUTES)
"""Which command may run in which state; anything else gets BAD and the session goes on."""
