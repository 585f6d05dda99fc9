"""A strict reader for the IMAP data ENVELOPE and BODYSTRUCTURE render to, so tests can check
they are well formed: parentheses balanced, quoted strings clean, literal lengths exact."""

from __future__ import annotations

import re
from typing import TypeAlias

Value: TypeAlias = int | bytes | str | list["Value"] | None
_LITERAL = re.compile(rb"\{(\d+)\}\r\n")
# An atom, or a FETCH item name such as BODY[HEADER.FIELDS (FROM)]<0>.
_ATOM = re.compile(rb"[^ ()\"{\r\n\x00-\x1f\x7f\[\]]+(?:\[[^\]\r\n]*\](?:<\d+>)?)?")


def read(data: bytes) -> Value:
    """The single value ``data`` holds; AssertionError when it is not exactly one value."""
    value, pos = _value(data, 0)
    assert pos == len(data), f"trailing data at {pos}: {data[pos:pos + 40]!r}"
    return value


def _value(data: bytes, pos: int) -> tuple[Value, int]:
    c = data[pos:pos + 1]
    if c == b"(":
        items: list[Value] = []
        pos += 1
        while data[pos:pos + 1] != b")":
            assert pos < len(data), "unbalanced parenthesis"
            if items and data[pos:pos + 1] == b" ":
                pos += 1
            item, pos = _value(data, pos)
            items.append(item)
        return items, pos + 1
    if c == b'"':
        out = bytearray()
        pos += 1
        while True:
            ch = data[pos:pos + 1]
            assert ch, "unterminated quoted string"
            assert ch not in (b"\r", b"\n", b"\x00") and ch[0] < 0x80, "bad byte in quoted"
            if ch == b"\\":
                nxt = data[pos + 1:pos + 2]
                assert nxt in (b"\\", b'"'), "bad quoted-pair"
                out += nxt
                pos += 2
            elif ch == b'"':
                return bytes(out), pos + 1
            else:
                out += ch
                pos += 1
    m = _LITERAL.match(data, pos)
    if m is not None:
        n = int(m.group(1))
        end = m.end() + n
        assert end <= len(data), "literal longer than the data"
        return data[m.end():end], end
    m = _ATOM.match(data, pos)
    assert m is not None, f"no value at {pos}: {data[pos:pos + 40]!r}"
    atom = m.group()
    if atom == b"NIL":
        return None, m.end()
    if atom.isdigit():
        return int(atom), m.end()
    return atom.decode("ascii"), m.end()


def check_address_list(value: Value) -> None:
    if value is None:
        return
    assert isinstance(value, list) and value
    for address in value:
        assert isinstance(address, list) and len(address) == 4
        assert all(x is None or isinstance(x, bytes) for x in address)


def check_envelope(data: bytes) -> list[Value]:
    env = read(data)
    assert isinstance(env, list) and len(env) == 10
    for i in (0, 1, 8, 9):
        assert env[i] is None or isinstance(env[i], bytes)
    for i in range(2, 8):
        check_address_list(env[i])
    return env


def _check_params(value: Value) -> None:
    assert value is None or (isinstance(value, list) and len(value) % 2 == 0
                             and all(isinstance(x, bytes) for x in value))


def check_body(value: Value, extended: bool) -> int:
    """Validate one body; returns its nesting depth."""
    assert isinstance(value, list) and value
    if isinstance(value[0], list):  # multipart: bodies, then the subtype
        n = 0
        while n < len(value) and isinstance(value[n], list):
            n += 1
        assert isinstance(value[n], bytes)
        if extended:
            assert len(value) == n + 5
            _check_params(value[n + 1])
        else:
            assert len(value) == n + 1
        return 1 + max(check_body(child, extended) for child in value[:n])
    assert isinstance(value[0], bytes) and isinstance(value[1], bytes)
    _check_params(value[2])
    assert isinstance(value[6], int)
    depth = 1
    rest = value[7:]
    if (value[0].upper(), value[1].upper()) == (b"MESSAGE", b"RFC822"):
        assert isinstance(rest[0], list) and len(rest[0]) == 10  # envelope
        depth += check_body(rest[1], extended)
        assert isinstance(rest[2], int)
        rest = rest[3:]
    elif value[0].upper() == b"TEXT":
        assert isinstance(rest[0], int)
        rest = rest[1:]
    assert len(rest) == (4 if extended else 0)
    return depth


def check_bodystructure(data: bytes, extended: bool) -> int:
    return check_body(read(data), extended)
