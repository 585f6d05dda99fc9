"""BINARY (RFC 3516): decoding, FETCH BINARY/BINARY.PEEK/BINARY.SIZE and APPEND with a
literal8, over bytes on both stores; hostile encodings and arguments never crash."""

from __future__ import annotations

import base64
import binascii
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import parser
from mailnode.imap.errors import ParseError
from mailnode.imap.handlers import binary
from mailnode.mime import analyse
from tests.imap.conftest import Dialog

MULTI = (b"From: a@example.org\r\n"
         b"Subject: parts\r\n"
         b"Content-Type: multipart/mixed; boundary=xx\r\n"
         b"\r\n"
         b"--xx\r\n"
         b"Content-Type: application/octet-stream\r\n"
         b"Content-Transfer-Encoding: base64\r\n"
         b"\r\n"
         + base64.encodebytes(b"\x00\x01binary\xff data") +
         b"\r\n--xx\r\n"
         b"Content-Type: text/plain\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n"
         b"\r\n"
         b"caf=C3=A9 soft=\r\n"
         b"break  \r\n"
         b"--xx\r\n"
         b"Content-Type: text/plain\r\n"
         b"Content-Transfer-Encoding: x-uuencode\r\n"
         b"\r\n"
         b"begin 644 x\r\n"
         b"--xx--\r\n")


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


async def appended(dialog: Dialog, message: bytes = MULTI) -> None:
    await dialog.login()
    reply = await dialog.send(b"A APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert b"A OK" in reply
    assert b"S OK" in await dialog.send(b"S SELECT INBOX\r\n")


async def test_capability(dialog: Dialog) -> None:
    await dialog.login()
    assert b" BINARY" in await dialog.send(b"C CAPABILITY\r\n")


async def test_fetch_binary_decodes_base64_and_qp(dialog: Dialog) -> None:
    await appended(dialog)
    reply = await dialog.send(b"F FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[2])\r\n")
    # the CRLF before a boundary belongs to the boundary, not to the part
    assert reply.startswith(b"* 1 FETCH (BINARY.SIZE[1] 14 BINARY[1] ~{14}\r\n"
                            b"\x00\x01binary\xff data BINARY[2] {15}\r\n"
                            b"caf\xc3\xa9 softbreak)\r\n")
    assert reply.endswith(b"F OK FETCH completed\r\n")
    reply = await dialog.send(b"F FETCH 1 (BINARY.PEEK[1]<2.6> BINARY.SIZE[2])\r\n")
    assert reply.startswith(b"* 1 FETCH (BINARY[1]<2> {6}\r\nbinary BINARY.SIZE[2] 15)\r\n")


async def test_binary_sets_seen_unless_peek(dialog: Dialog) -> None:
    await appended(dialog)
    reply = await dialog.send(b"F FETCH 1 (BINARY.PEEK[2] FLAGS)\r\n")
    assert b"\\Seen" not in reply
    reply = await dialog.send(b"F FETCH 1 BINARY[2]\r\n")
    assert b"\\Seen" in reply


async def test_unknown_encoding_gets_unknown_cte(dialog: Dialog) -> None:
    await appended(dialog)
    reply = await dialog.send(b"F FETCH 1 (BINARY.PEEK[3])\r\n")
    assert reply == b"F NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    reply = await dialog.send(b"F FETCH 1 (BINARY.SIZE[3])\r\n")
    assert reply.startswith(b"F NO [UNKNOWN-CTE]")
    # BODY[3] is still fine, and so is a part that does not exist
    assert b"F OK" in await dialog.send(b"F FETCH 1 (BODY.PEEK[3] BINARY.PEEK[9])\r\n")


async def test_append_literal8_keeps_binary_octets(dialog: Dialog) -> None:
    payload = bytes(range(256)) * 3
    message = (b"From: a@example.org\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n" + payload)
    await dialog.login()
    reply = await dialog.send(b"A APPEND INBOX ~{%d}\r\n" % len(message))
    assert reply == b"+ Ready for literal data\r\n"
    assert b"A OK" in await dialog.send(message + b"\r\n")
    await dialog.send(b"S SELECT INBOX\r\n")
    reply = await dialog.send(b"F FETCH 1 (BODY.PEEK[] BINARY.PEEK[1] BINARY.SIZE[1])\r\n")
    body = reply.split(b"BINARY[1]")[0]
    assert b"\x00" not in body and b"Content-Transfer-Encoding: base64" in body
    assert b"BINARY[1] ~{768}\r\n" + payload + b" BINARY.SIZE[1] 768)" in reply


@pytest.mark.parametrize("command", [
    b"F FETCH 1 BINARY[0]", b"F FETCH 1 BINARY[1.]", b"F FETCH 1 BINARY[1.TEXT]",
    b"F FETCH 1 BINARY.SIZE[1]<0.1>", b"F FETCH 1 BINARY[1]<0.0>", b"F FETCH 1 BINARY",
    b"F FETCH 1 BINARY[" + b".".join([b"1"] * 40) + b"]", b"F FETCH 1 BINARY.PEEK[1",
])
async def test_bad_binary_items(dialog: Dialog, command: bytes) -> None:
    await appended(dialog)
    reply = await dialog.send(command + b"\r\n")
    assert reply.startswith(b"F BAD"), reply


def test_decode_examples() -> None:
    assert binary.decode_base64(b"  aGVs  \r\n bG8g  \r\n d29y \t\r\n bGQ= ") == b"hello world"
    assert binary.decode_base64(b"aGVsbG8=garbage!!") == b"hello"  # "=" ends it
    assert binary.decode_qp(b"a=3Db=\r\nc  \r\nd= \t\r\n=6x=") == b"a=bc\r\nd=6x"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 80))
def test_base64_round_trip_with_noise(data: bytes, width: int) -> None:
    encoded = binascii.b2a_base64(data, newline=False)
    folded = b"\r\n ".join(encoded[i:i + width] for i in range(0, len(encoded), width))
    assert binary.decode_base64(folded) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_qp_round_trip(data: bytes) -> None:
    text = data.replace(b"\r", b"").replace(b"\n", b"\r\n")  # text lines end in CRLF
    assert binary.decode_qp(binascii.b2a_qp(text, istext=False).replace(b"\n", b"\r\n")) \
        == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_hostile_encoded_data_never_raises(data: bytes) -> None:
    assert len(binary.decode_base64(data)) <= len(data)
    assert len(binary.decode_qp(data)) <= len(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_for_storage_round_trips_binary_parts(payload: bytes, multipart: bool) -> None:
    part = (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary"
            b"\r\n\r\n" + payload)
    if multipart:
        message = (b"Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n--=_b\r\n" + part
                   + b"\r\n--=_b--\r\n")
    else:
        message = b"From: x@example.org\r\n" + part
    stored = binary.for_storage(message)
    assert b"\x00" not in stored
    assert re.search(rb"(?i)content-transfer-encoding: base64", stored)
    assert binary.decoded(stored, analyse(stored), (1,)) == payload


def test_literal8_only_for_append_message() -> None:
    cmd = parser.parse_one(b"A APPEND INBOX ~{3}\r\nabc\r\n")
    assert getattr(cmd, "binary", False)
    with pytest.raises(ParseError):
        parser.parse_one(b"A APPEND INBOX ~ {3}\r\nabc\r\n")
