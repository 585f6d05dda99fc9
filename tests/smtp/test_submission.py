"""SMTP submission over a real socket with Python's smtplib (run in a thread)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crypto.address import address_for, key_of
from crypto.envelope import open_envelope
from crypto.keys import Identity
from mailnode.delivery.outbound import sealed_envelope
from mailnode.delivery.submit import RecipientInvalid, SubmissionService
from mailnode.smtp.server import SubmissionServer
from mailnode.store.api import User
from mailnode.store.sqlite import SqlStore

PASSWORD = "s3cret-pass"
SERVER_ID = "00112233aabbccdd.mailnode.invalid"
MAX = 64 * 1024


def message(sender: str, to: str, body: str = "Hello there.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: test\r\n"
            f"Message-ID: <t1@example>\r\n\r\n{body}").encode()


@dataclass
class Env:
    store: SqlStore
    port: int
    alice: User
    bob: User
    wakes: list[int]


@pytest.fixture
async def env(store: SqlStore) -> AsyncIterator[Env]:
    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    bob = await store.create_user("bob", PASSWORD, Identity.generate())
    wakes: list[int] = []
    server = SubmissionServer(SubmissionService(store, lambda: wakes.append(1),
                                                server_id=SERVER_ID),
                              max_message_size=MAX)
    await server.start("127.0.0.1", 0)
    try:
        yield Env(store, server.port, alice, bob, wakes)
    finally:
        await server.stop()


def client(env: Env) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", env.port, timeout=10)
    smtp.ehlo("test")
    return smtp


async def test_local_delivery_is_byte_identical_below_trace_header(env: Env) -> None:
    data = message(env.alice.address, env.bob.address)

    def send() -> None:
        with client(env) as smtp:
            assert "PLAIN" in smtp.esmtp_features["auth"]
            assert smtp.esmtp_features["size"] == str(MAX)
            smtp.login("alice", PASSWORD)
            smtp.sendmail(env.alice.address, [env.bob.address], data)
    await asyncio.to_thread(send)
    inbox = await env.store.get_mailbox(env.bob.id, "INBOX")
    assert inbox is not None
    metas = await env.store.list_messages(inbox.id)
    body = (await env.store.fetch_bodies(inbox.id, [metas[0].uid]))[metas[0].uid]
    assert body.startswith(b"Received: ")
    assert body.endswith(data)


async def test_remote_recipient_is_sealed_and_queued(env: Env) -> None:
    carol = Identity.generate()
    data = message(env.alice.address, address_for(carol.verify_key), ("x" * 70 + "\r\n") * 20)

    def send() -> None:
        with client(env) as smtp:
            smtp.login(env.alice.address, PASSWORD)  # the full address works as login
            smtp.sendmail(env.alice.address, [address_for(carol.verify_key).upper()], data)
    await asyncio.to_thread(send)
    queued = await env.store.due_outbound(now=2**40)
    assert len(queued) == 1 and env.wakes
    sealed = await sealed_envelope(env.store, queued[0])  # what the queue hands over
    assert sealed is not None and b"x" * 100 not in sealed  # sealed, not plaintext
    opened = open_envelope(carol, sealed)
    assert opened.payload == data
    assert opened.sender_key == key_of(env.alice.address)


async def test_auth_login_mechanism(env: Env) -> None:
    def send() -> None:
        with client(env) as smtp:
            code, _ = smtp.docmd("AUTH", "LOGIN")
            assert code == 334
            import base64
            assert smtp.docmd(base64.b64encode(b"alice").decode())[0] == 334
            assert smtp.docmd(base64.b64encode(PASSWORD.encode()).decode())[0] == 235
            smtp.sendmail(env.alice.address, [env.bob.address],
                          message(env.alice.address, env.bob.address))
    await asyncio.to_thread(send)


async def test_refusals_keep_the_session_alive(env: Env) -> None:
    outsider = address_for(Identity.generate().verify_key)

    def dialogue() -> None:
        with client(env) as smtp:
            # unauthenticated MAIL
            code, text = smtp.docmd(f"MAIL FROM:<{env.alice.address}>")
            assert code == 530, text
            # wrong password
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                smtp.login("alice", "wrong-password")
            assert err.value.smtp_code == 535
            smtp.login("alice", PASSWORD)
            # forged envelope sender
            code, text = smtp.docmd(f"MAIL FROM:<{outsider}>")
            assert code == 553 and b"own address" in text
            code, _ = smtp.docmd(f"MAIL FROM:<{env.alice.address}>")
            assert code == 250
            for bad in ("someone@example.com", "abc@mailnode.invalid",
                        env.bob.address.replace("a", "b", 1)):
                code, text = smtp.docmd(f"RCPT TO:<{bad}>")
                assert code == 553, (bad, text)
            code, _ = smtp.docmd(f"RCPT TO:<{env.bob.address}>")
            assert code == 250
            smtp.rset()
            # oversize: declared SIZE refused before data
            code, _ = smtp.docmd(f"MAIL FROM:<{env.alice.address}> SIZE={MAX + 1}")
            assert code == 552
            smtp.rset()
            big = message(env.alice.address, env.bob.address, ("y" * 70 + "\r\n") * 1000)
            # oversize: smtplib declares SIZE, refused at MAIL
            with pytest.raises(smtplib.SMTPSenderRefused) as size_err:
                smtp.sendmail(env.alice.address, [env.bob.address], big)
            assert size_err.value.smtp_code == 552
            # oversize without a declared SIZE: refused after DATA, nothing stored
            assert smtp.docmd(f"MAIL FROM:<{env.alice.address}>")[0] == 250
            assert smtp.docmd(f"RCPT TO:<{env.bob.address}>")[0] == 250
            assert smtp.docmd("DATA")[0] == 354
            smtp.send(big + b".\r\n")
            code, _ = smtp.getreply()
            assert code == 552
            # still serving: a good message goes through
            smtp.rset()
            smtp.sendmail(env.alice.address, [env.bob.address],
                          message(env.alice.address, env.bob.address))
    await asyncio.to_thread(dialogue)
    inbox = await env.store.get_mailbox(env.bob.id, "INBOX")
    assert inbox is not None and inbox.messages == 1


async def test_authzid_of_another_user_is_refused(env: Env) -> None:
    import base64

    def dialogue() -> None:
        with client(env) as smtp:
            blob = base64.b64encode(b"bob\0alice\0" + PASSWORD.encode()).decode()
            code, _ = smtp.docmd("AUTH", f"PLAIN {blob}")
            assert code == 535
            blob = base64.b64encode(b"alice\0alice\0" + PASSWORD.encode()).decode()
            code, _ = smtp.docmd("AUTH", f"PLAIN {blob}")  # mutt/mbsync style
            assert code == 235
    await asyncio.to_thread(dialogue)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_smtp_submission(env: Env, tmp_path: Path) -> None:
    data = message(env.alice.address, env.bob.address, "sent by curl\r\n")
    (tmp_path / "mail.eml").write_bytes(data)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", f"smtp://127.0.0.1:{env.port}", "--mail-from", env.alice.address,
        "--mail-rcpt", env.bob.address, "--user", f"alice:{PASSWORD}",
        "--upload-file", str(tmp_path / "mail.eml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    inbox = await env.store.get_mailbox(env.bob.id, "INBOX")
    assert inbox is not None
    uid = (await env.store.list_messages(inbox.id))[0].uid
    assert (await env.store.fetch_bodies(inbox.id, [uid]))[uid].endswith(data)


async def test_starttls_required_before_auth_beyond_loopback(store: SqlStore,
                                                             tmp_path: Path) -> None:
    import ssl

    from mailnode.client_tls import ensure_certificate, server_context

    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    context = server_context(ensure_certificate(tmp_path, "0.0.0.0", 1_800_000_000))
    server = SubmissionServer(SubmissionService(store, lambda: None, server_id=SERVER_ID),
                              max_message_size=MAX,
                              tls_context=context, require_tls=True)
    await server.start("127.0.0.1", 0)
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE

    def dialogue() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.ehlo("test")
            assert smtp.has_extn("starttls")
            code, _ = smtp.docmd("AUTH", "PLAIN AGFsaWNlAHBhc3M=")
            assert code in (530, 538)  # no password before TLS
            smtp.starttls(context=client_ctx)
            smtp.ehlo("test")
            smtp.login("alice", PASSWORD)
            smtp.sendmail(alice.address, [alice.address],
                          message(alice.address, alice.address))
    try:
        await asyncio.to_thread(dialogue)
    finally:
        await server.stop()
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None and inbox.messages == 1


async def test_sending_rate_is_limited_per_user(store: SqlStore) -> None:
    alice = await store.create_user("alice", PASSWORD, Identity.generate())
    server = SubmissionServer(SubmissionService(store, lambda: None, messages_per_minute=2,
                                                server_id=SERVER_ID),
                              max_message_size=MAX)
    await server.start("127.0.0.1", 0)

    def dialogue() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.login("alice", PASSWORD)
            for _ in range(2):
                smtp.sendmail(alice.address, [alice.address],
                              message(alice.address, alice.address))
            code, text = smtp.docmd(f"MAIL FROM:<{alice.address}>")
            assert code == 451 and b"rate limit" in text
            assert smtp.noop()[0] == 250  # refused, not disconnected
    try:
        await asyncio.to_thread(dialogue)
    finally:
        await server.stop()
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None and inbox.messages == 2


async def test_from_header_must_be_the_users_own_address(env: Env) -> None:
    def dialogue() -> None:
        with client(env) as smtp:
            smtp.login("alice", PASSWORD)
            for author in (env.bob.address, "Alice <alice@example.com>"):
                with pytest.raises(smtplib.SMTPDataError) as err:
                    smtp.sendmail(env.alice.address, [env.bob.address],
                                  message(author, env.bob.address))
                assert err.value.smtp_code == 550 and b"From:" in err.value.smtp_error
            smtp.sendmail(env.alice.address, [env.bob.address],  # still serving
                          message(f"Alice <{env.alice.address}>", env.bob.address))
    await asyncio.to_thread(dialogue)
    inbox = await env.store.get_mailbox(env.bob.id, "INBOX")
    assert inbox is not None and inbox.messages == 1


# --- the budget of bytes being received ---------------------------------------------------
# Messages being received share one budget: sessions that all send the largest messages at
# once cannot make the node hold more than a few of them in memory.


class Raw:
    """A client that can stop in the middle of DATA."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 user: User, to: User) -> None:
        self.reader, self.writer = reader, writer
        self.user, self.to = user, to

    @classmethod
    async def logged_in(cls, env: Env, user: User | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        raw = cls(reader, writer, user or env.alice,
                  env.alice if user is not None and user == env.bob else env.bob)
        await raw.reply()
        await raw.command(b"EHLO t")
        blob = base64.b64encode(b"\0" + raw.user.name.encode() + b"\0" + PASSWORD.encode())
        assert (await raw.command(b"AUTH PLAIN " + blob)).startswith(b"235")
        return raw

    async def reply(self) -> bytes:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if line[3:4] != b"-":
                return line

    async def command(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    def message(self, body: str = "Hello there.\r\n") -> bytes:
        return message(self.user.address, self.to.address, body)

    async def start_data(self, size: int | None = None) -> bytes:
        option = b"" if size is None else b" SIZE=%d" % size
        assert (await self.command(b"MAIL FROM:<" + self.user.address.encode() + b">"
                                   + option)).startswith(b"250")
        assert (await self.command(b"RCPT TO:<" + self.to.address.encode() + b">")
                ).startswith(b"250")
        return await self.command(b"DATA")

    async def finish(self, body: bytes) -> bytes:
        self.writer.write(body + b".\r\n")
        return await self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.writer.close()


async def test_sessions_in_data_share_a_budget(env: Env) -> None:
    """Undeclared, each message reserves the whole limit: four fit (4 x MAX), at most two of
    them one user's (a user may hold half the budget), and a share comes back as soon as its
    message is in."""
    alices = [await Raw.logged_in(env) for _ in range(3)]
    bobs = [await Raw.logged_in(env, env.bob) for _ in range(3)]
    try:
        assert (await alices[0].start_data()).startswith(b"354")
        assert (await alices[1].start_data()).startswith(b"354")
        assert (await alices[2].start_data()).startswith(b"451 4.3.1")  # her half
        assert (await bobs[0].start_data()).startswith(b"354")  # bob is not held up by her
        assert (await bobs[1].start_data()).startswith(b"354")
        assert (await bobs[2].start_data()).startswith(b"451 4.3.1")  # all four in use
        assert (await alices[0].finish(alices[0].message())).startswith(b"250")
        body = alices[2].message()
        assert (await alices[2].command(b"RSET")).startswith(b"250")
        assert (await alices[2].start_data(size=len(body))).startswith(b"354")
        assert (await alices[2].finish(body)).startswith(b"250")
    finally:
        for raw in (*alices, *bobs):
            raw.close()


async def test_a_declared_size_reserves_only_that_much(env: Env) -> None:
    clients = [await Raw.logged_in(env) for _ in range(8)]
    body = clients[0].message()
    try:
        for raw in clients:  # eight small declared messages at once fit easily
            assert (await raw.start_data(size=len(body))).startswith(b"354")
        for raw in clients:
            assert (await raw.finish(body)).startswith(b"250")
        # ...but a message far larger than it declared is refused (the budget holds).
        big = clients[0].message(("y" * 70 + "\r\n") * 600)
        assert len(body) + 4096 < len(big) < MAX  # within the limit, not what it declared
        assert (await clients[0].start_data(size=len(body))).startswith(b"354")
        reply = await clients[0].finish(big)
        assert reply.startswith(b"552"), reply
    finally:
        for raw in clients:
            raw.close()


async def test_user_created_meanwhile_gets_mail_locally(env: Env) -> None:
    """Which recipients are local is decided in the submission's transaction: a user created
    after the service last looked (``mailnode user add`` is another process) is filed into
    their INBOX, not queued for the network."""
    def send(to: str) -> None:
        with client(env) as smtp:
            smtp.login("alice", PASSWORD)
            smtp.sendmail(env.alice.address, [to], message(env.alice.address, to))
    await asyncio.to_thread(send, env.bob.address)  # the service has seen who is local
    other = SqlStore(env.store.db, env.store.notifier)  # as another process would
    carol = await other.create_user("carol", PASSWORD, Identity.generate())
    await asyncio.to_thread(send, carol.address)
    assert await env.store.due_outbound(now=2**40) == []
    inbox = await env.store.get_mailbox(carol.id, "INBOX")
    assert inbox is not None and inbox.messages == 1
    uid = (await env.store.list_messages(inbox.id))[0].uid
    body = (await env.store.fetch_bodies(inbox.id, [uid]))[uid]
    assert body.startswith(b"Received: ") and body.endswith(
        message(env.alice.address, carol.address))


async def test_a_known_local_recipient_is_checked_without_the_database(store: SqlStore) -> None:
    """RCPT to a user the service already knows as local, with no quota to look up, is
    answered at once (``recipient_now``); anything else still goes the long way."""
    service = SubmissionService(store, lambda: None, server_id=SERVER_ID)
    bob = await store.create_user("bob", PASSWORD, Identity.generate())
    assert service.recipient_now(bob.address) is None  # the local users not read yet
    assert await service.check_recipient(bob.address) == bob.address
    assert service.recipient_now(bob.address) == bob.address
    assert service.recipient_now(address_for(Identity.generate().verify_key)) is None
    with pytest.raises(RecipientInvalid):
        service.recipient_now("nobody@example.org")
    store.user_quota = 1 << 20  # a quota: the user's usage must be read
    assert service.recipient_now(bob.address) is None
