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
from mailnode.imap.states import State

if TYPE_CHECKING:
    from mailnode.imap.session import ImapSession

Handler = Callable[["ImapSession", Any], Awaitable[str | None]]


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
