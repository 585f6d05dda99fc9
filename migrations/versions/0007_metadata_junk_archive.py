"""IMAP annotations (RFC 5464 METADATA); Junk and Archive for every user (RFC 6154)

``metadata_entries`` holds each user's annotations of their mailboxes and of the server.
Every existing user gets the Junk and Archive mailboxes that new users are created with; a
user who already has a mailbox of that name keeps it, now marked \\Junk or \\Archive.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 17:50:00
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_NEW = (('Junk', '\\Junk'), ('Archive', '\\Archive'))


def upgrade() -> None:
    op.create_table(
        'metadata_entries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('mailbox_id', sa.Integer(), nullable=True),
        sa.Column('entry', sa.String(length=1024), nullable=False),
        sa.Column('value', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'],
                                name=op.f('fk_metadata_entries_mailbox_id_mailboxes'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_metadata_entries_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metadata_entries')),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_metadata_entries_user_id', 'metadata_entries',
                    ['user_id', 'mailbox_id'], unique=False)
    op.create_index('ix_metadata_entries_mailbox_id', 'metadata_entries', ['mailbox_id'],
                    unique=False)

    conn = op.get_bind()
    last = conn.execute(sa.text("SELECT value FROM counters WHERE name = 'uidvalidity'")
                        ).scalar()
    last = int(last or 0)
    for (user_id,) in conn.execute(sa.text("SELECT id FROM users ORDER BY id")).all():
        for name, special in _NEW:
            found = conn.execute(sa.text(
                "SELECT id, special_use FROM mailboxes WHERE user_id = :u AND name = :n"),
                {'u': user_id, 'n': name}).first()
            if found is not None:
                if found[1] is None:
                    conn.execute(sa.text("UPDATE mailboxes SET special_use = :s WHERE id = :i"),
                                 {'s': special, 'i': found[0]})
                continue
            # UIDVALIDITY only grows, node-wide (as SqlStore.next_uidvalidity hands it out).
            last = max(last + 1, int(time.time()))
            conn.execute(sa.text(
                "INSERT INTO mailboxes (user_id, name, uidvalidity, uidnext, special_use, "
                "recent_uid) VALUES (:u, :n, :v, 1, :s, 0)"),
                {'u': user_id, 'n': name, 'v': last, 's': special})
            conn.execute(sa.text(
                "INSERT OR IGNORE INTO subscriptions (user_id, name) VALUES (:u, :n)"),
                {'u': user_id, 'n': name})
    conn.execute(sa.text("UPDATE counters SET value = :v WHERE name = 'uidvalidity'"),
                 {'v': last})


def downgrade() -> None:
    # The Junk and Archive mailboxes stay: they may hold mail by now.
    op.drop_index('ix_metadata_entries_mailbox_id', table_name='metadata_entries')
    op.drop_index('ix_metadata_entries_user_id', table_name='metadata_entries')
    op.drop_table('metadata_entries')
