"""Errors that carry their IMAP response (status, code, text): the session turns them into a
tagged reply (``responses.Tagged``), the one place replies are formatted."""

from __future__ import annotations


class ImapError(Exception):
    """A command failed; ``status`` is ``NO`` or ``BAD``, ``code`` an optional response code."""

    status = "NO"

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class CommandNo(ImapError):
    """The command was understood but cannot be carried out (tagged NO)."""

    status = "NO"


class CommandBad(ImapError):
    """The command is not allowed or its arguments make no sense (tagged BAD)."""

    status = "BAD"


class ParseError(CommandBad):
    """Input that is not a valid command; ``tag`` is set when one could be read.

    ``fatal`` means the byte stream can no longer be framed (line flood, oversized
    non-synchronising literal), so the connection must be closed after the reply.
    """

    def __init__(self, text: str, tag: str | None = None, *, code: str | None = None,
                 fatal: bool = False) -> None:
        super().__init__(text, code)
        self.tag = tag
        self.fatal = fatal


class InvalidMailboxName(ParseError):
    """A well-formed mailbox argument that is not valid modified UTF-7: the command is
    syntactically fine, the name just cannot exist, so the reply is NO (RFC 3501 5.1.3;
    clients treat BAD as a protocol bug)."""

    status = "NO"
