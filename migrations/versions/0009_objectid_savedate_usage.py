"""IMAP OBJECTID and SAVEDATE; a stored per-user usage counter for the quota

- ``object_keys``: one random key per node, from which MAILBOXID and EMAILID are derived
  (keyed hashes of the mailbox and bodies row ids: stable, never reused because the ids are
  not, and telling a user nothing about how many mailboxes or messages others have).
- ``messages.savedate`` (RFC 8514): when the message was put into its mailbox. Messages
  stored before this revision get the time of the migration: their real save date is not
  known, and a later one keeps them from looking older than they are to a client that
  expunges its Trash by save date.
- ``users.storage_used`` / ``users.message_count``: the sum of the user's message sizes and
  their number, computed here once and then kept by triggers on ``messages``, in the same
  transaction as every insert and delete (whatever code path makes it), so the quota check
  reads one row instead of summing every message. The values are derivable: recounting is
  ``SqlStore.recount_usage``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 18:20:00
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_OWNER = "(SELECT user_id FROM mailboxes WHERE id = {row}.mailbox_id)"
TRIGGERS = (
    "CREATE TRIGGER messages_usage_insert AFTER INSERT ON messages BEGIN "
    "UPDATE users SET storage_used = storage_used + NEW.size, "
    "message_count = message_count + 1 WHERE id = " + _OWNER.format(row="NEW") + "; END",
    "CREATE TRIGGER messages_usage_delete AFTER DELETE ON messages BEGIN "
    "UPDATE users SET storage_used = storage_used - OLD.size, "
    "message_count = message_count - 1 WHERE id = " + _OWNER.format(row="OLD") + "; END",
)
"""Kept in step with ``messages`` (a move between a user's mailboxes is an insert and a
delete, so nets to nothing; the row's size never changes). A later migration that rebuilds
``messages`` (``batch_alter_table`` copies and drops it) drops these with it and must create
them again; tests/store/test_usage_counter.py fails at head if they are missing."""


def upgrade() -> None:
    op.create_table(
        'object_keys',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('value', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_object_keys')),
    )
    conn = op.get_bind()
    conn.execute(sa.text("INSERT INTO object_keys (name, value) VALUES ('objectid', :v)"),
                 {'v': os.urandom(32)})
    op.add_column('messages', sa.Column('savedate', sa.Integer(), nullable=True))
    conn.execute(sa.text("UPDATE messages SET savedate = :now"), {'now': int(time.time())})
    op.add_column('users', sa.Column('storage_used', sa.Integer(), nullable=False,
                                     server_default='0'))
    op.add_column('users', sa.Column('message_count', sa.Integer(), nullable=False,
                                     server_default='0'))
    conn.execute(sa.text(
        "UPDATE users SET (storage_used, message_count) = (SELECT COALESCE(SUM(m.size), 0), "
        "COUNT(m.id) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id "
        "WHERE b.user_id = users.id)"))
    for trigger in TRIGGERS:
        conn.execute(sa.text(trigger))


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("DROP TRIGGER IF EXISTS messages_usage_insert"))
    conn.execute(sa.text("DROP TRIGGER IF EXISTS messages_usage_delete"))
    with op.batch_alter_table('users') as batch:
        batch.drop_column('message_count')
        batch.drop_column('storage_used')
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('savedate')
    op.drop_table('object_keys')
