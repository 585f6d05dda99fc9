"""RFC 3464 delivery status notifications, filed into the sender's INBOX on a final failure."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from crypto.address import DOMAIN


def delivery_failure(sender: str, recipient: str, reason: str, original_headers: bytes,
                     when: float, attempts: int) -> bytes:
    """A ``multipart/report; report-type=delivery-status`` message (CRLF line endings)."""
    date = format_datetime(datetime.fromtimestamp(when, UTC))
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Mail Delivery System <postmaster@{DOMAIN}>"
    msg["To"] = sender
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = date
    msg["Message-ID"] = f"<{os.urandom(12).hex()}@{DOMAIN}>"
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(
        f"Your message could not be delivered to {recipient}.\n\n"
        f"Reason: {reason}\n"
        f"The node tried {attempts} time(s) before giving up.\n")
    status = (f"Reporting-MTA: dns; mailnode\r\nArrival-Date: {date}\r\n\r\n"
              f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\n"
              f"Status: 5.4.7\r\nDiagnostic-Code: x-mailnode; {reason}\r\n"
              f"Last-Attempt-Date: {date}\r\n")
    msg.make_mixed()
    msg.replace_header("Content-Type", "multipart/report")
    msg.set_param("report-type", "delivery-status")
    ds = EmailMessage(policy=SMTP)
    ds.set_payload(status)
    ds["Content-Type"] = "message/delivery-status"
    msg.attach(ds)
    headers = EmailMessage(policy=SMTP)
    headers["Content-Type"] = "text/rfc822-headers"
    headers.set_payload(original_headers.decode("utf-8", "replace"))
    msg.attach(headers)
    return msg.as_bytes()
