"""Extension commands kept out of the session: each module brings its command types, their
argument parsers and their handlers; this table is what the parser and the session look up.

A handler is ``async (session, command) -> text of the tagged OK``; it raises ImapError (or a
StoreError) like the session's own handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mailnode.imap import commands as c
from mailnode.imap.handlers import compress, metadata, quota

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader
    from mailnode.imap.session import ImapSession

Handler = Callable[["ImapSession", Any], Awaitable[str]]

PARSERS: dict[str, Callable[[_Reader, str], c.Command]] = {
    "GETMETADATA": metadata.parse_get, "SETMETADATA": metadata.parse_set,
    "GETQUOTA": quota.parse_getquota, "GETQUOTAROOT": quota.parse_getquotaroot,
    "SETQUOTA": quota.parse_setquota, "COMPRESS": compress.parse,
}
"""Command name -> argument parser (given the reader after the name, and the tag)."""

HANDLERS: dict[type[c.Command], Handler] = {
    metadata.GetMetadata: metadata.do_get, metadata.SetMetadata: metadata.do_set,
    quota.GetQuota: quota.do_getquota, quota.GetQuotaRoot: quota.do_getquotaroot,
    quota.SetQuota: quota.do_setquota, compress.Compress: compress.do_compress,
}

AUTHENTICATED: frozenset[type[c.Command]] = frozenset(HANDLERS)
"""All of them run once logged in, selected or not."""
