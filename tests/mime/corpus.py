"""Hostile message classes, each a function of a target size in bytes (shared by the tests
and ``bench/mime_worst.py``)."""

from __future__ import annotations

import random
from collections.abc import Callable

HEAD = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hostile\r\n"


def _fill(unit: bytes, size: int) -> bytes:
    return unit * max(1, size // len(unit))


def comment_nesting(size: int) -> bytes:
    """``From: ((((((...`` never closed, and a balanced nest in To."""
    half = size // 2
    return (b"From: " + b"(" * half + b"\r\nTo: " + b"(" * (half // 4) + b"x"
            + b")" * (half // 4) + b" a@b\r\nSubject: c\r\n\r\nbody\r\n")


def many_parts(size: int) -> bytes:
    unit = b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsome text\r\n"
    return (HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            + _fill(unit, size) + b"--b--\r\n")


def deep_multipart(size: int) -> bytes:
    """Multiparts nested as deep as the size allows, each with its own boundary."""
    head = HEAD + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    depth = max(1, size // 64)
    opening = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                       % (i, i + 1) for i in range(depth))
    closing = b"".join(b"\r\n--b%d--" % i for i in range(depth, -1, -1))
    return head + opening + b"--b%d\r\n\r\nleaf" % depth + closing + b"\r\n"


def deep_message(size: int) -> bytes:
    """message/rfc822 inside message/rfc822 ... (no boundaries at all)."""
    unit = b"Subject: x\r\nContent-Type: message/rfc822\r\n\r\n"
    return HEAD + b"Content-Type: message/rfc822\r\n\r\n" + _fill(unit, size) + b"\r\nend\r\n"


def header_fields(size: int) -> bytes:
    return HEAD + _fill(b"X-Field: value\r\nTo: c@d\r\n", size) + b"\r\nbody\r\n"


def huge_params(size: int) -> bytes:
    return (HEAD + b"Content-Type: text/plain" + _fill(b";\r\n p=vvvvvvvv", size)
            + b"\r\n\r\nbody\r\n")


def rfc2231_sections(size: int) -> bytes:
    units = max(1, size // 24)
    sections = b"".join(b";\r\n filename*%d*=%%41%%42" % i for i in range(units))
    return (HEAD + b"Content-Type: text/plain\r\nContent-Disposition: attachment"
            + sections + b"\r\n\r\nbody\r\n")


def long_header_line(size: int) -> bytes:
    return b"Subject: " + b"x" * size + b"\r\n\r\nbody\r\n"


def address_list(size: int) -> bytes:
    return b"To: " + _fill(b'"N, x" <a@b>, c@d (C), ', size) + b"\r\n\r\nbody\r\n"


def groups_and_routes(size: int) -> bytes:
    return (b"To: " + _fill(b"g: a@b, <@r1,@r2:u@h>;", size) + b"\r\nCc: "
            + _fill(b"h:", size // 8) + b"\r\n\r\nbody\r\n")


def unbalanced(size: int) -> bytes:
    quarter = size // 4
    return (b'From: "' + b"<[" * quarter + b"\r\nTo: [" + b"\\" * quarter
            + b'\r\nContent-Type: text/plain; name="' + b"x" * quarter + b"\r\n\r\nbody\r\n")


def boundary_lookalikes(size: int) -> bytes:
    """Lines that start like a delimiter but are not one, and boundaries that are prefixes
    of each other."""
    return (HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            + b'Content-Type: multipart/mixed; boundary="bb"\r\n\r\n--bb\r\n\r\n'
            + _fill(b"--bbb\r\n--b x\r\n--\r\n", size) + b"\r\n--bb--\r\n--b--\r\n")


def lf_only(size: int) -> bytes:
    unit = b"--b\nContent-Type: text/plain\n\nline\n"
    return (b"From: a@b\nContent-Type: multipart/mixed; boundary=b\n\n" + _fill(unit, size)
            + b"--b--\n")


def no_separator(size: int) -> bytes:
    return _fill(b"X-Header-Without-End: value\r\n", size)


def garbage(size: int) -> bytes:
    rng = random.Random(size)
    alphabet = b"\x00\r\n-:;=()<>@\"\\ \tab\x80\xff"
    return bytes(rng.choice(alphabet) for _ in range(size))


CLASSES: dict[str, Callable[[int], bytes]] = {
    "comment_nesting": comment_nesting,
    "many_parts": many_parts,
    "deep_multipart": deep_multipart,
    "deep_message": deep_message,
    "header_fields": header_fields,
    "huge_params": huge_params,
    "rfc2231_sections": rfc2231_sections,
    "long_header_line": long_header_line,
    "address_list": address_list,
    "groups_and_routes": groups_and_routes,
    "unbalanced": unbalanced,
    "boundary_lookalikes": boundary_lookalikes,
    "lf_only": lf_only,
    "no_separator": no_separator,
    "garbage": garbage,
}
