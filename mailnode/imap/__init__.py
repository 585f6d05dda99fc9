"""mailnode's IMAP4rev1 server: a sans-IO core (parser, session) and a thin asyncio adapter."""

from mailnode.imap.server import ImapServer

__all__ = ["ImapServer"]
