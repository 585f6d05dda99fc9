"""The settings a person types into a mail client: on this machine, and on a phone on the LAN.

A node bound beyond loopback is there to be reached from other devices, yet ``0.0.0.0`` is not
an address a phone can dial, and a self-signed certificate makes Delta Chat refuse to log in
unless "accept invalid certificates" is ticked. So the phone block names the machine's LAN
address, the implicit-TLS ports and the certificate fingerprint, says what to tick, and ends
with a Delta Chat ``dclogin:`` setup code.

``dclogin:`` follows Delta Chat core's decoder (chatmail/core ``src/qr/dclogin_scheme.rs``,
documented at deltachat/interface ``uri-schemes.md#DCLOGIN``): ``dclogin:ADDR?p=PASSWORD&v=1``
plus ``ih``/``ip``/``is`` (IMAP host, port, security ``ssl`` | ``starttls``), ``sh``/``sp``/
``ss`` for SMTP, and ``ic`` (certificate checks, ``3`` = accept invalid certificates) with
``sc`` (its SMTP twin, read by older cores and ignored by newer ones). ``p`` is mandatory: a
code without the password does not configure an account, so there is none when the password
is not being shown anyway.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from urllib.parse import quote

from mailnode.config import Config, is_loopback
from mailnode.store.api import User


def dclogin_uri(address: str, password: str, host: str, imap_port: int, imap_tls: bool,
                smtp_port: int, smtp_tls: bool, accept_invalid: bool) -> str:
    """A Delta Chat login code: every value percent-encoded, so a password with ``&`` or
    ``#`` (or an IPv6 host) survives the query string."""
    params = [("p", password), ("v", "1"),
              ("ih", host), ("ip", str(imap_port)), ("is", "ssl" if imap_tls else "starttls"),
              ("sh", host), ("sp", str(smtp_port)), ("ss", "ssl" if smtp_tls else "starttls")]
    if accept_invalid:
        params += [("ic", "3"), ("sc", "3")]
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    return f"dclogin:{quote(address, safe='@')}?{query}"


def qr_code(text: str) -> str:
    """``text`` as a QR code made of block characters, for a terminal."""
    import segno

    out = io.StringIO()
    segno.make(text, error="l").terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n")


def _desktop(config: Config, user: User, smtp_port: int, imap_port: int,
             tls_fingerprint: str) -> list[str]:
    security = ("none (loopback; STARTTLS offered)" if is_loopback(config.host)
                else "STARTTLS (required)")
    # Bound to every interface, this machine reaches the node on loopback.
    server = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host,
                                                                        config.host)
    return [
        f"Mail client settings for {user.name}:",
        f"  Email address : {user.address}",
        f"  User name     : {user.name}   (the full address works too)",
        f"  IMAP (incoming): server {server}  port {imap_port}  security: {security}  "
        "authentication: normal password",
        f"  SMTP (outgoing): server {server}  port {smtp_port}  security: {security}  "
        "authentication: normal password",
        "  TLS certificate fingerprint (SHA-256), to check when your client asks:",
        f"    {tls_fingerprint}",
    ]


def _phone(config: Config, user: User, smtp_port: int, imap_port: int, tls_fingerprint: str,
           addresses: Sequence[str], password: str | None, qr: bool) -> list[str]:
    if is_loopback(config.host):
        return [f"A phone on the LAN cannot reach this node: it listens on {config.host} only "
                "(a node made with --host 0.0.0.0 can be reached)."]
    self_signed = not config.tls_cert
    imap_tls, smtp_tls = bool(config.imaps_port), bool(config.smtps_port)
    imap = (config.imaps_port, "SSL/TLS") if imap_tls else (imap_port, "STARTTLS")
    smtp = (config.smtps_port, "SSL/TLS") if smtp_tls else (smtp_port, "STARTTLS")
    lines = [f"Phone on the LAN (e.g. Delta Chat) for {user.name}:"]
    if not addresses:
        lines.append("  Server        : this machine's address on your network (none found: "
                     "is it connected?)")
    else:
        others = f"   (or {', '.join(addresses[1:])})" if addresses[1:] else ""
        lines.append(f"  Server        : {addresses[0]}{others}")
    lines += [
        f"  IMAP (incoming): port {imap[0]}  security: {imap[1]}",
        f"  SMTP (outgoing): port {smtp[0]}  security: {smtp[1]}",
        f"  User name     : {user.name}  and the password, as above",
        f"  Certificate   : {'self-signed' if self_signed else 'yours (tls_cert)'}, SHA-256 "
        f"{tls_fingerprint}",
    ]
    if self_signed:
        lines.append("  The certificate is self-signed: in Delta Chat tick \"Accept invalid "
                     "certificates\" (advanced settings), or set tls_cert/tls_key to your own "
                     "certificate.")
    if not addresses:
        return lines
    if password is None:
        lines.append("  (The Delta Chat setup code carries the password, so it is only shown "
                     "together with it.)")
        return lines
    uri = dclogin_uri(user.address, password, addresses[0], imap[0], imap_tls, smtp[0],
                      smtp_tls, accept_invalid=self_signed)
    lines.append("  Delta Chat setup code (\"Add account\", then scan it; it holds the "
                 "password):")
    if qr:
        lines.append(qr_code(uri))
    lines.append(f"  {uri}")
    return lines


def client_settings(config: Config, user: User, smtp_port: int, imap_port: int,
                    tls_fingerprint: str, *, password: str | None = None,
                    addresses: Sequence[str] | None = None, qr: bool = False) -> str:
    """The desktop block, then the phone block. ``addresses`` are the machine's LAN
    addresses (default: looked up, see ``client_tls.lan_addresses``); ``password`` is only
    given when it is being shown anyway (it goes into the Delta Chat code)."""
    if addresses is None:
        from mailnode.client_tls import lan_addresses

        addresses = [] if is_loopback(config.host) else lan_addresses(config.host)
    return "\n".join([*_desktop(config, user, smtp_port, imap_port, tls_fingerprint),
                      *_phone(config, user, smtp_port, imap_port, tls_fingerprint, addresses,
                              password, qr)])
