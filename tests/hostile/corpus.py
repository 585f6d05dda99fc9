"""Hostile messages: each is valid enough to be delivered, and built to make a naive
parser slow, deep, huge or crash. Sizes stay near a megabyte so the suite runs in seconds;
the parser's bounds, not the size, are what is exercised."""

from __future__ import annotations

from collections.abc import Callable


def _head(author: str, extra: bytes = b"") -> bytes:
    return (b"From: <" + author.encode() + b">\r\nTo: victim@example\r\n"
            b"Subject: hostile\r\nMessage-ID: <h@example>\r\n" + extra)


def nested_comments(author: str) -> bytes:
    return _head(author, b"Cc: " + b"(" * 200_000 + b"x@y\r\n") + b"\r\nbody\r\n"


def nested_groups_and_routes(author: str) -> bytes:
    groups = b"Bcc: " + b"g: " * 50_000 + b"<@a,@b,@c:u@h>" + b";" * 50_000 + b"\r\n"
    return _head(author, groups) + b"\r\nbody\r\n"


def many_parameters(author: str) -> bytes:
    params = b"".join(b";\r\n p%d*%d*=utf-8''%%41" % (i, i) for i in range(40_000))
    return _head(author, b"MIME-Version: 1.0\r\nContent-Type: text/plain" + params
                 + b"\r\n") + b"\r\nbody\r\n"


def thousands_of_parts(author: str) -> bytes:
    part = b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n"
    return (_head(author, b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
                  b"boundary=b\r\n") + b"\r\n" + part * 20_000 + b"--b--\r\n")


def deep_multipart(author: str) -> bytes:
    depth = 5_000
    opening = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                       % (i, i + 1) for i in range(depth))
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth + 1)))
    return (_head(author, b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
                  b"boundary=b0\r\n") + b"\r\n" + opening + b"leaf\r\n" + closing)


def deep_rfc822(author: str) -> bytes:
    inner = b"Subject: leaf\r\n\r\nleaf\r\n"
    for _ in range(3_000):
        inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    return _head(author, b"MIME-Version: 1.0\r\n") + inner


def huge_header_count(author: str) -> bytes:
    return _head(author, b"X-A: b\r\n" * 150_000) + b"\r\nbody\r\n"


def one_huge_header_line(author: str) -> bytes:
    return _head(author, b"X-Long: " + b"a" * 2_000_000 + b"\r\n") + b"\r\nbody\r\n"


def broken_boundaries(author: str) -> bytes:
    return (_head(author, b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
                  b"boundary=\"unclosed\r\n") + b"\r\n" + b"--unclosed\r\n" * 50_000)


def binary_garbage(author: str) -> bytes:
    return _head(author, b"Content-Type: text/plain; charset=\x00\xff\xfe\r\n") + \
        b"\r\n" + bytes(range(256)) * 4000


MESSAGES: dict[str, Callable[[str], bytes]] = {
    f.__name__: f for f in (nested_comments, nested_groups_and_routes, many_parameters,
                            thousands_of_parts, deep_multipart, deep_rfc822, huge_header_count,
                            one_huge_header_line, broken_boundaries, binary_garbage)}
"""Every hostile message by name; each takes the author address its From: must carry."""
