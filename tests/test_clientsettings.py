"""The printed client settings: a desktop block, and for a node beyond loopback a phone block
with a LAN address, the implicit-TLS ports and a Delta Chat ``dclogin:`` code."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, unquote, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from mailnode.clientsettings import client_settings, dclogin_uri
from mailnode.config import Config
from mailnode.store.api import User

ALICE = User(id=1, name="alice", address="abcdef0123@mailnode.invalid")
FINGERPRINT = "AB:CD:EF"
LAN = Config(host="0.0.0.0")


def decode(uri: str) -> tuple[str, dict[str, str]]:
    """As Delta Chat core reads it: the address before '?', the query pairs url-decoded."""
    assert uri.startswith("dclogin:")
    parts = urlsplit(uri.replace("dclogin:", "dclogin://", 1))
    params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    assert all(len(v) == 1 for v in params.values())
    return unquote(f"{parts.username}@{parts.hostname}"), {k: v[0] for k, v in params.items()}


def test_phone_block_for_a_node_on_every_interface() -> None:
    text = client_settings(LAN, ALICE, 2587, 2143, FINGERPRINT, password="pw&#?=x",
                           addresses=["192.168.1.20", "fd00::20"])
    assert "0.0.0.0" not in text  # not an address anyone can dial
    assert "IMAP (incoming): server 127.0.0.1  port 2143  security: STARTTLS" in text
    assert "Server        : 192.168.1.20   (or fd00::20)" in text
    assert "IMAP (incoming): port 2993  security: SSL/TLS" in text
    assert "SMTP (outgoing): port 2465  security: SSL/TLS" in text
    assert f"SHA-256 {FINGERPRINT}" in text and "Accept invalid certificates" in text
    uri = next(line.strip() for line in text.splitlines() if "dclogin:" in line)
    address, params = decode(uri)
    assert address == ALICE.address
    assert params == {"p": "pw&#?=x", "v": "1", "ih": "192.168.1.20", "ip": "2993",
                      "is": "ssl", "sh": "192.168.1.20", "sp": "2465", "ss": "ssl",
                      "ic": "3", "sc": "3"}


def test_desktop_server_on_an_ipv6_only_node() -> None:
    text = client_settings(replace(LAN, host="::"), ALICE, 2587, 2143, FINGERPRINT,
                           addresses=["fd00::20"])
    assert "IMAP (incoming): server ::1  port 2143" in text and "Server        : fd00::20" in text


def test_no_password_no_login_code() -> None:
    """Delta Chat refuses a dclogin code without p, and the password is shown only once."""
    text = client_settings(LAN, ALICE, 2587, 2143, FINGERPRINT, addresses=["192.168.1.20"])
    assert "dclogin:" not in text and "only shown together with it" in text
    assert "Server        : 192.168.1.20" in text


def test_own_certificate_and_disabled_implicit_ports() -> None:
    config = replace(LAN, tls_cert="/etc/ssl/mail.pem", imaps_port=0, smtps_port=0)
    text = client_settings(config, ALICE, 2587, 2143, FINGERPRINT, password="pw",
                           addresses=["192.168.1.20"])
    assert "Accept invalid certificates" not in text and "yours (tls_cert)" in text
    assert "IMAP (incoming): port 2143  security: STARTTLS" in text
    _, params = decode(next(w for w in text.split() if w.startswith("dclogin:")))
    assert params["is"] == params["ss"] == "starttls" and params["ip"] == "2143"
    assert "ic" not in params and "sc" not in params


def test_loopback_node_says_a_phone_cannot_reach_it() -> None:
    text = client_settings(Config(), ALICE, 2587, 2143, FINGERPRINT, password="pw")
    assert "server 127.0.0.1  port 2143  security: none" in text
    assert "cannot reach this node" in text and "dclogin:" not in text


def test_no_lan_address_found() -> None:
    text = client_settings(LAN, ALICE, 2587, 2143, FINGERPRINT, password="pw", addresses=[])
    assert "none found" in text and "dclogin:" not in text


def test_qr_code_is_printed_in_a_terminal() -> None:
    text = client_settings(LAN, ALICE, 2587, 2143, FINGERPRINT, password="pw",
                           addresses=["192.168.1.20"], qr=True)
    assert "█" in text or "▀" in text or "▄" in text
    assert "dclogin:" in text  # the code as text too, to copy


@given(password=st.text(min_size=1, max_size=40).filter(lambda p: "\x00" not in p),
       host=st.sampled_from(["192.168.1.20", "fd00::20", "vm.lan"]))
def test_dclogin_round_trips_any_password(password: str, host: str) -> None:
    uri = dclogin_uri(ALICE.address, password, host, 2993, True, 2465, True, True)
    assert " " not in uri and "#" not in uri
    _, params = decode(uri)
    assert params["p"] == password and params["ih"] == host
