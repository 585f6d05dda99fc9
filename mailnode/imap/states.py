"""The states of an IMAP session (RFC 3501 §3), in a module of their own so that the session,
the command table and the handler modules can all name them without importing each other."""

from __future__ import annotations

import enum


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
"""Logged in, with or without a selected mailbox."""
SELECTED = frozenset({State.SELECTED})
