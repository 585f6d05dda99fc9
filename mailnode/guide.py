"""What ``init`` and ``quickstart`` tell a new owner: each choice in one line, and what a data
directory holds, so that ``status`` and ``init`` never contradict each other."""

from __future__ import annotations

import os
from pathlib import Path

from mailnode.config import CONFIG_NAME, DB_NAME, NODE_KEY_NAME, Config, is_loopback

JOIN_HINT = ("Join friends: `mailnode invite` prints a one-time token to send to a friend; "
             "`mailnode friend add TOKEN` accepts theirs.")


def unusable_dir(data_dir: Path) -> str | None:
    """Why a node cannot be created in ``data_dir`` (one line saying what to do), or None."""
    if data_dir.exists() and not data_dir.is_dir():
        return f"{data_dir} is a file, not a directory: choose another --data-dir"
    existing = data_dir
    while not existing.exists():  # the nearest ancestor that exists decides
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing != data_dir and not existing.is_dir():
        return f"cannot create {data_dir}: {existing} is a file; choose another --data-dir"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"cannot create a node in {data_dir}: {existing} is not writable by you; "
                "choose another --data-dir (e.g. one in your home directory)")
    return None


def orphaned(data_dir: Path) -> bool:
    """A node's keys or mail without its mailnode.toml (the file was deleted or lost)."""
    return not (data_dir / CONFIG_NAME).exists() and (
        (data_dir / DB_NAME).exists() or (data_dir / NODE_KEY_NAME).exists())


def no_node(data_dir: Path) -> str:
    """The one line for a command that needs a node where there is no complete one."""
    if orphaned(data_dir):
        return (f"{data_dir} holds a node's keys and mail but no {CONFIG_NAME}: run "
                f"`mailnode --data-dir {data_dir} init` to write a new one (keys and mail are "
                "kept)")
    return f"no node in {data_dir}: run `mailnode --data-dir {data_dir} init` first"


def choices(config: Config, data_dir: Path) -> list[str]:
    """One line per choice made for a new node, with how to change it."""
    private = is_loopback(config.host)
    p2p_private = is_loopback(config.p2p_bind)
    return [
        f"  data directory : {data_dir}  (--data-dir or $MAILNODE_HOME to put it elsewhere; "
        "back it up: it holds the keys)",
        f"  mail clients   : {config.host}, SMTP port {config.smtp_port}, IMAP port "
        f"{config.imap_port}, implicit TLS: SMTPS {config.smtps_port or 'off'}, IMAPS "
        f"{config.imaps_port or 'off'}  ("
        + ("this machine only; --host to serve other devices" if private else
           "reachable from other machines: a password is only taken after STARTTLS")
        + ")",
        f"  other nodes    : {config.p2p_bind} port {config.p2p_port} (UDP and TCP)  ("
        + ("this machine only: no mail from other machines; --p2p-host 0.0.0.0 to federate"
           if p2p_private else "other machines' nodes deliver here")
        + ")",
        "  network        : "
        + (f"joins through {', '.join(config.bootstrap)}" if config.bootstrap else
           "on its own until you add a friend or --bootstrap HOST:PORT"),
    ]
