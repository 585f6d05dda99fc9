"""A sender cannot write the node's verdict on the sender: forged Authentication-Results in our
name (and the legacy X-Mailnode-Verified-Sender) are removed, byte-exact for everything else."""

from __future__ import annotations

import email
import os

from hypothesis import given
from hypothesis import strategies as st

from crypto.address import address_for, key_of
from crypto.envelope import seal
from crypto.keys import Identity, PublicIdentity
from mailnode.delivery.headers import (
    authentication_results,
    authors,
    authserv_id,
    header_end,
    strip_claims,
    vet,
)
from mailnode.delivery.inbound import InboundService
from mailnode.delivery.submit import SubmissionService
from mailnode.store.sqlite import SqlStore
from mailnode.transfer import InboundMessage, Verdict

OURS = authserv_id(bytes.fromhex("0123456789abcdef") + bytes(24))
OTHER = "mx.example.org"


def test_authserv_id_is_the_node_id_under_the_invalid_domain() -> None:
    assert OURS == "0123456789abcdef.mailnode.invalid"
    assert authentication_results(OURS, "a@mailnode.invalid", "why") == (
        b"Authentication-Results: 0123456789abcdef.mailnode.invalid;\r\n"
        b"\tmailnode=pass (why) header.from=a@mailnode.invalid\r\n")


def test_forged_verdicts_in_our_name_are_removed_others_kept() -> None:
    kept = [b"From: a@mailnode.invalid\r\n",
            b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=x\r\n",
            b"Subject: hi\r\n"]
    forged = [b"authentication-results: 0123456789ABCDEF.MAILNODE.INVALID; mailnode=pass\r\n",
              b"AUTHENTICATION-RESULTS:0123456789abcdef.mailnode.invalid;\r\n"
              b"\tmailnode=pass\r\n  header.from=boss@mailnode.invalid\r\n",
              b"Authentication-Results : (look, a comment) \"0123456789abcdef.mailnode.invalid\""
              b"; mailnode=pass\r\n",
              b"Authentication-Results: (c (nested)) 0123456789abcdef(x).mailnode.invalid; a\r\n",
              b"X-Mailnode-Verified-Sender: boss@mailnode.invalid\r\n",
              b"x-mailnode-verified-sender:\r\n boss@mailnode.invalid\r\n"]
    body = (b"\r\nAuthentication-Results: 0123456789abcdef.mailnode.invalid; body text\r\n"
            b"X-Mailnode-Verified-Sender: stays in the body\r\n")
    message = b"".join(forged[:2] + kept[:1] + forged[2:5] + kept[1:] + forged[5:]) + body
    assert strip_claims(message, OURS) == b"".join(kept) + body


def test_lf_only_and_duplicates() -> None:
    message = (b"Authentication-Results: 0123456789abcdef.mailnode.invalid; x\n"
               b"From: a\n"
               b"Authentication-Results: 0123456789abcdef.mailnode.invalid; x\n folded\n"
               b"Authentication-Results: 0123456789abcdef.mailnode.invalid; x\n"
               b"Authentication-Results: other.example; x\n\nbody\n")
    assert strip_claims(message, OURS) == (
        b"From: a\nAuthentication-Results: other.example; x\n\nbody\n")


def test_headers_only_no_headers_and_untouched_messages() -> None:
    assert strip_claims(b"Authentication-Results: 0123456789abcdef.mailnode.invalid", OURS) == b""
    no_headers = b"\r\nAuthentication-Results: 0123456789abcdef.mailnode.invalid\r\n"
    assert strip_claims(no_headers, OURS) == no_headers
    plain = b"From: a\r\nSubject: Authentication-Results: 0123456789abcdef.mailnode.invalid\r\n"
    assert strip_claims(plain, OURS) is plain


def test_hostile_header_blocks_are_handled_whole() -> None:
    """Huge field counts, endless folding and unclosed comments: the result is still exact
    (the scan is regex-without-backtracking, linear in the header size)."""
    many = b"Authentication-Results: other.example; a\n" * 50_000
    assert strip_claims(many + b"\nbody", OURS) == many + b"\nbody"
    endless = b"Authentication-Results: x;\n" + b" (\n" * 200_000 + b"From: a\n\n"
    assert strip_claims(endless, OURS) == endless
    unclosed = b"Authentication-Results: " + b"(" * 500_000 + OURS.encode() + b"\n\n"
    assert strip_claims(unclosed, OURS) == b"\n"


FIELD_NAMES = st.sampled_from(["From", "Subject", "Authentication-Results",
                               "authentication-results", "X-Mailnode-Verified-Sender",
                               "Received", "X-Authentication-Results"])
VALUES = st.sampled_from([OURS, OURS.upper(), OTHER, "plain text", f"({OURS}) {OTHER}",
                          f'"{OURS}"; x', ""])


@given(st.lists(st.tuples(FIELD_NAMES, VALUES, st.integers(0, 2)), max_size=8),
       st.sampled_from(["\r\n", "\n"]), st.binary(max_size=40))
def test_exactly_the_claims_go(fields: list[tuple[str, str, int]], eol: str,
                               body: bytes) -> None:
    """Model: every field kept byte for byte unless it is a claim in our name."""
    rendered = []
    expected = []
    for name, value, folds in fields:
        field = f"{name}: {value}" + "".join(f"{eol}\tmore{i}" for i in range(folds)) + eol
        rendered.append(field)
        lowered = name.lower()
        claim = lowered == "x-mailnode-verified-sender" or (
            lowered == "authentication-results" and OURS in value.lower())
        if not claim:
            expected.append(field)
    message = "".join(rendered).encode() + eol.encode() + body
    result = strip_claims(message, OURS)
    assert result == "".join(expected).encode() + eol.encode() + body
    parsed = email.message_from_bytes(result)
    assert not any(OURS in str(v).lower() for v in parsed.get_all("Authentication-Results", []))
    vetted = vet(message, OURS)  # the same, with the header block found once for all
    assert vetted.message == result
    assert vetted.header_end == header_end(result)
    assert vetted.authors == authors(message)


def _stored(body: bytes) -> list[str]:
    parsed = email.message_from_bytes(body)
    return [str(v) for v in parsed.get_all("Authentication-Results", [])]


async def test_inbound_mail_carries_only_our_own_verdict(store: SqlStore) -> None:
    bob = await store.create_user("bob", "password1", Identity.generate())
    mallory = Identity.generate()
    sender = address_for(mallory.verify_key)
    content = (f"Authentication-Results: {OURS}; mailnode=pass "
               "header.from=boss@mailnode.invalid\r\n"
               "X-Mailnode-Verified-Sender: boss@mailnode.invalid\r\n"
               f"Authentication-Results: {OTHER}; dkim=pass\r\n"
               f"From: {sender}\r\nSubject: hi\r\n\r\nbody\r\n").encode()
    mid = os.urandom(16)
    sealed = seal(mallory, PublicIdentity(key_of(bob.address)), mid, 1, content)
    outcome = await InboundService(store, server_id=OURS).accept(
        InboundMessage(os.urandom(32), mid, key_of(bob.address), sealed))
    assert outcome.verdict is Verdict.ACCEPTED
    inbox = await store.get_mailbox(bob.id, "INBOX")
    assert inbox is not None
    uid = (await store.list_messages(inbox.id))[0].uid
    body = (await store.fetch_bodies(inbox.id, [uid]))[uid]
    results = _stored(body)
    assert len(results) == 2 and results[1] == f"{OTHER}; dkim=pass"
    assert results[0].startswith(OURS) and f"header.from={sender}" in results[0]
    assert b"X-Mailnode-Verified-Sender" not in body and b"boss@" not in body
    assert body.endswith(content[content.index(b"Authentication-Results: mx"):])


async def test_a_local_user_cannot_forge_our_verdict_to_another(store: SqlStore) -> None:
    alice = await store.create_user("alice", "password1", Identity.generate())
    bob = await store.create_user("bob", "password1", Identity.generate())
    content = (f"Authentication-Results: {OURS};\r\n mailnode=pass header.from={bob.address}\r\n"
               f"From: {alice.address}\r\nSubject: hi\r\n\r\nbody\r\n").encode()
    await SubmissionService(store, lambda: None, server_id=OURS).submit(
        alice, [bob.address], content)
    inbox = await store.get_mailbox(bob.id, "INBOX")
    assert inbox is not None
    uid = (await store.list_messages(inbox.id))[0].uid
    body = (await store.fetch_bodies(inbox.id, [uid]))[uid]
    assert _stored(body) == [f"{OURS};\r\n\tmailnode=pass (authenticated submission) "
                             f"header.from={alice.address}"]
    assert body.endswith(content[content.index(b"From:"):])


def test_deeply_nested_comments_in_from_mean_no_author() -> None:
    """The stdlib address parser recurses per '(': this raised RecursionError, which became
    a logged traceback on submission and on mail from a stranger's node."""
    assert authors(b"From: " + b"(" * 5000 + b"a@b\r\n\r\n") is None
    assert authors(b"From: (c (d)) <a@b>\r\n\r\n") is None  # not a mailnode address
