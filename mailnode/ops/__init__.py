"""Operating a node: backup and restore, mail import and export."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

Progress = Callable[[int, int], None]
"""Called with (done, total) as work proceeds (pages copied, messages imported)."""


def progress_printer(stream: TextIO, what: str) -> Callable[[int, int], None]:
    """Progress on one rewritten line in a terminal; elsewhere (logs, pipes) only the end."""
    tty = stream.isatty()

    def show(done: int, total: int) -> None:
        if tty:
            stream.write(f"\r{what}: {done}/{total}")
            if done >= total:
                stream.write("\n")
        elif done >= total:
            stream.write(f"{what}: {done}/{total}\n")
        stream.flush()
    return show
