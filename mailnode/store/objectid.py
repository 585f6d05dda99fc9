"""RFC 8474 object ids derived from row ids with a per-node key.

Row ids are never reused (AUTOINCREMENT), so neither are the ids; a keyed hash rather than
the number itself, because a counter shared by all users would tell each of them how much
mail and how many mailboxes everyone else has. 96 bits: no collision in any real node.
"""

from __future__ import annotations

import hashlib


def _derive(key: bytes, kind: bytes, row_id: int) -> str:
    return hashlib.blake2b(row_id.to_bytes(8, "big"), digest_size=12, key=key,
                           person=kind).hexdigest()


def mailbox_id(key: bytes, row_id: int) -> str:
    """The MAILBOXID of mailbox row ``row_id`` (an RFC 8474 objectid: letters and digits)."""
    return "M" + _derive(key, b"mailnode-mbox", row_id)


def email_id(key: bytes, body_id: int) -> str:
    """The EMAILID of the messages sharing bodies row ``body_id``."""
    return "E" + _derive(key, b"mailnode-email", body_id)
