"""SMTP submission: an aiosmtpd handler served inside the node's own event loop."""
