"""LIST/LSUB under hostile patterns and many mailboxes: same answers as a plain reference,
without a backtracking regex and without a scan per name; limits on names and mailboxes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailnode.imap import session as imap_session
from mailnode.imap.session import ListPattern, _add_parents, _has_children
from tests.imap.conftest import Dialog, no_mailboxid


def reference_match(pattern: str, name: str) -> bool:
    """The old regex translation, fine on small inputs."""
    regex = "".join(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch)
                    for ch in pattern)
    if re.fullmatch(regex, name, re.DOTALL):
        return True
    return name == "INBOX" and re.fullmatch(regex, name, re.DOTALL | re.IGNORECASE) is not None


@settings(max_examples=500, deadline=None)
@given(st.text("ab/%*", max_size=10), st.text("ab/", max_size=10))
def test_pattern_equals_reference(pattern: str, name: str) -> None:
    assert ListPattern(pattern)(name) == reference_match(pattern, name)


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("inbox", "INBOX", True), ("InB%", "INBOX", True), ("i*", "INBOX", True),
    ("inbox", "Inbox", False),  # only INBOX itself is case-insensitive
    ("Work/%", "Work/Projects", True), ("Work/%", "Work/Projects/2024", False),
    ("Work/*", "Work/Projects/2024", True), ("%", "Work/Projects", False),
    ("%/%", "Work/Projects", True), ("*%*%", "a/b", True), ("", "", True), ("", "x", False),
    ("\u65e5*", "\u65e5\u672c", True),
])
def test_pattern_examples(pattern: str, name: str, expected: bool) -> None:
    assert ListPattern(pattern)(name) is expected
    assert reference_match(pattern, name) is expected


def test_pathological_patterns_against_long_names_finish() -> None:
    # With a regex each "*" backtracks over the rest: this pair would not finish in years.
    name = "a" * 5000
    assert not ListPattern("*a" * 500 + "b")(name)
    assert not ListPattern("%a" * 500 + "b")(name)
    assert ListPattern("*a" * 500 + "*")(name)
    assert not ListPattern("*a" * 500 + "*")(name[:499])


@settings(max_examples=200, deadline=None)
@given(st.sets(st.lists(st.text("ab", min_size=1, max_size=2), min_size=1, max_size=4).map(
    "/".join), max_size=12))  # valid names: CREATE refuses empty levels
def test_parents_and_children_equal_reference(names: set[str]) -> None:
    expected = set(names)
    for name in names:
        parts = name.split("/")
        expected.update("/".join(parts[:i]) for i in range(1, len(parts)))
    grown = set(names)
    _add_parents(grown)
    assert grown == expected
    ordered = sorted(grown)
    for name in grown:
        assert _has_children(ordered, name) == any(n.startswith(name + "/") for n in grown)


async def test_hostile_list_pattern_over_the_wire(dialog: Dialog) -> None:
    await dialog.login()
    long_name = b"a" * 500
    assert no_mailboxid(await dialog.send(b"c CREATE " + long_name + b"\r\n")) \
        == b"c OK CREATE completed\r\n"
    pattern = b"*a" * 250 + b"b"
    assert await dialog.send(b'l LIST "" "' + pattern + b'"\r\n') == b"l OK LIST completed\r\n"
    out = await dialog.send(b'm LIST "" "' + b"*a" * 250 + b'"\r\n')
    assert out == b'* LIST (\\HasNoChildren) "/" "' + long_name + b'"\r\nm OK LIST completed\r\n'
    too_long = b"*" * (imap_session.MAX_PATTERN_LENGTH + 1)
    assert await dialog.send(b'n LIST "" "' + too_long + b'"\r\n') == \
        b"n NO [LIMIT] Mailbox pattern too long\r\n"
    assert (await dialog.send(b'o LIST "" *\r\n')).endswith(b"o OK LIST completed\r\n")


async def test_mailbox_name_limits(dialog: Dialog) -> None:
    await dialog.login()
    longest = b"n" * imap_session.MAX_NAME_LENGTH
    assert no_mailboxid(await dialog.send(b"a CREATE " + longest + b"\r\n")) \
        == b"a OK CREATE completed\r\n"
    assert (await dialog.send(b"b CREATE " + longest + b"x\r\n")).startswith(b"b NO [LIMIT]")
    deepest = b"/".join([b"d"] * imap_session.MAX_NAME_DEPTH)
    assert no_mailboxid(await dialog.send(b"c CREATE " + deepest + b"\r\n")) \
        == b"c OK CREATE completed\r\n"
    assert (await dialog.send(b"d CREATE " + deepest + b"/d\r\n")).startswith(b"d NO [LIMIT]")
    assert (await dialog.send(b"e RENAME " + longest + b" " + longest + b"x\r\n")).startswith(
        b"e NO [LIMIT]")
    assert await dialog.send(b"f RENAME " + longest + b" short\r\n") == \
        b"f OK RENAME completed\r\n"


async def test_mailbox_count_limit(dialog: Dialog, monkeypatch: pytest.MonkeyPatch) -> None:
    await dialog.login()
    existing = (await dialog.send(b'a LIST "" *\r\n')).count(b"* LIST ")
    monkeypatch.setattr(imap_session, "MAX_MAILBOXES", existing + 2)
    assert no_mailboxid(await dialog.send(b"b CREATE one\r\n")) == b"b OK CREATE completed\r\n"
    assert no_mailboxid(await dialog.send(b"c CREATE two\r\n")) == b"c OK CREATE completed\r\n"
    assert (await dialog.send(b"d CREATE three\r\n")).startswith(b"d NO [LIMIT]")
    assert await dialog.send(b"e DELETE two\r\n") == b"e OK DELETE completed\r\n"
    assert no_mailboxid(await dialog.send(b"f CREATE three\r\n")) == b"f OK CREATE completed\r\n"


async def test_many_mailboxes_list_with_children(dialog: Dialog) -> None:
    await dialog.login()
    for i in range(60):
        await dialog.send(b"c CREATE top/%d/leaf\r\n" % i)
    out = await dialog.send(b'l LIST "" top/%\r\n')
    assert out.count(b"(\\Noselect \\HasChildren)") == 60
    assert out.count(b"* LIST ") == 60
