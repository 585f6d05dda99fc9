"""change feed: modseqs per mailbox and message, expunge tombstones (RFC 7162)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('highest_modseq', sa.Integer(), server_default='1',
                                      nullable=False))
        batch_op.add_column(sa.Column('vanished_floor', sa.Integer(), server_default='0',
                                      nullable=False))
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('modseq', sa.Integer(), server_default='1',
                                      nullable=False))
        batch_op.create_index('ix_messages_mailbox_id_modseq', ['mailbox_id', 'modseq'],
                              unique=False)
    op.create_table(
        'expunged',
        sa.Column('mailbox_id', sa.Integer(), nullable=False),
        sa.Column('uid', sa.Integer(), nullable=False),
        sa.Column('modseq', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'],
                                name=op.f('fk_expunged_mailbox_id_mailboxes'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('mailbox_id', 'uid', name=op.f('pk_expunged')),
    )
    with op.batch_alter_table('expunged', schema=None) as batch_op:
        batch_op.create_index('ix_expunged_mailbox_id_modseq', ['mailbox_id', 'modseq'],
                              unique=False)
    # Expunges before this revision left no tombstones: a client that synced before it
    # must compare uids (modseq 1 is what every existing message now carries).
    op.execute("UPDATE mailboxes SET vanished_floor = 1")


def downgrade() -> None:
    with op.batch_alter_table('expunged', schema=None) as batch_op:
        batch_op.drop_index('ix_expunged_mailbox_id_modseq')
    op.drop_table('expunged')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_mailbox_id_modseq')
        batch_op.drop_column('modseq')
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('vanished_floor')
        batch_op.drop_column('highest_modseq')
