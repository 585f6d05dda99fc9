"""A watcher session's untagged responses, applied by a model client, always give the
mailbox as the store has it: random appends, flag changes, expunges and moves by a second
session, with and without QRESYNC, on both stores.

The model client does what RFC 3501 asks of a client: EXPUNGE n removes the n-th message,
EXISTS n extends the list, FETCH with UID and FLAGS updates that message; VANISHED removes
uids. After each NOOP, ``UID FETCH 1:* (FLAGS)`` must agree with the model and with the store.
A FETCH by sequence number in between must never carry EXPUNGE (RFC 3501 §7.4.1).
"""

from __future__ import annotations

import random
import re

import pytest

from mailnode.imap.session import ImapSession
from mailnode.store.api import MailStore
from mailnode.store.notify import ChangeNotifier
from tests.imap.conftest import MESSAGE, Dialog

_LINE = re.compile(rb"\* (\d+) (EXISTS|EXPUNGE|FETCH \((.*)\))\r\n")
_VANISHED = re.compile(rb"\* VANISHED (?!\(EARLIER\))([\d:,]+)\r\n")
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


def _uids(text: bytes) -> set[int]:
    out: set[int] = set()
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        out.update(range(int(low), int(high or low) + 1))
    return out


class Model:
    def __init__(self) -> None:
        self.uids: list[int | None] = []
        self.flags: dict[int, frozenset[str]] = {}
        self.announced: set[str] = set()
        self.removed = 0

    def apply(self, out: bytes) -> None:
        for line in out.split(b"\r\n"):
            line += b"\r\n"
            if line.startswith(b"* FLAGS ("):
                self.announced = set(line[9:-3].decode().split())
                continue
            vanished = _VANISHED.fullmatch(line)
            if vanished:
                gone = _uids(vanished.group(1))
                self.removed += len(gone)
                self.uids = [u for u in self.uids if u not in gone]
                continue
            m = _LINE.fullmatch(line)
            if m is None:
                continue
            n = int(m.group(1))
            if m.group(2) == b"EXISTS":
                assert n >= len(self.uids), "EXISTS may not shrink the mailbox"
                self.uids += [None] * (n - len(self.uids))
            elif m.group(2) == b"EXPUNGE":
                del self.uids[n - 1]
                self.removed += 1
            else:
                items = m.group(3)
                uid = _UID.search(items)
                if uid is not None:
                    known = self.uids[n - 1]
                    assert known in (None, int(uid.group(1))), (n, known, line)
                    self.uids[n - 1] = int(uid.group(1))
                flags = _FLAGS.search(items)
                if flags is not None:  # no keyword before FLAGS announced it
                    assert set(flags.group(1).decode().split()) - {"\\Recent"} \
                        <= self.announced, (line, self.announced)
                if flags is not None and self.uids[n - 1] is not None:
                    self.flags[self.uids[n - 1]] = frozenset(  # type: ignore[index]
                        flags.group(1).decode().split()) - {"\\Recent"}


async def _session(store: MailStore, notifier: ChangeNotifier) -> Dialog:
    d = Dialog(ImapSession(store, notifier))
    assert (await d.send(b"L LOGIN alice secret\r\n")).startswith(b"L OK")
    return d


@pytest.mark.parametrize("qresync", [False, True])
async def test_the_watchers_responses_add_up_to_the_mailbox(
        store: MailStore, notifier: ChangeNotifier, qresync: bool) -> None:
    rng = random.Random(11 + qresync)
    writer, watcher = await _session(store, notifier), await _session(store, notifier)
    for _ in range(4):
        await writer.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    await writer.send(b"s SELECT INBOX\r\n")
    if qresync:
        await watcher.send(b"e ENABLE QRESYNC\r\n")
    model = Model()
    model.apply(await watcher.send(b"s SELECT INBOX\r\n"))
    model.apply(await watcher.send(b"u UID FETCH 1:* (FLAGS)\r\n"))
    user = await store.authenticate("alice", "secret")
    assert user is not None
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for step in range(50):
        listing = await store.list_messages(inbox.id)
        op = rng.choice(["append", "flags", "flags", "expunge", "move"])
        if op == "append" or not listing:
            await writer.send(b"a APPEND INBOX (%s) {%d+}\r\n" % (
                rng.choice([b"", b"\\Seen", b"$K%d" % rng.randint(1, 5)]), len(MESSAGE))
                + MESSAGE + b"\r\n")
        else:
            uid = rng.choice(listing).uid
            if op == "flags":
                flag = rng.choice([b"\\Flagged", b"\\Deleted", b"$K%d" % rng.randint(1, 5)])
                await writer.send(b"f UID STORE %d %sFLAGS (%s)\r\n" % (
                    uid, rng.choice([b"+", b"-", b""]), flag))
            elif op == "expunge":
                await writer.send(b"d UID STORE %d +FLAGS (\\Deleted)\r\n"
                                  b"e UID EXPUNGE %d\r\n" % (uid, uid))
            else:
                await writer.send(b"m UID MOVE %d Trash\r\n" % uid)
        if step % 3 == 0 and model.uids:  # a FETCH by number: no EXPUNGE may come with it
            out = await watcher.send(b"f FETCH 1:%d (FLAGS)\r\n" % len(model.uids))
            assert b"EXPUNGE" not in out and b"VANISHED" not in out, out
            model.apply(out)
            continue
        model.apply(await watcher.send(b"n NOOP\r\n"))
        out = await watcher.send(b"u UID FETCH 1:* (FLAGS)\r\n")
        model.apply(out)
        listing = await store.list_messages(inbox.id)
        assert model.uids == [m.uid for m in listing], (step, out)
        assert {u: model.flags[u] for u in model.uids  # type: ignore[index]
                } == {m.uid: m.flags for m in listing}
    # The run was not vacuous: messages went, and keywords were announced on the way.
    assert model.removed >= 5 and any(k.startswith("$K") for k in model.announced)
