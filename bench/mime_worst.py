"""Worst-case MIME analysis: mailnode's ``analyse`` against the stdlib ``email`` parser on
the same hostile messages, in the same run.

For every class in ``tests/mime/corpus.py`` at 1 MB and 10 MB it prints the time of
``analyse`` plus rendering ENVELOPE and BODYSTRUCTURE, and of the two stdlib paths the
IMAP server used before: compat32 parse + ``get_params``/``getaddresses`` over every part
(FETCH), and ``BytesParser(policy=default)`` + ``get_content`` of text parts + header access
(SEARCH). Each stdlib run gets its own process and a time limit, since some never finish.
Run: ``python -m bench.mime_worst [--sizes 1000000,10000000] [--limit 60]``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32, default
from email.utils import getaddresses

from mailnode.imap import mime
from mailnode.mime import analyse
from tests.mime.corpus import CLASSES

_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")


def mailnode_path(raw: bytes) -> None:
    structure = analyse(raw)
    mime.envelope(structure)
    mime.bodystructure(structure.root, extended=True)


def stdlib_fetch_path(raw: bytes) -> None:
    msg = BytesParser(policy=compat32).parsebytes(raw)
    for part in msg.walk():
        part.get_content_type()
        part.get_params()
        part.get_params(header="content-disposition")
    getaddresses([str(v) for f in _ADDRESS_FIELDS for v in msg.get_all(f, [])])


def stdlib_search_path(raw: bytes) -> None:
    msg = BytesParser(policy=default).parsebytes(raw)
    for name in (*_ADDRESS_FIELDS, "subject", "date"):
        for v in msg.get_all(name, []):
            str(v)
    for part in msg.walk():
        if isinstance(part, Message) and part.get_content_maintype() == "text" \
                and not part.is_multipart():
            with contextlib.suppress(Exception):  # the baseline's own failures do not count
                part.get_content()


def _timed(target: str, name: str, size: int, out: mp.Queue[str]) -> None:
    raw = CLASSES[name](size)
    fn = {"fetch": stdlib_fetch_path, "search": stdlib_search_path}[target]
    start = time.perf_counter()
    try:
        fn(raw)
    except RecursionError:
        out.put("RecursionError")
        return
    except Exception as exc:
        out.put(type(exc).__name__)
        return
    out.put(f"{time.perf_counter() - start:.3f}")


def stdlib_time(target: str, name: str, size: int, limit: float) -> str:
    """Seconds (as text), the exception it died of, or ``>limit`` when killed."""
    queue: mp.Queue[str] = mp.Queue()
    proc = mp.Process(target=_timed, args=(target, name, size, queue))
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return f">{limit:.0f}"
    return queue.get() if not queue.empty() else "crashed"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--limit", type=float, default=60.0)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [n for n in CLASSES if not args.only or n in args.only.split(",")]
    print(f"{'class':22s} {'bytes':>10s} {'mailnode s':>10s} {'stdlib FETCH s':>14s} "
          f"{'stdlib SEARCH s':>15s} {'ratio':>8s}")
    worst = (0.0, "", 0)
    for name in names:
        for size in sizes:
            raw = CLASSES[name](size)
            start = time.perf_counter()
            mailnode_path(raw)
            ours = time.perf_counter() - start
            worst = max(worst, (ours, name, len(raw)))
            fetch = stdlib_time("fetch", name, size, args.limit)
            search = stdlib_time("search", name, size, args.limit)
            try:
                ratio = f"{float(fetch) / ours:.1f}x"
            except ValueError:
                ratio = "-"
            print(f"{name:22s} {len(raw):10d} {ours:10.3f} {fetch:>14s} {search:>15s} "
                  f"{ratio:>8s}", flush=True)
    print(f"worst for mailnode: {worst[1]} ({worst[2]} bytes) in {worst[0]:.3f} s")


if __name__ == "__main__":
    main()
