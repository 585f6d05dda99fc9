"""The SMTP submission dialogue as a sans-IO state machine: bytes in, replies and events out.

The asyncio adapter (``server``) feeds received bytes to :meth:`SmtpSession.receive`, takes
events from :meth:`SmtpSession.next_event` and writes :meth:`SmtpSession.data_to_send`. An
event that needs the node (a login, a sender, a recipient, a message, the TLS handshake) is
answered by the adapter with one of the ``*_ok`` methods or ``answer``; until then the session
reads nothing more, so pipelined commands (RFC 2920) are answered in order.

Bounded work per input: a command line is at most :data:`COMMAND_LIMIT` octets (longer ones
are dropped as they arrive and answered with a 500), a message is counted while it is read
and never held past its limit (its 552 comes after the end of data, RFC 5321 4.2.5), and a
connection may use each command at most :data:`CALL_LIMIT` times.

Every reply is one printable line (client text echoed in it is escaped) and carries an RFC
3463 enhanced status code, except the greeting, the answer to EHLO/HELO and the 3xx
continuations (RFC 2034).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError

from mailnode.guard import ByteBudget
from mailnode.logsafe import escape
from mailnode.mime.address import ADDR_SPEC
from mailnode.sasl import PlainCredentials, SaslError, b64decode_strict, parse_plain
from mailnode.smtp import replies

MAX_RECIPIENTS = 100
COMMAND_LIMIT = 512
"""Octets of a command line without its CRLF (RFC 5321 4.5.3.1.4)."""
MAIL_LIMIT = COMMAND_LIMIT + 26 + 10
"""MAIL FROM after EHLO: room for SIZE= (RFC 1870) and SMTPUTF8 (RFC 6531)."""
READ_LIMIT = 1001
"""Octets held of a line without its LF before it is dropped as too long."""
DATA_LINE_LIMIT = 1001
"""Octets of a DATA line as sent, CRLF included (998 and a dot of transparency, RFC 5321
4.5.3.1.6, with one to spare as before)."""
CALL_LIMIT = 1000
"""Times a connection may send one command (a flood of NOOPs is not free)."""
UNKNOWN_LIMIT = 5
"""Unrecognised commands before the connection is closed (not a mail client)."""
ALLOWED_BEFORE_TLS = frozenset({"NOOP", "EHLO", "STARTTLS", "QUIT"})

START_DATA = "354 End data with <CR><LF>.<CR><LF>"
USERNAME = "334 VXNlcm5hbWU6"  # base64 "Username:"
PASSWORD = "334 UGFzc3dvcmQ6"  # base64 "Password:"

SYNTAX = {
    "AUTH": "AUTH <mechanism>", "DATA": "DATA", "EHLO": "EHLO hostname",
    "HELO": "HELO hostname", "HELP": "HELP [command]", "MAIL": "MAIL FROM: <address>",
    "NOOP": "NOOP [ignored]", "QUIT": "QUIT", "RCPT": "RCPT TO: <address>", "RSET": "RSET",
    "STARTTLS": "STARTTLS", "VRFY": "VRFY <address>",
}
_EXTENDED_SYNTAX = " [SP <mail-parameters>]"  # MAIL and RCPT after EHLO

_PATH = re.compile(r"<(" + ADDR_SPEC.pattern + r")>[ \t]*+(?![(])")


def parse_path(arg: str) -> tuple[str | None, str]:
    """(address, the parameters after it) of an RFC 5321 path; None if it cannot be read,
    ``""`` for no argument. ``<local@domain>`` of dot-atoms, nearly every path a client
    sends, is read by one regular expression; anything else (quoted local parts, source
    routes, address literals, comments, a bare address) by the standard library's RFC 5322
    parser, whose reading of ``<>`` is the string ``<>`` (a null sender is never the user's
    own address; as a recipient it is no address)."""
    if not arg:
        return "", ""
    m = _PATH.match(arg)
    if m is not None:
        return m[1], arg[m.end():]
    try:
        if arg.lstrip().startswith("<"):
            angle, rest = get_angle_addr(arg)
            return angle.addr_spec, rest
        spec, rest = get_addr_spec(arg)
        return spec.addr_spec, rest
    except HeaderParseError:
        return None, ""


def _params(options: list[str]) -> dict[str, str | bool] | None:
    """``NAME[=value]`` ESMTP parameters (RFC 5321 4.1.2), None if one is malformed."""
    result: dict[str, str | bool] = {}
    for option in options:
        name, eq, value = option.partition("=")
        if not name.isalnum() or (eq and not value):
            return None
        result[name] = value if eq else True
    return result


# --- events -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Login:
    """Check these credentials: ``authenticated``, or ``answer`` with a refusal."""

    creds: PlainCredentials


@dataclass(slots=True)
class Mail:
    """May the user send as ``address``: ``sender_ok``, or ``answer`` with a refusal."""

    user: object
    address: str


@dataclass(slots=True)
class Rcpt:
    """Is ``address`` deliverable: ``recipient_ok`` (its canonical form), or ``answer``
    with a refusal."""

    address: str


@dataclass(slots=True)
class Message:
    """Submit ``content``: ``answer`` with the final reply (250 included)."""

    user: object
    recipients: list[str]
    content: bytes


class StartTls:
    """Flush the replies, then the TLS handshake: answer ``tls_started`` (or close)."""


class Close:
    """Flush the replies and close the connection; the session reads nothing more."""


Event = Login | Mail | Rcpt | Message | StartTls | Close
START_TLS = StartTls()
CLOSE = Close()

# what the session reads
_COMMAND, _DATA, _AUTH_PLAIN, _LOGIN_USER, _LOGIN_PASSWORD, _WAITING, _TLS, _CLOSED = range(8)


class SmtpSession:
    """One connection's SMTP dialogue (RFC 5321 with SIZE, 8BITMIME, SMTPUTF8, PIPELINING,
    ENHANCEDSTATUSCODES, AUTH PLAIN/LOGIN and STARTTLS), authentication required before
    MAIL. ``budget`` is shared by the listener's connections: the bytes of messages being
    received at once (each reserves its declared SIZE, or the whole limit, before its data)."""

    def __init__(self, hostname: str, max_size: int, budget: ByteBudget | None = None, *,
                 tls_offered: bool = False, tls_active: bool = False,
                 plain_required: bool = False) -> None:
        self.hostname = hostname
        self.max_size = max_size
        self.budget = budget
        self.tls_offered = tls_offered
        """STARTTLS is available (a context, and not yet in TLS)."""
        self.tls_active = tls_active
        self.plain_required = plain_required
        """Beyond loopback: nothing but EHLO, NOOP, STARTTLS and QUIT before TLS."""
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._state = _COMMAND
        self._drop_line: str | None = None  # reply once the overlong line being dropped ends
        self._calls: dict[str, int] = {}
        self._unknown = 0
        self._commands = {
            "AUTH": self._auth, "DATA": self._data_command, "EHLO": self._ehlo,
            "EXPN": self._expn, "HELO": self._helo, "HELP": self._help, "MAIL": self._mail,
            "NOOP": self._noop, "QUIT": self._quit, "RCPT": self._rcpt, "RSET": self._rset,
            "STARTTLS": self._starttls, "VRFY": self._vrfy,
        }
        # the session (reset by EHLO/HELO and STARTTLS)
        self.helo = ""
        self.extended = False
        self.user: object = None
        self._owner: object = None
        # the mail transaction (reset by RSET, EHLO/HELO and the end of DATA)
        self.mail_from: str | None = None
        self._declared: int | None = None
        """The SIZE the client declared with MAIL FROM (RFC 1870), at most ``max_size``."""
        self.recipients: list[str] = []
        # DATA
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._reserved = 0
        self._overflow: str | None = None
        self._long_line = False  # inside an overlong DATA line, dropping it
        self._login_name = b""
        self._pending = ""  # which command's event awaits its answer
        self._reply(f"220 {hostname} mailnode ESMTP", raw=True)

    # --- the adapter's side ------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the client (anything after STARTTLS, until the handshake, is dropped:
        RFC 3207 section 6)."""
        if self._state < _TLS:
            self._buf += data

    def buffered(self) -> int:
        """Received bytes not yet read (the adapter stops reading beyond a bound)."""
        return len(self._buf)

    def held(self) -> int:
        """Bytes of the message being received that are kept (never more than its limit)."""
        return sum(map(len, self._parts))

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """Read what was received until an event needs the adapter; None when more input
        (or an answer to the last event) is needed first."""
        while True:
            state = self._state
            if state == _COMMAND:
                line = self._line()
                if line is None:
                    return None
                event = self._command(line)
                if event is not None:
                    return event
            elif state == _DATA:
                message = self._read_data()
                if message is None:
                    if self._state == _DATA:
                        return None
                else:
                    return message
            elif state in (_AUTH_PLAIN, _LOGIN_USER, _LOGIN_PASSWORD):
                line = self._line()
                if line is None:
                    if self._state != state:  # an overlong response ended the exchange
                        continue
                    return None
                event = self._auth_response(line)
                if event is not None:
                    return event
            else:
                return None

    def answer(self, reply: str) -> None:
        """The pending event is answered with ``reply``: a refusal, or a message's result."""
        if self._pending == "DATA":
            self._release()
        self._answered()
        self._reply(reply)

    def authenticated(self, user: object, owner: object) -> None:
        """The login succeeded as ``user``; ``owner`` counts its share of the budget."""
        self.user = user
        self._owner = owner
        self._answered()
        self._reply(replies.AUTH_OK)

    def sender_ok(self, address: str) -> None:
        self.mail_from = address
        self._answered()
        self._reply(replies.SENDER_OK)

    def recipient_ok(self, canonical: str) -> None:
        self.recipients.append(canonical)
        self._answered()
        self._reply(replies.RECIPIENT_OK)

    def tls_started(self) -> None:
        """The handshake is done: a new session over TLS (RFC 3207 section 4.2)."""
        self.tls_active = True
        self.tls_offered = False
        self.helo = ""
        self.extended = False
        self.user = None
        self._reset_transaction()
        self._buf.clear()
        self._state = _COMMAND

    def close_with(self, reply: str) -> Close:
        """Answer the pending event with ``reply`` and end the session (a locked-out
        source is not heard further)."""
        self.answer(reply)
        return self._close_quietly()

    def close(self) -> None:
        """The connection is gone: give back the budget share of a message being read."""
        self._release()
        self._state = _CLOSED
        self._buf.clear()

    # --- reading ------------------------------------------------------------------------------

    def _reply(self, text: str, *, raw: bool = False) -> None:
        if not raw:
            text = escape(text)
        self._out.append(text.encode() + b"\r\n")

    def _answered(self) -> None:
        self._pending = ""
        if self._state == _WAITING:
            self._state = _COMMAND

    def _wait(self, command: str, event: Event) -> Event:
        self._pending = command
        self._state = _WAITING
        return event

    def _line(self) -> bytes | None:
        """The next line without its LF (CRs before it stay), or None for more input. A line
        longer than READ_LIMIT is dropped as it arrives and answered when it ends."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > READ_LIMIT:
                    if self._drop_line is None:
                        self._drop_line = (replies.COMMAND_TOO_LONG if self._state == _COMMAND
                                           else replies.LINE_TOO_LONG)
                    buf.clear()
                return None
            line = bytes(buf[:end])
            del buf[:end + 1]
            if end > READ_LIMIT and self._drop_line is None:
                self._drop_line = (replies.COMMAND_TOO_LONG if self._state == _COMMAND
                                   else replies.LINE_TOO_LONG)
            if self._drop_line is None:
                return line
            reply, self._drop_line = self._drop_line, None
            self._reply(reply)
            if self._state != _COMMAND:  # an overlong SASL response ends the exchange
                self._state = _COMMAND
                return None

    def _command(self, line: bytes) -> Event | None:
        line = line.rstrip(b"\r\n")
        if not line:
            self._reply(replies.SYNTAX_ERROR)
            return None
        name_bytes, _, arg_bytes = line.partition(b" ")
        try:
            name = name_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            self._reply(replies.SYNTAX_ERROR)
            return None
        if len(line) > (MAIL_LIMIT if self.extended and name == "MAIL" else COMMAND_LIMIT):
            self._reply(replies.COMMAND_TOO_LONG)
            return None
        if self.plain_required and not self.tls_active and name not in ALLOWED_BEFORE_TLS:
            self._reply(replies.MUST_STARTTLS)
            return None
        calls = self._calls.get(name, 0) + 1
        if calls > CALL_LIMIT:
            return self._close(replies.CALL_LIMIT.format(command=name))
        self._calls[name] = calls
        handler = self._commands.get(name)
        if handler is None:
            self._unknown += 1
            if self._unknown >= UNKNOWN_LIMIT:
                return self._close(replies.TOO_MANY_UNKNOWN)
            self._reply(replies.UNKNOWN_COMMAND.format(command=name))
            return None
        return handler(arg_bytes.strip().decode("utf-8", "surrogateescape"))

    def _close(self, reply: str) -> Close:
        self._reply(reply)
        return self._close_quietly()

    def _close_quietly(self) -> Close:
        self._state = _CLOSED
        self._buf.clear()
        return CLOSE

    # --- commands -----------------------------------------------------------------------------

    def _helo(self, arg: str) -> Event | None:
        if not arg:
            self._reply(replies.SYNTAX.format(syntax=SYNTAX["HELO"]))
            return None
        self._reset_transaction()
        self.helo = arg
        self.extended = False
        self._reply(f"250 {self.hostname}", raw=True)
        return None

    def _ehlo(self, arg: str) -> Event | None:
        if not arg:
            self._reply(replies.SYNTAX.format(syntax=SYNTAX["EHLO"]))
            return None
        self._reset_transaction()
        self.helo = arg
        self.extended = True
        lines = [self.hostname, f"SIZE {self.max_size}", "8BITMIME", "SMTPUTF8", "PIPELINING"]
        if self.tls_offered:
            lines.append("STARTTLS")
        if not self.plain_required or self.tls_active:
            lines.append("AUTH LOGIN PLAIN")
        lines += ["ENHANCEDSTATUSCODES", "HELP"]
        last = len(lines) - 1
        self._out.append("".join(f"250{' ' if i == last else '-'}{text}\r\n"
                                 for i, text in enumerate(lines)).encode())
        return None

    def _noop(self, arg: str) -> Event | None:
        self._reply(replies.OK)
        return None

    def _rset(self, arg: str) -> Event | None:
        if arg:
            self._reply(replies.SYNTAX.format(syntax=SYNTAX["RSET"]))
            return None
        self._reset_transaction()
        self._reply(replies.OK)
        return None

    def _quit(self, arg: str) -> Event | None:
        if arg:
            self._reply(replies.SYNTAX.format(syntax=SYNTAX["QUIT"]))
            return None
        return self._close(replies.BYE)

    def _expn(self, arg: str) -> Event | None:
        self._reply(replies.EXPN_NOT_IMPLEMENTED)
        return None

    def _starttls(self, arg: str) -> Event | None:
        if arg:
            self._reply(replies.SYNTAX.format(syntax=SYNTAX["STARTTLS"]))
            return None
        if not self.tls_offered:
            self._reply(replies.TLS_NOT_AVAILABLE)
            return None
        self._reply(replies.READY_FOR_TLS)
        self._state = _TLS
        self._buf.clear()  # pipelined plaintext after STARTTLS is never read (RFC 3207)
        return START_TLS

    def _help(self, arg: str) -> Event | None:
        if self.user is None:
            self._reply(replies.AUTH_REQUIRED)
            return None
        available = [n for n in SYNTAX if n != "STARTTLS" or self.tls_offered]
        if arg:
            name = arg.upper()
            if name in available:
                text = SYNTAX[name]
                if self.extended and name in ("MAIL", "RCPT"):
                    text += _EXTENDED_SYNTAX
                self._reply(replies.HELP_SYNTAX.format(syntax=text))
                return None
            self._reply(replies.HELP_UNKNOWN.format(commands=" ".join(available)))
            return None
        self._reply(replies.HELP.format(commands=" ".join(available)))
        return None

    def _vrfy(self, arg: str) -> Event | None:
        if self.user is None:
            self._reply(replies.AUTH_REQUIRED)
        elif not arg:
            self._reply(replies.SYNTAX.format(syntax=SYNTAX["VRFY"]))
        elif parse_path(arg)[0] is None:
            self._reply(replies.COULD_NOT_VRFY.format(argument=arg))
        else:
            self._reply(replies.CANNOT_VRFY)
        return None

    def _auth(self, arg: str) -> Event | None:
        if not self.helo:
            self._reply(replies.SEND_FIRST.format(command="EHLO"))
        elif not self.extended:
            self._reply(replies.UNKNOWN_COMMAND.format(command="AUTH"))
        elif self.plain_required and not self.tls_active:
            self._reply(replies.AUTH_NEEDS_TLS)
        elif self.user is not None:
            self._reply(replies.ALREADY_AUTHENTICATED)
        elif not arg:
            self._reply(replies.AUTH_NO_MECHANISM)
        else:
            args = arg.split()
            mechanism = args[0].upper()
            if len(args) > 2:
                self._reply(replies.AUTH_TOO_MANY_ARGUMENTS)
            elif mechanism == "PLAIN":
                if len(args) == 1:
                    self._reply("334 ", raw=True)
                    self._state = _AUTH_PLAIN
                    return None
                return self._plain(args[1].encode("utf-8", "surrogateescape"))
            elif mechanism == "LOGIN":
                if len(args) == 1:
                    self._reply(USERNAME, raw=True)
                    self._state = _LOGIN_USER
                    return None
                try:
                    self._login_name = b64decode_strict(args[1].encode("utf-8",
                                                                        "surrogateescape"))
                except SaslError:
                    self._reply(replies.AUTH_MALFORMED)
                    return None
                self._reply(PASSWORD, raw=True)
                self._state = _LOGIN_PASSWORD
            else:
                self._reply(replies.AUTH_UNKNOWN_MECHANISM)
        return None

    def _plain(self, blob: bytes) -> Event | None:
        try:
            creds = parse_plain(b64decode_strict(blob))
        except SaslError:
            self._reply(replies.AUTH_MALFORMED)
            return None
        return self._wait("AUTH", Login(creds))

    def _auth_response(self, line: bytes) -> Event | None:
        """A client's line in a SASL exchange (RFC 4954 section 4): ``*`` aborts it."""
        state, self._state = self._state, _COMMAND
        blob = line.strip()
        if blob == b"*":
            self._reply(replies.AUTH_ABORTED)
            return None
        if state == _AUTH_PLAIN:
            return self._plain(blob)
        try:
            decoded = b64decode_strict(blob)
        except SaslError:
            self._reply(replies.AUTH_MALFORMED)
            return None
        if state == _LOGIN_USER:
            self._login_name = decoded
            self._reply(PASSWORD, raw=True)
            self._state = _LOGIN_PASSWORD
            return None
        try:
            creds = PlainCredentials("", self._login_name.decode(), decoded.decode())
        except UnicodeDecodeError:
            self._reply(replies.AUTH_MALFORMED)
            return None
        finally:
            self._login_name = b""
        return self._wait("AUTH", Login(creds))

    def _ready_for(self) -> bool:
        """EHLO/HELO and a login came first; otherwise say so."""
        if not self.helo:
            self._reply(replies.SEND_FIRST.format(command="HELO"))
            return False
        if self.user is None:
            self._reply(replies.AUTH_REQUIRED)
            return False
        return True

    def _path(self, command: str, arg: str, keyword: str
              ) -> tuple[str, dict[str, str | bool]] | None:
        """The address and upper-cased parameters of MAIL or RCPT, or None (answered)."""
        syntax = replies.SYNTAX.format(syntax=SYNTAX[command] + (
            _EXTENDED_SYNTAX if self.extended else ""))
        if arg[:len(keyword)].upper() != keyword or not arg:
            self._reply(syntax)
            return None
        address, rest = parse_path(arg[len(keyword):].strip())
        if address is None:
            self._reply(replies.MALFORMED_ADDRESS)
            return None
        if not address or (rest and not self.extended):
            self._reply(syntax)
            return None
        if command == "MAIL" and self.mail_from is not None:
            self._reply(replies.NESTED_MAIL)
            return None
        params = _params(rest.upper().split())
        if params is None:
            self._reply(syntax)
            return None
        return address, params

    def _mail(self, arg: str) -> Event | None:
        if not self._ready_for():
            return None
        parsed = self._path("MAIL", arg, "FROM:")
        if parsed is None:
            return None
        address, params = parsed
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            self._reply(replies.BAD_BODY)
            return None
        if params.pop("SMTPUTF8", True) is not True:
            self._reply(replies.SMTPUTF8_ARGUMENT)
            return None
        size = params.pop("SIZE", None)
        if size is not None:
            if not isinstance(size, str) or not (size.isascii() and size.isdigit()):
                self._reply(replies.SYNTAX.format(
                    syntax=SYNTAX["MAIL"] + _EXTENDED_SYNTAX))
                return None
            if int(size) > self.max_size:
                self._reply(replies.TOO_BIG.format(limit=replies.size_text(self.max_size)))
                return None
        if params:
            self._reply(replies.MAIL_PARAMETERS)
            return None
        self._declared = None if size is None else int(size)
        return self._wait("MAIL", Mail(self.user, address))

    def _rcpt(self, arg: str) -> Event | None:
        if not self._ready_for():
            return None
        if self.mail_from is None:
            self._reply(replies.NEED_MAIL)
            return None
        parsed = self._path("RCPT", arg, "TO:")
        if parsed is None:
            return None
        address, params = parsed
        if params:
            self._reply(replies.RCPT_PARAMETERS)
            return None
        if len(self.recipients) >= MAX_RECIPIENTS:
            self._reply(replies.TOO_MANY_RECIPIENTS)
            return None
        return self._wait("RCPT", Rcpt(address))

    def _data_command(self, arg: str) -> Event | None:
        """DATA within the listener's budget: a message reserves its declared SIZE (RFC 1870;
        the whole limit when undeclared) before it is read, and may not exceed what it
        declared by more than a little; what does not fit is told to try again shortly."""
        if not self._ready_for():
            return None
        if not self.recipients:
            self._reply(replies.NEED_RCPT)
            return None
        if arg:
            self._reply(replies.SYNTAX.format(syntax=SYNTAX["DATA"]))
            return None
        declared = self._declared
        size = self.max_size if declared is None else min(
            self.max_size, declared + declared // 10 + 4096)
        if self.budget is not None and not self.budget.reserve(size, self._owner):
            self._reply(replies.BUSY)
            return None
        self._reserved = size
        self._limit = size
        self._size = 0
        self._overflow = None
        self._long_line = False
        self._parts = []
        self._reply(START_DATA, raw=True)
        self._state = _DATA
        return None

    # --- DATA ---------------------------------------------------------------------------------

    def _read_data(self) -> Message | None:
        """Take complete lines of the message; at the end-of-data line, the message (None
        when refused: the reply is queued). Only complete lines are taken, so the text
        taken always ends at a line start and ``CRLF . CRLF`` cannot be split."""
        buf = self._buf
        if self._long_line:
            end = buf.find(b"\r\n")
            if end < 0:
                keep = 1 if buf.endswith(b"\r") else 0  # perhaps half of the CRLF
                self._size += len(buf) - keep
                del buf[:len(buf) - keep]
                return None
            self._size += end + 2
            del buf[:end + 2]
            self._long_line = False
        if buf.startswith(b".\r\n"):
            del buf[:3]
            return self._end_of_data()
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._take(bytes(buf[:end + 2]))
            del buf[:end + 5]
            return self._end_of_data()
        last = buf.rfind(b"\r\n")
        if last >= 0:
            self._take(bytes(buf[:last + 2]))
            del buf[:last + 2]
        if len(buf) > DATA_LINE_LIMIT:  # a partial line already too long: drop it
            self._overflowed(replies.DATA_LINE_TOO_LONG)
            self._size += len(buf) - (1 if buf.endswith(b"\r") else 0)
            del buf[:len(buf) - (1 if buf.endswith(b"\r") else 0)]
            self._long_line = True
        return None

    def _take(self, lines: bytes) -> None:
        """Complete lines of the message as sent (dot-stuffed)."""
        self._size += len(lines)
        if self._overflow is not None:
            return
        if self._size > self._limit:
            self._overflowed(replies.TOO_BIG if self._limit >= self.max_size
                             else replies.OVER_DECLARED)
        elif len(lines) > DATA_LINE_LIMIT and max(
                map(len, lines.split(b"\r\n"))) > DATA_LINE_LIMIT - 2:
            self._overflowed(replies.DATA_LINE_TOO_LONG)
        else:
            self._parts.append(lines)

    def _overflowed(self, reply: str) -> None:
        """The first limit exceeded is the one answered; nothing more is kept."""
        if self._overflow is None:
            self._overflow = reply
        self._parts = []

    def _end_of_data(self) -> Message | None:
        parts, overflow = self._parts, self._overflow
        self._parts = []
        self._overflow = None
        user, recipients = self.user, self.recipients
        self._reset_transaction()
        if overflow is not None:
            self._state = _COMMAND
            self._release()
            self._reply(overflow.format(limit=replies.size_text(self.max_size)))
            return None
        content = b"".join(parts)
        if content.startswith(b"."):  # transparency (RFC 5321 4.5.2)
            content = content[1:]
        if b"\r\n." in content:
            content = content.replace(b"\r\n.", b"\r\n")
        self._pending = "DATA"
        self._state = _WAITING
        return Message(user, recipients, content)

    def _release(self) -> None:
        if self._reserved and self.budget is not None:
            self.budget.release(self._reserved, self._owner)
        self._reserved = 0

    def _reset_transaction(self) -> None:
        self.mail_from = None
        self._declared = None
        self.recipients = []
