"""imap subscriptions: what LSUB lists (RFC 3501 §6.3.6)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 10:11:31.025175
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscriptions',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_subscriptions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'name', name=op.f('pk_subscriptions'))
    )
    # Until now LSUB listed every mailbox: keep that view for existing users.
    op.execute("INSERT INTO subscriptions (user_id, name) SELECT user_id, name FROM mailboxes")


def downgrade() -> None:
    op.drop_table('subscriptions')
