"""``mailnode install-service``: a systemd unit that runs the node sandboxed.

The node needs to write only its data directory and to open sockets, so the unit gives it
exactly that: a dedicated unprivileged user, a read-only view of the system
(``ProtectSystem=strict``) with the data directory as the one writable path, no privilege
gain, no devices, a native system-call set, and only the right to bind ports below 1024
(for 465/993-style listeners). Paths and the user name are checked, never quoted, so
nothing can inject a line into the unit.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")
_SAFE_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class ServiceError(Exception):
    """The unit cannot be written as asked; the message says what to change."""


def unit(data_dir: Path, user: str, python: str = sys.executable) -> str:
    """The unit file's text for a node in ``data_dir`` run as ``user``."""
    data = os.path.abspath(data_dir)
    for what, value in (("data directory", data), ("python", python)):
        if not _SAFE_PATH.fullmatch(value):
            raise ServiceError(f"the {what} path {value!r} has characters a unit file "
                               "cannot hold safely; use letters, digits and . _ - / @ +")
    if not _SAFE_USER.fullmatch(user):
        raise ServiceError(f"{user!r} is not a valid system user name")
    return f"""\
# mailnode, sandboxed. Written by `mailnode install-service`; see README, "Run it as a service".
[Unit]
Description=mailnode decentralised mail node ({data})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={python} -m mailnode --data-dir {data} run
Restart=on-failure
RestartSec=5
Environment=PYTHONUNBUFFERED=1
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={data}
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE

[Install]
WantedBy=multi-user.target
"""


def install(target: Path, data_dir: Path, user: str, force: bool = False) -> str:
    """Write the unit to ``target``; returns the text."""
    text = unit(data_dir, user)
    if target.is_dir():
        raise ServiceError(f"{target} is a directory; give the unit's file name, e.g. "
                           f"{target / 'mailnode.service'}")
    if target.exists() and not force:
        raise ServiceError(f"{target} exists; add --force to replace it")
    try:
        target.write_text(text)
    except OSError as exc:
        raise ServiceError(f"cannot write {target}: {exc.strerror} (run as root for "
                           "/etc/systemd/system)") from None
    return text


def next_steps(target: Path, data_dir: Path, user: str) -> list[str]:
    """The commands that finish the installation, for the operator to run as root."""
    data = os.path.abspath(data_dir)
    return [f"useradd --system --home-dir {data} --shell /usr/sbin/nologin {user}",
            f"chown -R {user}:{user} {data} && chmod 700 {data}",
            "systemctl daemon-reload",
            f"systemctl enable --now {target.name}"]
