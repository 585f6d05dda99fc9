"""The sans-IO SMTP dialogue over bytes: pipelining, transparency, the limits while reading,
SASL exchanges, command order, STARTTLS; and any stream of bytes gets well-formed replies."""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.guard import ByteBudget
from mailnode.sasl import PlainCredentials
from mailnode.smtp import replies
from mailnode.smtp.protocol import (
    CALL_LIMIT,
    READ_LIMIT,
    Close,
    Event,
    Login,
    Mail,
    Message,
    Rcpt,
    SmtpSession,
    StartTls,
)

USER = "alice"
SECRET = "pw"
PLAIN = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw")
LINE = re.compile(rb"^(\d{3})([ -])([\x20-\x7e\x80-\xff]*)\r\n$")
ENHANCED = re.compile(rb"^([245])\.\d{1,3}\.\d{1,3}( |$)")


class Client:
    """Feeds a session and answers its events as the adapter would, with a fake node: the
    password ``pw`` logs ``alice`` in, every sender and recipient is fine, every message is
    queued (kept in ``messages``)."""

    def __init__(self, session: SmtpSession | None = None, *, answer: bool = True) -> None:
        self.session = session or SmtpSession("mx.test", 10_000, ByteBudget(40_000))
        self.answer = answer
        self.events: list[Event] = []
        self.messages: list[Message] = []
        self.closed = False
        self.tls = False

    def send(self, data: bytes) -> list[bytes]:
        """Feed ``data``; the reply lines it produced (greeting included on first use)."""
        self.session.receive(data)
        self.pump()
        return self.replies()

    def replies(self) -> list[bytes]:
        out = self.session.data_to_send()
        return [line + b"\r\n" for line in out.split(b"\r\n")[:-1]]

    def pump(self) -> None:
        while (event := self.session.next_event()) is not None:
            self.events.append(event)
            if not self.answer:
                return
            self.respond(event)

    def respond(self, event: Event) -> None:
        session = self.session
        if isinstance(event, Login):
            if event.creds.login == USER and event.creds.password == SECRET:
                session.authenticated(USER, USER)
            else:
                session.answer(replies.AUTH_FAILED)
        elif isinstance(event, Mail):
            session.sender_ok(event.address)
        elif isinstance(event, Rcpt):
            session.recipient_ok(event.address.lower())
        elif isinstance(event, Message):
            self.messages.append(event)
            session.answer(replies.QUEUED.format(queue_id=len(self.messages)))
        elif isinstance(event, StartTls):
            self.tls = True
        elif isinstance(event, Close):
            self.closed = True


def codes(lines: list[bytes]) -> list[bytes]:
    return [line[:3] for line in lines]


def logged_in(**settings: bool) -> Client:
    client = Client(SmtpSession("mx.test", 10_000, ByteBudget(40_000), **settings))
    client.send(b"EHLO c\r\n" + PLAIN + b"\r\n")
    return client


def transaction(body: bytes, size: int | None = None) -> bytes:
    option = b"" if size is None else b" SIZE=%d" % size
    return (b"MAIL FROM:<alice@mx.test>" + option + b"\r\nRCPT TO:<Bob@mx.test>\r\nDATA\r\n"
            + body + b".\r\n")


def stuff(text: bytes) -> bytes:
    """Dot-stuff a message of CRLF lines as a client does (RFC 5321 4.5.2)."""
    return b"".join(b"." + line if line.startswith(b".") else line
                    for line in text.splitlines(keepends=True))


def test_greeting_and_ehlo() -> None:
    client = Client()
    assert client.send(b"") == [b"220 mx.test mailnode ESMTP\r\n"]
    lines = client.send(b"EHLO c\r\n")
    assert lines == [b"250-mx.test\r\n", b"250-SIZE 10000\r\n", b"250-8BITMIME\r\n",
                     b"250-SMTPUTF8\r\n", b"250-PIPELINING\r\n", b"250-AUTH LOGIN PLAIN\r\n",
                     b"250-ENHANCEDSTATUSCODES\r\n", b"250 HELP\r\n"]
    assert client.send(b"HELO c\r\n") == [b"250 mx.test\r\n"]
    tls = Client(SmtpSession("mx.test", 100, tls_offered=True, plain_required=True))
    tls.send(b"")
    lines = tls.send(b"EHLO c\r\n")
    assert b"250-STARTTLS\r\n" in lines and not any(b"AUTH" in line for line in lines)


def test_a_pipelined_transaction_is_answered_in_order() -> None:
    client = Client()
    client.send(b"")
    lines = client.send(b"EHLO c\r\n" + PLAIN + b"\r\n" + transaction(b"Hi\r\n") + b"NOOP\r\n"
                        + transaction(b"Again\r\n") + b"QUIT\r\n")
    assert codes(lines[8:]) == [b"235", b"250", b"250", b"354", b"250", b"250", b"250", b"250",
                                b"354", b"250", b"221"]
    assert [m.content for m in client.messages] == [b"Hi\r\n", b"Again\r\n"]
    assert client.messages[0].recipients == ["bob@mx.test"] and client.closed


def test_nothing_more_is_read_while_an_event_waits_for_its_answer() -> None:
    client = Client(answer=False)
    client.send(b"EHLO c\r\n" + PLAIN + b"\r\nNOOP\r\nNOOP\r\n")
    assert isinstance(client.events[-1], Login)
    assert client.session.next_event() is None and client.replies() == []
    assert client.session.buffered() == len(b"NOOP\r\nNOOP\r\n")
    client.session.authenticated(USER, USER)
    assert client.session.next_event() is None
    assert client.replies() == [b"235 2.7.0 Authentication successful\r\n",
                                b"250 2.0.0 OK\r\n", b"250 2.0.0 OK\r\n"]


def test_transparency_and_the_end_of_data_in_any_chunks() -> None:
    text = b"..starts with a dot\r\n.\r\nx.\r\n.hidden\r\n\r\n"
    whole = logged_in()
    whole.send(transaction(stuff(text)))
    assert whole.messages[0].content == text
    for step in (1, 2, 3, 7):  # the end-of-data line split at every place
        client = logged_in()
        data = transaction(stuff(text)) + b"NOOP\r\n"
        replies_seen = []
        for at in range(0, len(data), step):
            replies_seen += client.send(data[at:at + step])
        assert [m.content for m in client.messages] == [text], step
        assert codes(replies_seen)[-2:] == [b"250", b"250"]


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=30).map(
           lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=12),
       cuts=st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_any_message_arrives_exactly_as_written(lines: list[bytes], cuts: list[int]) -> None:
    text = b"".join(line + b"\r\n" for line in lines)
    client = logged_in()
    data = transaction(stuff(text))
    at, i = 0, 0
    while at < len(data):
        step = cuts[i % len(cuts)]
        client.send(data[at:at + step])
        at, i = at + step, i + 1
    assert [m.content for m in client.messages] == [text]


def test_the_size_limit_holds_while_reading_and_is_answered_after_the_data() -> None:
    client = logged_in()
    client.send(b"MAIL FROM:<alice@mx.test>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n")
    chunk = (b"y" * 98 + b"\r\n") * 10
    for _ in range(100):  # 100 KB against a 10 KB limit
        assert client.send(chunk) == []  # no early reply (RFC 5321 4.2.5)
        assert client.session.held() <= 10_000 and client.session.buffered() <= READ_LIMIT
    assert client.send(b".\r\nNOOP\r\n") == [b"552 5.3.4 Message too big: limit 9.8 KB\r\n",
                                              b"250 2.0.0 OK\r\n"]
    assert client.messages == [] and client.session.budget is not None
    assert client.session.budget.used == 0  # its share is back


def test_size_declared_at_mail() -> None:
    client = logged_in()
    assert client.send(b"MAIL FROM:<alice@mx.test> SIZE=10001\r\n") == [
        b"552 5.3.4 Message too big: limit 9.8 KB\r\n"]
    lines = client.send(transaction(b"z" * 98 + b"\r\n" * 60, size=100)[:-3]
                        + (b"q" * 98 + b"\r\n") * 60 + b".\r\n")
    assert lines[-1] == (b"552 5.3.4 Message larger than the SIZE declared in MAIL FROM"
                         b" (9.8 KB)\r\n")


def test_an_overlong_data_line_is_refused_after_the_data() -> None:
    client = logged_in()
    lines = client.send(transaction(b"a" * 5000 + b"\r\nok\r\n"))
    assert lines[-1] == b"500 5.5.6 Line too long: limit 998 characters (RFC 5321 4.5.3.1.6)\r\n"
    client.send(transaction(b"x" * 999 + b"\r\n"))  # 998 and a dot of transparency: fine
    assert len(client.messages) == 1


def test_an_overlong_command_is_dropped_as_it_arrives() -> None:
    client = logged_in()
    assert client.send(b"NOOP " + b"x" * 600 + b"\r\n") == [
        b"500 5.5.6 Command line too long\r\n"]
    for _ in range(100):
        assert client.send(b"x" * 1000) == []
        assert client.session.buffered() <= READ_LIMIT
    assert client.send(b"\r\nNOOP\r\n") == [b"500 5.5.6 Command line too long\r\n",
                                            b"250 2.0.0 OK\r\n"]


def test_sasl_exchanges() -> None:
    client = Client()
    client.send(b"EHLO c\r\n")
    assert client.send(b"AUTH PLAIN\r\n") == [b"334 \r\n"]
    assert client.send(b"*\r\n") == [b"501 5.7.0 Authentication aborted\r\n"]
    assert client.send(b"AUTH PLAIN\r\n!!\r\n") == [b"334 \r\n", b"501 5.5.2 Malformed "
                                                    b"authentication data\r\n"]
    assert client.send(b"AUTH PLAIN =\r\n") == [b"501 5.5.2 Malformed authentication data\r\n"]
    assert client.send(b"AUTH LOGIN\r\n") == [b"334 VXNlcm5hbWU6\r\n"]
    assert client.send(base64.b64encode(b"alice") + b"\r\n") == [b"334 UGFzc3dvcmQ6\r\n"]
    assert client.send(base64.b64encode(b"wrong") + b"\r\n") == [
        b"535 5.7.8 Authentication credentials invalid\r\n"]
    assert client.send(b"AUTH LOGIN " + base64.b64encode(b"\xff") + b"\r\n"
                       + base64.b64encode(b"pw") + b"\r\n") == [
        b"334 UGFzc3dvcmQ6\r\n", b"501 5.5.2 Malformed authentication data\r\n"]
    assert client.send(b"AUTH PLAIN\r\n" + b"A" * 5000 + b"\r\nNOOP\r\n") == [
        b"334 \r\n", b"500 5.5.6 Line too long\r\n", b"250 2.0.0 OK\r\n"]
    assert client.send(b"AUTH CRAM-MD5\r\nAUTH\r\nAUTH PLAIN a b\r\n") == [
        b"504 5.5.4 Unrecognized authentication type\r\n",
        b"501 5.5.4 AUTH needs a mechanism\r\n",
        b"501 5.5.4 AUTH takes a mechanism and at most one argument\r\n"]
    assert client.send(b"AUTH LOGIN " + base64.b64encode(b"alice") + b"\r\n"
                       + base64.b64encode(b"pw") + b"\r\n") == [
        b"334 UGFzc3dvcmQ6\r\n", b"235 2.7.0 Authentication successful\r\n"]
    logins = [e for e in client.events if isinstance(e, Login)]
    assert logins[-1].creds == PlainCredentials("", "alice", "pw")
    assert client.send(PLAIN + b"\r\n") == [b"503 5.5.1 Already authenticated\r\n"]


def test_commands_out_of_order() -> None:
    client = Client()
    client.send(b"")
    assert client.send(b"MAIL FROM:<a@b>\r\nAUTH PLAIN\r\nHELO c\r\nAUTH PLAIN\r\n"
                       b"MAIL FROM:<a@b>\r\nDATA\r\n") == [
        b"503 5.5.1 Send HELO first\r\n", b"503 5.5.1 Send EHLO first\r\n",
        b"250 mx.test\r\n", b'500 5.5.2 Command "AUTH" not recognized\r\n',
        b"530 5.7.0 Authentication required\r\n", b"530 5.7.0 Authentication required\r\n"]
    client = logged_in()
    assert client.send(b"RCPT TO:<b@c>\r\nDATA\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n"
                       b"DATA\r\nRSET\r\nRCPT TO:<b@c>\r\n") == [
        b"503 5.5.1 Send MAIL FROM first\r\n", b"503 5.5.1 Send RCPT TO first\r\n",
        b"250 2.1.0 Sender OK\r\n", b"503 5.5.1 MAIL FROM already given; send RSET first\r\n",
        b"503 5.5.1 Send RCPT TO first\r\n", b"250 2.0.0 OK\r\n",
        b"503 5.5.1 Send MAIL FROM first\r\n"]


def test_starttls_drops_what_was_pipelined_after_it_and_starts_afresh() -> None:
    client = Client(SmtpSession("mx.test", 100, tls_offered=True, plain_required=True))
    client.send(b"")
    assert client.send(b"EHLO c\r\n" + PLAIN + b"\r\n")[-1] == (
        b"530 5.7.0 Must issue a STARTTLS command first\r\n")
    assert client.send(b"STARTTLS\r\n" + PLAIN + b"\r\nMAIL FROM:<a@b>\r\n") == [
        b"220 2.0.0 Ready to start TLS\r\n"]
    assert client.tls and not [e for e in client.events if isinstance(e, Login)]
    client.send(b"injected\r\n")  # plaintext before the handshake ends: never read
    client.session.tls_started()
    assert client.send(b"MAIL FROM:<a@b>\r\n") == [b"503 5.5.1 Send HELO first\r\n"]
    lines = client.send(b"EHLO c\r\n")
    assert b"250-AUTH LOGIN PLAIN\r\n" in lines and b"250-STARTTLS\r\n" not in lines
    assert client.send(PLAIN + b"\r\nSTARTTLS\r\n") == [
        b"235 2.7.0 Authentication successful\r\n", b"454 4.7.0 TLS not available\r\n"]


def test_a_connection_is_closed_after_too_many_calls_or_unknown_commands() -> None:
    client = logged_in()
    lines = client.send(b"NOOP\r\n" * (CALL_LIMIT + 5))
    assert codes(lines) == [b"250"] * CALL_LIMIT + [b"421"] and client.closed
    assert lines[-1] == b"421 4.7.0 NOOP sent too many times\r\n"
    client = logged_in()
    lines = client.send(b"FROB\x1b[2J\r\n" * 4 + b"X\r\nNOOP\r\n")
    assert lines == [b'500 5.5.2 Command "FROB\\x1b[2J" not recognized\r\n'] * 4 + [
        b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n"] and client.closed


def test_the_budget_is_shared_and_given_back() -> None:
    budget = ByteBudget(40_000)
    first, second = (Client(SmtpSession("mx.test", 10_000, budget)) for _ in range(2))
    for client, user in ((first, "u1"), (second, "u2")):
        client.send(b"EHLO c\r\n")
        client.session.receive(PLAIN + b"\r\n")
        assert isinstance(client.session.next_event(), Login)
        client.session.authenticated(user, user)
    head = b"MAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\n"
    assert first.send(head)[-1].startswith(b"354") and budget.used == 10_000
    assert second.send(head)[-1].startswith(b"354") and budget.used == 20_000
    first.send(b"x\r\n.\r\n")
    assert budget.used == 10_000  # answered: its share is back
    second.session.close()  # the connection was lost in the middle of DATA
    assert budget.used == 0


_TOKENS = st.sampled_from([
    b"EHLO x\r\n", b"HELO x\r\n", PLAIN + b"\r\n", b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n",
    base64.b64encode(b"alice") + b"\r\n", b"*\r\n", b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<a@b> SIZE=5\r\n", b"RCPT TO:<b@c>\r\n", b"RCPT TO:<\"q x\"@c> X=1\r\n",
    b"DATA\r\n", b".\r\n", b"..\r\n", b"x" * 1200, b"\r\n", b"\n", b"\r", b"RSET\r\n",
    b"NOOP\r\n", b"VRFY <\xff>\r\n", b"HELP MAIL\r\n", b"STARTTLS\r\n", b"QUIT\r\n",
    b"\x00\xff\x1b\r\n", b"BDAT 1\r\n", b"MAIL FROM:<\xed\xa0\x80@b>\r\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TOKENS, st.binary(max_size=20)), max_size=40),
       st.integers(1, 64), st.booleans())
def test_any_input_gets_single_line_replies_and_never_raises(
        chunks: list[bytes], step: int, tls: bool) -> None:
    client = Client(SmtpSession("mx.test", 1000, ByteBudget(4000), tls_offered=tls))
    data = b"".join(chunks)
    lines = client.send(b"")
    for at in range(0, len(data), step):
        lines += client.send(data[at:at + step])
        if client.tls:
            client.tls = False
            client.session.tls_started()
    for line in lines:
        match = LINE.match(line)
        assert match is not None, line
        code, _, text = match.groups()
        plain = (code[:1] == b"3" or line.startswith(b"250-") or
                 line in (b"220 mx.test mailnode ESMTP\r\n", b"250 mx.test\r\n",
                          b"250 HELP\r\n"))
        enhanced = ENHANCED.match(text)
        assert plain or (enhanced is not None and enhanced.group(1) == code[:1]), line
    assert client.session.buffered() <= max(len(data), READ_LIMIT + 1)
