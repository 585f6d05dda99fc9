"""TLS for clients beyond loopback: implicit-TLS listeners (IMAPS, SMTPS) with real clients
that verify the node's certificate, its names, the owner's own certificate and its reload."""

from __future__ import annotations

import asyncio
import datetime
import imaplib
import ipaddress
import os
import smtplib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto.keys import Identity
from mailnode.certificates import self_signed
from mailnode.client_tls import (
    Machine,
    ReloadingContext,
    alt_names,
    ensure_certificate,
    lan_addresses,
    listener_context,
)
from mailnode.config import CONFIG_NAME, Config, ConfigError, load, render
from mailnode.delivery.submit import SubmissionService
from mailnode.imap.server import ImapServer
from mailnode.smtp.server import SubmissionServer
from mailnode.store.notify import ChangeNotifier
from mailnode.store.sqlite import SqlStore

PASSWORD = "s3cret-pass"
NOW = int(time.time())  # clients verify validity against their clock
TIMEOUT = 10


def trusting(cafile: Path) -> ssl.SSLContext:
    """A client that verifies the server against exactly this certificate, names included."""
    return ssl.create_default_context(cafile=str(cafile))


def sans(pem: bytes) -> list[object]:
    certificate = x509.load_pem_x509_certificate(pem)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*names.get_values_for_type(x509.DNSName),
            *map(str, names.get_values_for_type(x509.IPAddress))]


def make_pair(directory: Path, name: str) -> tuple[Path, Path, bytes]:
    """An owner's own certificate (for 127.0.0.1) and key, as separate PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, name, NOW, datetime.timedelta(days=3650),
                       [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (directory / f"{name}.crt").write_bytes(cert_pem)
    (directory / f"{name}.key").write_bytes(key_pem)
    return directory / f"{name}.crt", directory / f"{name}.key", cert_pem


def replace_file(path: Path, data: bytes) -> None:
    """As certbot and editors do: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def served_certificate(port: int) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is given."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture
async def listeners(store: SqlStore, tmp_path: Path
                    ) -> AsyncIterator[tuple[ImapServer, SubmissionServer, Path]]:
    """IMAP and SMTP as a node bound beyond loopback runs them (require_tls), with their
    implicit-TLS listeners, on the node's own certificate."""
    await store.create_user("alice", PASSWORD, Identity.generate())
    pem = ensure_certificate(tmp_path, "0.0.0.0", NOW)
    context = ReloadingContext(pem, pem, check_every=0)
    imap = ImapServer(store, ChangeNotifier(), max_literal=100_000, tls_context=context,
                      require_tls=True, max_connections_per_source=3)
    smtp = SubmissionServer(SubmissionService(store, lambda: None,
                                              server_id="0011223344556677.mailnode.invalid"),
                            max_message_size=100_000, tls_context=context, require_tls=True,
                            max_connections_per_source=3)
    await imap.start("127.0.0.1", 0)
    await imap.start("127.0.0.1", 0, implicit_tls=True)
    await smtp.start("127.0.0.1", 0)
    await smtp.start("127.0.0.1", 0, implicit_tls=True)
    try:
        yield imap, smtp, pem
    finally:
        await imap.stop()
        await smtp.stop()


async def test_login_over_imaps_and_smtps_verifying_the_node_certificate(
        listeners: tuple[ImapServer, SubmissionServer, Path]) -> None:
    imap, smtp, pem = listeners
    assert imap.tls_port is not None and imap.port is not None
    imaps_port, imap_port = imap.tls_port, imap.port

    def clients() -> None:
        with imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=trusting(pem),
                               timeout=TIMEOUT) as m:
            assert "STARTTLS" not in m.capabilities and "LOGINDISABLED" not in m.capabilities
            assert m.login("alice", PASSWORD)[0] == "OK"  # AUTH inside TLS despite require_tls
            assert m.select("INBOX")[0] == "OK"
        with smtplib.SMTP_SSL("127.0.0.1", smtp.tls_port, context=trusting(pem),
                              timeout=TIMEOUT) as s:
            s.ehlo("phone")
            assert not s.has_extn("starttls") and "PLAIN" in s.esmtp_features["auth"]
            s.login("alice", PASSWORD)
        # The plain listeners still want STARTTLS first, through the same reloading context.
        with imaplib.IMAP4("127.0.0.1", imap_port, timeout=TIMEOUT) as m:
            assert "LOGINDISABLED" in m.capabilities
            m.starttls(ssl_context=trusting(pem))
            assert m.login("alice", PASSWORD)[0] == "OK"
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=TIMEOUT) as s:
            s.ehlo("desktop")
            assert "auth" not in s.esmtp_features and s.has_extn("starttls")
            s.starttls(context=trusting(pem))
            s.login("alice", PASSWORD)
    await asyncio.wait_for(asyncio.to_thread(clients), 30)


async def test_pending_handshakes_count_against_the_listener_limits(
        listeners: tuple[ImapServer, SubmissionServer, Path]) -> None:
    """Connections that never start their handshake hold a place: a fourth from the same
    address is closed at once, on both implicit-TLS listeners."""
    imap, smtp, _ = listeners
    assert imap.tls_port is not None
    for port in (imap.tls_port, smtp.tls_port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""  # refused, silently
        writer.close()
        for _, w in held:
            w.close()


def test_certificate_names_the_machine() -> None:
    machine = Machine(("vm", "vm.lan.example"), ("192.168.1.20", "fd00::20"))
    names = alt_names("0.0.0.0", machine)
    values = [str(n.value) for n in names]
    assert values == ["localhost", "127.0.0.1", "::1", "vm", "vm.lan.example",
                      "192.168.1.20", "fd00::20"]
    # a specific host is named too; unusable names and duplicates are not
    odd = Machine(("bad name!", "localhost"), ("192.168.1.20",))
    assert [str(n.value) for n in alt_names("192.168.1.20", odd)] == [
        "localhost", "127.0.0.1", "::1", "192.168.1.20"]
    assert "mail.example.org" in [str(n.value) for n in alt_names("mail.example.org", odd)]


def test_certificate_made_at_init_names_this_machine_s_addresses(tmp_path: Path) -> None:
    names = sans(ensure_certificate(tmp_path, "0.0.0.0", NOW).read_bytes())
    assert {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()} <= set(names)
    for address in lan_addresses("0.0.0.0"):  # what routes give on this machine
        assert str(ipaddress.ip_address(address)) in names


def test_lan_addresses_are_of_the_bound_family() -> None:
    assert all(ipaddress.ip_address(a).version == 4 for a in lan_addresses("0.0.0.0"))
    assert all(ipaddress.ip_address(a).version == 6 for a in lan_addresses("::"))
    assert set(lan_addresses("0.0.0.0")) | set(lan_addresses("::")) == set(lan_addresses(""))
    assert lan_addresses("192.168.1.20") == ["192.168.1.20"]


async def test_own_certificate_is_used_and_reloaded_for_new_handshakes(
        store: SqlStore, tmp_path: Path) -> None:
    cert, key, first = make_pair(tmp_path, "own")
    config = replace(Config(), tls_cert="own.crt", tls_key=str(key))  # relative and absolute
    context = listener_context(config, tmp_path)
    context.check_every = 0
    await store.create_user("alice", PASSWORD, Identity.generate())
    imap = ImapServer(store, ChangeNotifier(), max_literal=100_000, tls_context=context,
                      require_tls=True)
    await imap.start("127.0.0.1", 0, implicit_tls=True)
    try:
        port = imap.tls_port
        assert port is not None
        assert await asyncio.to_thread(served_certificate, port) == der_of(first)

        def login(cafile: Path) -> imaplib.IMAP4_SSL:
            m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=trusting(cafile),
                                  timeout=TIMEOUT)
            assert m.login("alice", PASSWORD)[0] == "OK"
            return m

        before = await asyncio.to_thread(login, cert)
        # Renewed: new certificate first, key a moment later (a half-replaced pair is skipped)
        _, _, second = make_pair(tmp_path, "renewed")
        replace_file(cert, second)
        assert await asyncio.to_thread(served_certificate, port) == der_of(first)
        replace_file(key, (tmp_path / "renewed.key").read_bytes())
        assert await asyncio.to_thread(served_certificate, port) == der_of(second)
        after = await asyncio.to_thread(login, tmp_path / "renewed.crt")
        # The connection made before the renewal goes on with its certificate.
        assert (await asyncio.to_thread(before.noop))[0] == "OK"
        for m in (before, after):
            await asyncio.to_thread(m.logout)
    finally:
        await imap.stop()


def test_reload_waits_for_its_interval(tmp_path: Path) -> None:
    cert, key, _ = make_pair(tmp_path, "own")
    context = ReloadingContext(cert, key, check_every=5.0)
    old = context.current
    _, _, second = make_pair(tmp_path, "renewed")
    replace_file(cert, second)
    replace_file(key, (tmp_path / "renewed.key").read_bytes())
    start = context._checked  # the clock is passed in: no waiting here
    assert not context.refresh(start + 1.0) and context.current is old
    assert context.refresh(start + 5.0) and context.current is not old


def _write_config(data_dir: Path, **settings: object) -> Path:
    data_dir.mkdir(exist_ok=True)
    path = data_dir / CONFIG_NAME
    path.write_text(render(replace(Config(), **settings)))  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("settings, message", [
    ({"tls_cert": "missing.crt"}, "tls_cert .*missing.crt does not exist"),
    ({"tls_cert": "own.crt", "tls_key": "nope.key"}, "tls_key .*nope.key does not exist"),
    ({"tls_key": "own.key"}, "tls_key is set but tls_cert is not"),
    ({"tls_cert": "own.crt", "tls_key": "other.key"}, "cannot be used"),  # not its key
    ({"tls_cert": "own.key", "tls_key": "own.key"}, "cannot be used"),  # no certificate
    ({"tls_cert": "."}, "is not a file"),
])
def test_bad_certificate_settings_fail_at_load_in_one_line(
        tmp_path: Path, settings: dict[str, object], message: str) -> None:
    make_pair(tmp_path, "own")
    make_pair(tmp_path, "other")
    with pytest.raises(ConfigError, match=message) as error:
        load(_write_config(tmp_path, **settings))
    assert "\n" not in str(error.value)


def test_good_certificate_settings_load(tmp_path: Path) -> None:
    cert, key, _ = make_pair(tmp_path, "own")
    assert load(_write_config(tmp_path, tls_cert="own.crt", tls_key="own.key")).tls_cert
    (tmp_path / "both.pem").write_bytes(key.read_bytes() + cert.read_bytes())
    assert load(_write_config(tmp_path, tls_cert="both.pem")).tls_key == ""
