"""``mailnode logs``: the last lines of ``mailnode.log``, then what is appended (tail -F).

The tail is read backwards in blocks, so a large log costs only what is printed. While
following, a rotation (the file renamed away and a new one created) is noticed by its
inode and the new file is read from its start.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

BLOCK = 64 * 1024


def last_lines(path: Path, count: int, end: int | None = None) -> bytes:
    """The last ``count`` lines of ``path`` before offset ``end`` (default: its end); a
    partial last line counts as one."""
    if count <= 0:
        return b""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END) if end is None else end
        data, pos = b"", end
        while pos > 0 and data.count(b"\n", 0, len(data) - 1) < count:
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    body = data[:-1] if data.endswith(b"\n") else data
    cut = -1
    for _ in range(count):
        cut = body.rfind(b"\n", 0, cut if cut >= 0 else len(body))
        if cut < 0:
            return data
    return data[cut + 1:]


def follow(path: Path, out: TextIO, count: int, keep_going: Callable[[], bool] = lambda: True,
           interval: float = 0.5) -> None:
    """Print the last ``count`` lines, then new ones until ``keep_going()`` is false."""
    f = path.open("rb")
    try:
        end = f.seek(0, os.SEEK_END)  # first: a line written meanwhile comes next
        out.write(last_lines(path, count, end).decode("utf-8", "replace"))
        out.flush()
        while keep_going():
            chunk = f.read(BLOCK)
            if chunk:
                out.write(chunk.decode("utf-8", "replace"))
                out.flush()
                continue
            try:
                current = path.stat()
            except FileNotFoundError:  # between the rename and the new file
                current = None
            if current is not None and (current.st_ino != os.fstat(f.fileno()).st_ino
                                        or current.st_size < f.tell()):
                f.close()
                f = path.open("rb")  # rotated or truncated: the new file from its start
                continue
            time.sleep(interval)
    finally:
        f.close()
