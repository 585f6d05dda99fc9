"""The one registry of what the server advertises, tied to the code that implements it.

A capability is advertised only if it is listed here, and a command that belongs to an
extension names it here, so advertising and handling cannot drift apart: a test checks that
every command class is either IMAP4rev1's or brought by a registered capability. Extensions
that ENABLE switches on (RFC 5161) say so, and the session keeps the set a client enabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailnode.imap import commands as c
from mailnode.imap.handlers import compress, metadata, quota


@dataclass(frozen=True)
class Capability:
    name: str
    commands: frozenset[type[c.Command]] = field(default_factory=frozenset)
    """Commands that exist only because of this extension."""
    enablable: bool = False
    """Whether ENABLE may name it (its responses change once enabled)."""


def _cap(name: str, *commands: type[c.Command], enablable: bool = False) -> Capability:
    return Capability(name, frozenset(commands), enablable)


CORE_COMMANDS: frozenset[type[c.Command]] = frozenset({
    c.Capability, c.Noop, c.Logout, c.Login, c.Authenticate, c.StartTls, c.Select, c.Status,
    c.Create, c.Delete, c.Rename, c.Subscribe, c.ListCmd, c.Append, c.Check, c.Close,
    c.Expunge, c.Fetch, c.StoreCmd, c.Search, c.Copy,
})
"""RFC 3501's commands (STARTTLS is advertised only where the listener offers TLS)."""

REGISTRY: tuple[Capability, ...] = (
    _cap("IMAP4rev1"),
    _cap("LITERAL+"),
    _cap("ID", c.Id),
    _cap("ENABLE", c.Enable),
    _cap("IDLE", c.Idle),
    _cap("NAMESPACE", c.Namespace),
    _cap("UIDPLUS"),
    _cap("SORT", c.SortCmd),
    _cap("SORT=DISPLAY"),
    _cap("THREAD=ORDEREDSUBJECT", c.ThreadCmd),
    _cap("THREAD=REFERENCES", c.ThreadCmd),
    _cap("UNSELECT", c.Unselect),
    _cap("CHILDREN"),
    _cap("SPECIAL-USE"),
    _cap("MOVE"),
    _cap("ESEARCH"),
    _cap("ESORT"),
    _cap("CONTEXT=SEARCH", c.CancelUpdate),
    _cap("CONTEXT=SORT", c.CancelUpdate),
    _cap("SEARCHRES"),
    _cap("METADATA", metadata.GetMetadata, metadata.SetMetadata),
    _cap("QUOTA", quota.GetQuota, quota.GetQuotaRoot, quota.SetQuota),
    _cap("QUOTA=RES-STORAGE"),
    _cap("STATUS=SIZE"),
    _cap("COMPRESS=DEFLATE", compress.Compress),
    _cap("LIST-EXTENDED"),
    _cap("LIST-STATUS"),
    _cap("BINARY"),
    _cap("MULTIAPPEND", c.AppendMany),
    _cap("CATENATE", c.AppendMany),
    _cap("UTF8=ACCEPT", enablable=True),
)
"""Advertised after login, in this order."""

PRE_AUTH: tuple[str, ...] = ("SASL-IR", "AUTH=PLAIN")
"""Advertised before login where a password may be sent (with TLS, or on loopback)."""

ADVERTISED: tuple[str, ...] = tuple(cap.name for cap in REGISTRY)
ENABLABLE: frozenset[str] = frozenset(cap.name for cap in REGISTRY if cap.enablable)
EXTENSION_COMMANDS: frozenset[type[c.Command]] = frozenset(
    cmd for cap in REGISTRY for cmd in cap.commands)
