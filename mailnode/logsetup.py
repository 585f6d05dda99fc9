"""Where a running node's log goes and what it looks like.

``attach_node_log`` runs once a serving command knows its data directory: every handler
gets the node's prefix (its name, or a short node id, so several nodes' lines can be told
apart in one terminal or journal) and the format the config asks for, ``text`` or ``json``
(one object per line); ``mailnode.log`` in the data directory receives the same lines,
rotated at 10 MB with 5 old files kept. Both formats escape every value through
``logsafe`` (JSON escaping alone would keep terminal-safe text, but not bounded length).
Library lines that say nothing to an operator are dropped at their logger, by exact text.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

from mailnode.logsafe import LOG_FORMAT, MESSAGE_LIMIT, SafeFormatter, clean, escape

LOG_NAME = "mailnode.log"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
LOG_FORMATS = ("text", "json")

# alembic's MigrationContext says these at INFO every time the database is opened;
# "Running upgrade ..." from the same logger is kept.
_ALEMBIC_NOISE = ("Context impl ", "Will assume ")


def _drop_alembic_noise(record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith(_ALEMBIC_NOISE))


def quiet_alembic() -> None:
    """Drop alembic's per-open lines (idempotent: a filter is added once)."""
    migration = logging.getLogger("alembic.runtime.migration")
    if _drop_alembic_noise not in migration.filters:
        migration.addFilter(_drop_alembic_noise)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, node, message (escaped, bounded)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname, "logger": record.name, "node": self.node,
            "message": clean(record.getMessage(), MESSAGE_LIMIT)}
        if record.exc_info:
            entry["exception"] = "\n".join(escape(line) for line in
                                           self.formatException(record.exc_info).split("\n"))
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str, node: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(node)
    return SafeFormatter(LOG_FORMAT.replace("%(levelname)s", f"{node} %(levelname)s"))


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotating, and every file it creates is owner-only: logs name users and peers."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def file_handler(data_dir: Path) -> logging.handlers.RotatingFileHandler:
    return PrivateRotatingFileHandler(data_dir / LOG_NAME, maxBytes=MAX_BYTES,
                                      backupCount=BACKUPS, encoding="utf-8")


def node_prefix(node_name: str, node_id_hex: str) -> str:
    """The configured node name, else the first 8 hex digits of the node id."""
    return node_name or node_id_hex[:8]


def attach_node_log(data_dir: Path, log_format: str, node: str) -> logging.Handler:
    """Format every root handler for this node and add the rotating file; returns it."""
    quiet_alembic()
    root = logging.getLogger()
    handler = file_handler(data_dir)
    handler.setLevel(root.level)
    root.addHandler(handler)
    for h in root.handlers:
        h.setFormatter(formatter(log_format, node))
    return handler


def attach_for(data_dir: Path) -> logging.Handler:
    """``attach_node_log`` with the format and name from the node's config and key."""
    from mailnode.config import CONFIG_NAME, NODE_KEY_NAME, load
    from mailnode.keys import load_node_key

    config = load(data_dir / CONFIG_NAME)
    node_id = load_node_key(data_dir / NODE_KEY_NAME).verify_key.hex()
    return attach_node_log(data_dir, config.log_format, node_prefix(config.node_name, node_id))
