"""Stored per-mailbox message and unseen counts

``mailboxes.message_count`` / ``mailboxes.unseen_count``: what STATUS, SELECT, LIST-STATUS
and every APPEND's mailbox lookup report, counted here once and then kept by triggers on
``messages`` in the same transaction as every insert, delete and flag change (whatever code
path makes it). Before, each change of a mailbox made the next lookup count every message
row of it (at 100,000 messages about 15 ms, once per APPEND). "Unseen" is what the count
used: the flags text not containing ``\\Seen``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_UNSEEN = "({row}.flags NOT LIKE '%\\Seen%')"
TRIGGERS = (
    "CREATE TRIGGER messages_counts_insert AFTER INSERT ON messages BEGIN "
    "UPDATE mailboxes SET message_count = message_count + 1, unseen_count = unseen_count + "
    + _UNSEEN.format(row="NEW") + " WHERE id = NEW.mailbox_id; END",
    "CREATE TRIGGER messages_counts_delete AFTER DELETE ON messages BEGIN "
    "UPDATE mailboxes SET message_count = message_count - 1, unseen_count = unseen_count - "
    + _UNSEEN.format(row="OLD") + " WHERE id = OLD.mailbox_id; END",
    "CREATE TRIGGER messages_counts_update AFTER UPDATE OF flags, mailbox_id ON messages BEGIN "
    "UPDATE mailboxes SET message_count = message_count - 1, unseen_count = unseen_count - "
    + _UNSEEN.format(row="OLD") + " WHERE id = OLD.mailbox_id; "
    "UPDATE mailboxes SET message_count = message_count + 1, unseen_count = unseen_count + "
    + _UNSEEN.format(row="NEW") + " WHERE id = NEW.mailbox_id; END",
)
"""Kept in step with ``messages``. Like 0009's, a later migration that rebuilds ``messages``
(``batch_alter_table``) drops these with it and must create them again;
tests/store/test_mailbox_counts.py fails at head if they are missing."""

COUNT = ("UPDATE mailboxes SET (message_count, unseen_count) = (SELECT count(*), "
         "count(*) FILTER (WHERE " + _UNSEEN.format(row="messages") + ") FROM messages "
         "WHERE messages.mailbox_id = mailboxes.id)")
"""Derives both counts from the messages (here, and in ``SqlStore.recount_usage``)."""


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild): 0009's triggers on messages refer to mailboxes.
    op.add_column('mailboxes', sa.Column('message_count', sa.Integer(), nullable=False,
                                         server_default='0'))
    op.add_column('mailboxes', sa.Column('unseen_count', sa.Integer(), nullable=False,
                                         server_default='0'))
    conn = op.get_bind()
    conn.execute(sa.text(COUNT))
    for trigger in TRIGGERS:
        conn.execute(sa.text(trigger))


def downgrade() -> None:
    conn = op.get_bind()
    for name in ("insert", "delete", "update"):
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS messages_counts_{name}"))
    conn.execute(sa.text("ALTER TABLE mailboxes DROP COLUMN unseen_count"))
    conn.execute(sa.text("ALTER TABLE mailboxes DROP COLUMN message_count"))
