"""Advertising and handling cannot drift apart: every command is core or registered."""

from __future__ import annotations

from mailnode.imap import commands as c
from mailnode.imap.capabilities import ADVERTISED, CORE_COMMANDS, EXTENSION_COMMANDS, REGISTRY
from mailnode.imap.session import ALLOWED, State, capabilities


def test_every_command_is_core_or_brought_by_an_advertised_capability() -> None:
    assert set(c.NAMES) == CORE_COMMANDS | EXTENSION_COMMANDS


def test_names_are_unique_and_all_advertised_after_login() -> None:
    assert len({cap.name for cap in REGISTRY}) == len(REGISTRY)
    assert capabilities(State.AUTHENTICATED).split() == list(ADVERTISED)


def test_every_registered_command_runs_in_some_state() -> None:
    for cmd in EXTENSION_COMMANDS:
        assert any(cmd in allowed for allowed in ALLOWED.values()), cmd
