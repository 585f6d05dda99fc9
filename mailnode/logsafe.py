"""Escaping for values that came from the network before they reach a log line.

A login name or SMTP argument containing CR/LF or terminal escapes could otherwise forge log
lines (and fool fail2ban) or drive the operator's terminal. ``clean`` is what call sites use
for such values; it is cheap, never raises and bounds the length. ``SafeFormatter`` is the
second layer, installed on the node's log handler: it escapes every rendered message, so a
call site that forgot ``clean`` (or a library that logs what peers send) still cannot start
a new line or send an escape sequence to the terminal.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from mailnode.ratelimit import RateLimiter

_LIMIT = 200
# A whole log message is bounded too (a library may log a peer's entire line), but loosely:
# it is our own text plus a few values.
MESSAGE_LIMIT = 4000


def escape(text: str) -> str:
    """``text`` with every non-printable character (CR, LF, ESC, NUL, U+2028...) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def clean(value: object, limit: int = _LIMIT) -> str:
    """``value`` as a printable, single-line, length-bounded string (repr-style escapes)."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[:limit * 4]).decode("utf-8", "backslashreplace")
    else:
        text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return escape(text)


class SafeFormatter(logging.Formatter):
    """Renders each record as one printable line; a traceback keeps its line breaks only.

    The traceback block is only present for genuine bugs (``log.exception``), and its line
    structure is what makes it readable; control characters other than LF are still escaped.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return clean(super().formatMessage(record), MESSAGE_LIMIT)

    def formatException(
            self, ei: tuple[type[BaseException], BaseException, TracebackType | None]
            | tuple[None, None, None]) -> str:
        text = super().formatException(ei)
        return "\n".join(escape(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(escape(line) for line in stack_info.split("\n"))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def safe_handler(stream: TextIO) -> logging.Handler:
    """The node's log handler: every line goes through ``SafeFormatter``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    return handler


class LogThrottle:
    """At most ``per_minute`` lines per key (a client address): a stranger reconnecting a
    thousand times a second must not cost the node a thousand log lines a second (disk, and
    the operator's attention). Lines held back are counted and reported with the next one.
    """

    def __init__(self, per_minute: int = 10, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 4096) -> None:
        self._limiter = RateLimiter(per_minute, clock, max_keys)
        self._held: OrderedDict[str, int] = OrderedDict()
        self._max_keys = max_keys

    def allow(self, key: str) -> int | None:
        """None: do not log this one. Otherwise log it, mentioning the returned number of
        lines held back since the last one for ``key`` (0: none)."""
        if self._limiter.try_acquire(key) == 0.0:
            return self._held.pop(key, 0)
        self._held[key] = self._held.pop(key, 0) + 1
        if len(self._held) > self._max_keys:
            self._held.popitem(last=False)
        return None


def held_back(count: int) -> str:
    """The suffix for a throttled log line."""
    return f" ({count} similar lines held back)" if count else ""
