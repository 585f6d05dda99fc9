"""Command handlers, by area, and the extension commands' argument parsers.

Each extension module brings its command types, their argument parsers (``PARSERS``, which
the parser looks up) and their handlers (routed in :mod:`mailnode.imap.dispatch`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap.handlers import compress, metadata, quota

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader

PARSERS: dict[str, Callable[[_Reader, str], c.Command]] = {
    "GETMETADATA": metadata.parse_get, "SETMETADATA": metadata.parse_set,
    "GETQUOTA": quota.parse_getquota, "GETQUOTAROOT": quota.parse_getquotaroot,
    "SETQUOTA": quota.parse_setquota, "COMPRESS": compress.parse,
}
"""Command name -> argument parser (given the reader after the name, and the tag)."""
