"""RFC 3464 delivery status notifications, filed into the sender's INBOX: a copy is delayed
(once), or failed for good.

Written out by hand: the ``email`` package's generator cannot serialise a
``message/delivery-status`` part built from text, and the format is small and fixed.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from email.utils import format_datetime

from crypto.address import DOMAIN


def _clean(text: str) -> str:
    """One header-safe line: no CR/LF can come from a peer's reason into our headers."""
    return " ".join(text.split())[:500]


def delivery_failure(sender: str, recipient: str, reason: str, original_headers: bytes,
                     when: float, attempts: int, status: str = "5.0.0") -> bytes:
    """A ``multipart/report; report-type=delivery-status`` message with CRLF line endings.

    ``status`` is the RFC 3463 code: 5.4.7 when the queue gave up, 5.0.0 for a refusal.
    """
    return _report(sender, recipient, reason, original_headers, when, "failed", status,
                   "Undelivered Mail Returned to Sender",
                   [f"Your message could not be delivered to {recipient}.", "",
                    f"Reason: {_clean(reason)}",
                    f"The node tried {attempts} time(s) before giving up."])


def delivery_delayed(sender: str, recipient: str, reason: str, original_headers: bytes,
                     when: float, attempts: int, retry_until: float) -> bytes:
    """The same report with ``Action: delayed`` (RFC 3464 section 2.3.3): the node is still
    trying, and says until when."""
    until = format_datetime(datetime.fromtimestamp(retry_until, UTC))
    return _report(sender, recipient, reason, original_headers, when, "delayed", "4.4.7",
                   "Delayed Mail (still being retried)",
                   [f"Your message has not been delivered to {recipient} yet.", "",
                    f"Reason: {_clean(reason)}",
                    f"The node has tried {attempts} time(s) and keeps trying until {until}.",
                    "You do not need to send it again."],
                   extra=[f"Will-Retry-Until: {until}"])


def _report(sender: str, recipient: str, reason: str, original_headers: bytes, when: float,
            action: str, status: str, subject: str, text: list[str],
            extra: list[str] | None = None) -> bytes:
    date = format_datetime(datetime.fromtimestamp(when, UTC))
    boundary = f"=_mailnode_{os.urandom(8).hex()}"
    reason = _clean(reason)
    headers = original_headers.decode("utf-8", "replace").rstrip("\r\n")
    lines = [
        f"From: Mail Delivery System <postmaster@{DOMAIN}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{os.urandom(12).hex()}@{DOMAIN}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a delivery status notification in MIME format.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *text,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: x-mailnode; mailnode",
        f"Arrival-Date: {date}",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Action: {action}",
        f"Status: {status}",
        f"Diagnostic-Code: x-mailnode; {reason}",
        f"Last-Attempt-Date: {date}",
        *(extra or []),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers; charset=utf-8",
        "",
        headers,
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")
