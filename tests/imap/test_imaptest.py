"""Dovecot's imaptest compliance scripts against a real node, so that compliance cannot regress.

imaptest (MIT, github.com/dovecot/imaptest) is built from ``../shared/imaptest`` by its
build.sh, with ``imaptest-checkpoint.patch`` (two crashes of its load mode with ``checkpoint=``)
applied on top, or found through $IMAPTEST (the binary) or, unpatched, /work/imaptest-build.
Without it the test skips: building needs root, apt and network, which a clean CI machine may
not have. Every script file runs on its own so that a failure is named by file; the files listed
in ``imaptest_passing.txt`` must keep passing, and the counts are printed for the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.nodes import NodeProcess, cli

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT.parent / "shared" / "imaptest" / "build.sh"
SHARED_PATCH = "debian-dovecot-2.3.19.1.patch"  # the patch build.sh applies, by name
OUR_PATCH = Path(__file__).with_name("imaptest-checkpoint.patch")
PASSING = Path(__file__).with_name("imaptest_passing.txt")
USER, PASSWORD = "imaptester", "imaptest-password"
_SUMMARY = re.compile(r"(\d+) test groups: (\d+) failed")
_COMMANDS = re.compile(r"(base protocol|extensions): (\d+)/(\d+) individual commands failed")


def _built(directory: Path) -> Path | None:
    binary = directory / "bin" / "imaptest"
    return binary if os.access(binary, os.X_OK) and (directory / "tests").is_dir() else None


def find_or_build() -> Path | None:
    """The imaptest binary (its scripts are in ../tests), building it into a cache if we can.

    The cache is named by our patch's hash, so that a changed patch builds again; the unpatched
    /work/imaptest-build is the last resort (its load mode aborts with ``checkpoint=``)."""
    if os.environ.get("IMAPTEST"):
        binary = Path(os.environ["IMAPTEST"])
        return binary if _built(binary.parent.parent) else None
    digest = hashlib.sha256(OUR_PATCH.read_bytes()).hexdigest()[:12]
    cache = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
             / f"mailnode-imaptest-{digest}")
    if found := _built(cache):
        return found
    can_install = os.path.exists("/usr/lib/dovecot/dovecot-config") or (
        os.geteuid() == 0 and shutil.which("apt-get") is not None)
    if BUILD_SCRIPT.exists() and can_install:
        cache.mkdir(parents=True, exist_ok=True)
        with (cache.parent / "mailnode-imaptest.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build once
            if not _built(cache):
                build(cache)
        if found := _built(cache):
            return found
    return _built(Path("/work/imaptest-build"))


def build(out: Path) -> None:
    """Run the shared build.sh from a copy of its directory whose patch has ours appended, so
    that the shared script and source stay untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for path in BUILD_SCRIPT.parent.iterdir():
            if path.is_file():
                shutil.copyfile(path, copy / path.name)  # writable: ours is appended
        with (copy / SHARED_PATCH).open("ab") as patch:
            patch.write(OUR_PATCH.read_bytes())
        with contextlib.suppress(subprocess.TimeoutExpired):  # then not built: callers skip
            subprocess.run(["bash", str(copy / BUILD_SCRIPT.name), str(out)],
                           capture_output=True, timeout=900, check=False,
                           stdin=subprocess.DEVNULL)


@dataclass(frozen=True)
class Outcome:
    """One script file's result: passed, failed or skipped (server lacks the capability)."""

    name: str
    core: bool
    status: str
    detail: str


def script_files(tests: Path) -> list[tuple[str, bool]]:
    """(name, is_core) for every script; core files name no required capabilities."""
    found = []
    for path in sorted(tests.iterdir()):
        if path.is_file() and path.suffix != ".mbox":
            text = path.read_text(errors="replace")
            found.append((path.name, not re.search(r"(?m)^capabilities:", text)))
    return found


def run_file(binary: Path, tests: Path, name: str, core: bool, port: int) -> Outcome:
    try:
        done = subprocess.run(
            [str(binary), "host=127.0.0.1", f"port={port}", f"user={USER}", f"pass={PASSWORD}",
             f"test={tests / name}"],
            capture_output=True, text=True, errors="replace", timeout=30,
            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Outcome(name, core, "fail", "timed out")
    out = done.stdout + done.stderr
    summary = _SUMMARY.search(out)
    commands = sum(int(m.group(3)) for m in _COMMANDS.finditer(out))
    if summary is None or int(summary.group(2)) > 0:
        status = "fail"
    else:  # imaptest logs out at once when a required capability is missing: nothing ran
        status = "pass" if commands else "skip"
    failures = [line[:200] for line in out.splitlines() if line.startswith(("***", " - "))]
    return Outcome(name, core, status, "\n".join(failures[:6]))


def expected_passing() -> set[str]:
    lines = PASSING.read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines} - {""}


@pytest.fixture(scope="module")
def imaptest() -> Path:
    binary = find_or_build()
    if binary is None:
        pytest.skip("imaptest not built and cannot be built here (needs root, apt and network; "
                    "or set IMAPTEST=/path/to/bin/imaptest)")
    return binary


def test_imaptest_scripts_keep_passing(imaptest: Path, tmp_path: Path) -> None:
    tests = imaptest.parent.parent / "tests"
    node = NodeProcess.init(tmp_path, [], max_messages_per_minute=100_000,
                            max_connections_per_source=100, max_sessions_per_user=100,
                            failed_login_delay=0.0)
    cli(tmp_path, "user", "add", USER, password=PASSWORD)
    node.start()
    try:
        outcomes = [run_file(imaptest, tests, name, core, node.imap_port)
                    for name, core in script_files(tests)]
    finally:
        node.stop()
    for kind, core in (("core", True), ("extension", False)):
        mine = [o for o in outcomes if o.core == core]
        counts = {s: sum(o.status == s for o in mine) for s in ("pass", "fail", "skip")}
        print(f"imaptest {kind}: {counts['pass']}/{len(mine)} pass, {counts['fail']} fail, "
              f"{counts['skip']} skipped for missing capabilities")
    passing = {o.name for o in outcomes if o.status == "pass"}
    print("failing:", " ".join(o.name for o in outcomes if o.status == "fail") or "none")
    expected = expected_passing()
    if passing - expected:
        print(f"now passing too (add to {PASSING.name}):", " ".join(sorted(passing - expected)))
    regressed = [o for o in outcomes if o.name in expected and o.status != "pass"]
    assert not regressed, "imaptest files that passed before fail now:\n" + "\n".join(
        f"{o.name}: {o.status}\n{o.detail}" for o in regressed)
    assert expected <= {name for name, _ in script_files(tests)}, "unknown file in the list"
