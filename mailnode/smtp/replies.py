"""Every SMTP reply the submission server sends, with its RFC 3463 enhanced status code.

RFC 2034 asks for an enhanced code on every reply but the greeting, the answer to EHLO/HELO,
and the 3xx continuations (354, AUTH's 334 challenges: those are in ``protocol``). Delta Chat
and other clients show the text verbatim, so limits are stated in it.
"""

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
SHUTTING_DOWN = "421 4.3.2 Server shutting down, try again later"
IDLE_TIMEOUT = "421 4.4.2 Idle for {seconds} seconds, closing connection"
SENDER_OK = "250 2.1.0 Sender OK"
RATE_LIMITED = "451 4.7.0 Sending rate limit reached; try again in {seconds} seconds"
SENDER_NOT_OWNED = "553 5.7.1 Sender address must be your own address {address}"
AUTHOR_NOT_OWNED = "550 5.7.1 The From: header must be your own address {address}"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
RECIPIENT_INVALID = "553 5.1.3 Bad recipient address: {reason}"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
QUEUED = "250 2.0.0 Message accepted as {queue_id}"
SYSTEM_FULL = "452 4.3.1 Mail system full ({what}); try again later"
MAILBOX_FULL = "452 4.2.2 Mailbox of {address} is full; try again later"
BUSY = "451 4.3.1 Too much mail arriving at once; try again shortly"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, message not accepted; try again later"
LINE_TOO_LONG = "500 5.5.6 Line too long"
BAD_CHARACTERS = "501 5.5.2 Invalid characters in command"
INTERNAL_ERROR = "451 4.3.0 Internal error; try again later"
TOO_BIG = "552 5.3.4 Message too big: limit {limit}"
OVER_DECLARED = "552 5.3.4 Message larger than the SIZE declared in MAIL FROM ({limit})"

def size_text(size: int) -> str:
    """``26214400`` -> ``25 MB``: a limit as people read it."""
    for unit, name in ((1024 * 1024, "MB"), (1024, "KB")):
        if size >= unit:
            return f"{round(size / unit, 1):g} {name}"
    return f"{size} bytes"


# The dialogue's own (``protocol``), in the words clients have seen from this server.
OK = "250 2.0.0 OK"
BYE = "221 2.0.0 Bye"
READY_FOR_TLS = "220 2.0.0 Ready to start TLS"
TLS_NOT_AVAILABLE = "454 4.7.0 TLS not available"
MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
ALREADY_AUTHENTICATED = "503 5.5.1 Already authenticated"
AUTH_NO_MECHANISM = "501 5.5.4 AUTH needs a mechanism"
AUTH_TOO_MANY_ARGUMENTS = "501 5.5.4 AUTH takes a mechanism and at most one argument"
AUTH_UNKNOWN_MECHANISM = "504 5.5.4 Unrecognized authentication type"
SYNTAX_ERROR = "500 5.5.2 Syntax error"
COMMAND_TOO_LONG = "500 5.5.6 Command line too long"
DATA_LINE_TOO_LONG = "500 5.5.6 Line too long: limit 998 characters (RFC 5321 4.5.3.1.6)"
UNKNOWN_COMMAND = '500 5.5.2 Command "{command}" not recognized'
TOO_MANY_UNKNOWN = "502 5.5.1 Too many unrecognized commands, goodbye."
CALL_LIMIT = "421 4.7.0 {command} sent too many times"
SYNTAX = "501 5.5.4 Syntax: {syntax}"
SEND_FIRST = "503 5.5.1 Send {command} first"
NEED_MAIL = "503 5.5.1 Send MAIL FROM first"
NEED_RCPT = "503 5.5.1 Send RCPT TO first"
NESTED_MAIL = "503 5.5.1 MAIL FROM already given; send RSET first"
MALFORMED_ADDRESS = "553 5.1.3 Error: malformed address"
BAD_BODY = "501 5.5.4 BODY can only be one of 7BIT, 8BITMIME"
SMTPUTF8_ARGUMENT = "501 5.5.4 SMTPUTF8 takes no arguments"
MAIL_PARAMETERS = "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
RCPT_PARAMETERS = "555 5.5.4 RCPT TO parameters not recognized or not implemented"
EXPN_NOT_IMPLEMENTED = "502 5.5.1 EXPN not implemented"
CANNOT_VRFY = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
COULD_NOT_VRFY = "502 5.5.1 Could not VRFY {argument}"
HELP = "250 2.0.0 Supported commands: {commands}"
HELP_SYNTAX = "250 2.0.0 Syntax: {syntax}"
HELP_UNKNOWN = "501 5.5.4 Supported commands: {commands}"
