"""RFC 9208 QUOTA: the node's per-user storage quota (``user_quota_mb``), and the STATUS items
that go with it (RFC 8438 SIZE, RFC 9051 DELETED, RFC 9208 DELETED-STORAGE).

Each user has one quota root, named "" , covering every one of their mailboxes. Its one
resource is STORAGE (the sum of the user's messages' RFC822.SIZE, in units of 1024 octets):
the store refuses an APPEND or COPY past it with ``[OVERQUOTA]``. The limit is the node
operator's, so SETQUOTA is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailnode.imap import commands as c
from mailnode.imap import responses as r
from mailnode.imap.errors import CommandNo
from mailnode.store.api import Mailbox, Usage

if TYPE_CHECKING:
    from mailnode.imap.parser import _Reader
    from mailnode.imap.session import ImapSession

ROOT = ""
STATUS_ITEMS = frozenset({"SIZE", "DELETED", "DELETED-STORAGE"})
"""STATUS items computed here from the mailbox's listing (sizes and flags)."""


@dataclass(frozen=True)
class GetQuota(c.Command):
    root: str


@dataclass(frozen=True)
class GetQuotaRoot(c.Command):
    mailbox: str


@dataclass(frozen=True)
class SetQuota(c.Command):
    root: str


c.NAMES.update({GetQuota: "GETQUOTA", GetQuotaRoot: "GETQUOTAROOT", SetQuota: "SETQUOTA"})


def parse_getquota(rd: _Reader, tag: str) -> c.Command:
    rd.sp()
    root = rd.text_value(rd.astring())
    rd.end()
    return GetQuota(tag, root)


def parse_getquotaroot(rd: _Reader, tag: str) -> c.Command:
    rd.sp()
    mailbox = rd.mailbox()
    rd.end()
    return GetQuotaRoot(tag, mailbox)


def parse_setquota(rd: _Reader, tag: str) -> c.Command:
    """``SETQUOTA root (resource limit ...)``: parsed in full so that a malformed one gets
    BAD, then refused."""
    rd.sp()
    root = rd.text_value(rd.astring())
    rd.sp()

    def resource() -> None:
        rd.atom()
        rd.sp()
        rd.number()

    rd.paren_list(resource)
    rd.end()
    return SetQuota(tag, root)


def kib(octets: int) -> int:
    """Octets in RFC 9208's units of 1024 octets, rounded up (a used byte is never free)."""
    return -(-octets // 1024)


def quota_response(usage: Usage) -> r.QuotaData | None:
    """``QUOTA "" (STORAGE used limit)``, or None when the user has no limit (RFC 9208 has
    no way to say "unlimited": the root then has no resources and is not reported)."""
    if usage.limit is None:
        return None
    return r.QuotaData(ROOT, kib(usage.storage), usage.limit // 1024)


async def do_getquota(session: ImapSession, cmd: GetQuota) -> str:
    assert session.user is not None
    line = quota_response(await session.store.usage(session.user.id))
    if cmd.root != ROOT or line is None:
        raise CommandNo("No such quota root", "NONEXISTENT")
    session.emit(line)
    return "GETQUOTA completed"


async def do_getquotaroot(session: ImapSession, cmd: GetQuotaRoot) -> str:
    assert session.user is not None
    await session._mailbox(cmd.mailbox)
    line = quota_response(await session.store.usage(session.user.id))
    name = session.wire_name(cmd.mailbox)
    session.emit(r.QuotaRootData(name, [ROOT] if line else []))
    if line is not None:
        session.emit(line)
    return "GETQUOTAROOT completed"


async def do_setquota(session: ImapSession, cmd: SetQuota) -> str:
    raise CommandNo("Quotas are set by the node's operator (user_quota_mb)", "NOPERM")


async def status_values(session: ImapSession, mailbox: Mailbox, items: tuple[str, ...],
                        ) -> dict[str, int]:
    """SIZE (octets of all messages), DELETED (messages flagged \\Deleted) and
    DELETED-STORAGE (their octets, in 1024-octet units: what EXPUNGE would free), from the
    mailbox's listing, which the store keeps cached."""
    if not STATUS_ITEMS.intersection(items):
        return {}
    metas = await session.store.list_messages(mailbox.id)
    deleted = [m.size for m in metas if "\\Deleted" in m.flags]
    return {"SIZE": sum(m.size for m in metas), "DELETED": len(deleted),
            "DELETED-STORAGE": kib(sum(deleted))}
