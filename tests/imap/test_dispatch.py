"""The command table is the one place commands are routed: every parsed command type has
exactly one route, and the table and the capability registry agree on what exists."""

from __future__ import annotations

import pytest

from mailnode.imap import commands as c
from mailnode.imap import dispatch
from mailnode.imap.capabilities import CORE_COMMANDS, EXTENSION_COMMANDS, REGISTRY
from mailnode.imap.dispatch import ALLOWED, ROUTES
from mailnode.imap.states import ANY, State


def _command_types() -> set[type[c.Command]]:
    """Every Command subclass defined anywhere (core and extension modules)."""
    out: set[type[c.Command]] = set()
    todo = [c.Command]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.add(sub)
            todo.append(sub)
    return out


def test_every_command_type_has_exactly_one_route() -> None:
    assert set(ROUTES) == _command_types() == set(c.NAMES)
    for cmd, route in ROUTES.items():
        assert route.states and route.states <= ANY, cmd


def test_a_command_routed_twice_is_refused() -> None:
    async def handler(session: object, cmd: object) -> str:
        return "done"

    with pytest.raises(ValueError, match="Noop is routed twice"):
        dispatch.table([(c.Noop, ANY, handler), (c.Noop, ANY, handler)])


def test_the_registry_and_the_table_agree() -> None:
    routed = set(ROUTES)
    assert routed == CORE_COMMANDS | EXTENSION_COMMANDS
    for cap in REGISTRY:
        assert cap.commands <= routed, cap.name
    # Commands that exist only for an extension run once logged in (its capability is
    # advertised after login); the pre-login ones are RFC 3501's or ID.
    for cmd in routed - CORE_COMMANDS - {c.Id}:
        assert State.NOT_AUTHENTICATED not in ROUTES[cmd].states, cmd


def test_numbered_commands_are_the_ones_with_a_uid_form() -> None:
    numbered = {cmd for cmd, route in ROUTES.items() if route.numbered}
    assert numbered == {c.Fetch, c.StoreCmd, c.Search, c.SortCmd, c.ThreadCmd}
    assert all("uid" in cmd.__dataclass_fields__ for cmd in numbered)


def test_allowed_is_a_view_of_the_table() -> None:
    assert ALLOWED[State.LOGOUT] == frozenset()
    for state, commands in ALLOWED.items():
        assert commands == {cmd for cmd, route in ROUTES.items() if state in route.states}
