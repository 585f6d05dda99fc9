"""The node's transport key on disk (owner-only), separate from its users' keys."""

from __future__ import annotations

import os
from pathlib import Path

from crypto.keys import Identity


def create_node_key(path: Path) -> Identity:
    identity = Identity.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(identity.seed)
    return identity


def load_node_key(path: Path) -> Identity:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); "
                              f"run: chmod 600 {path}")
    return Identity(path.read_bytes())
