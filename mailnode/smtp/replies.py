"""Every SMTP reply the submission server sends, with its RFC 3463 enhanced status code."""

from __future__ import annotations

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_MALFORMED = "501 5.5.2 Malformed authentication data"
AUTH_AUTHZID = "535 5.7.8 Cannot act on behalf of another user"
AUTH_ABORTED = "501 5.7.0 Authentication aborted"
AUTH_THROTTLED = "421 4.7.0 Too many failed logins; try again in {seconds} seconds"
TOO_MANY_SESSIONS = "454 4.7.0 Too many sessions for this user; close one and try again"
TOO_MANY_CONNECTIONS = "421 4.7.0 {reason}, try again later"
EVICTED = "421 4.7.0 Too many connections, closing the oldest ones that are not logged in"
LOGIN_TIMEOUT = "421 4.4.2 No login in time, closing connection"
SENDER_OK = "250 2.1.0 Sender OK"
RATE_LIMITED = "451 4.7.0 Sending rate limit reached; try again in {seconds} seconds"
SENDER_NOT_OWNED = "553 5.7.1 Sender address must be your own address {address}"
AUTHOR_NOT_OWNED = "550 5.7.1 The From: header must be your own address {address}"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
RECIPIENT_INVALID = "553 5.1.3 Bad recipient address: {reason}"
# Temporary: absence from a DHT is never proof (the recipient's node may not have
# published yet, or be offline past its record's expiry). The address checksum already
# catches typos, so this is about addresses that are well-formed but unknown right now.
RECIPIENT_UNPUBLISHED = ("450 4.1.1 No node publishes {address} in the DHT yet; "
                         "check the address or try again later")
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
QUEUED = "250 2.0.0 Message accepted as {queue_id}"
BUSY = "451 4.3.1 Too much mail arriving at once; try again shortly"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, message not accepted; try again later"
LINE_TOO_LONG = "500 5.5.6 Line too long"
BAD_CHARACTERS = "501 5.5.2 Invalid characters in command"
INTERNAL_ERROR = "451 4.3.0 Internal error; try again later"
