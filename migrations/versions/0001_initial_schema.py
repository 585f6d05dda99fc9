"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 09:12:57.148373
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('identity_seed', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('address', name=op.f('uq_users_address')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('mailboxes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('uidvalidity', sa.Integer(), nullable=False),
    sa.Column('uidnext', sa.Integer(), nullable=False),
    sa.Column('special_use', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_mailboxes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mailboxes')),
    sa.UniqueConstraint('user_id', 'name', name='uq_mailboxes_user_id_name')
    )
    op.create_table('outbound',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.LargeBinary(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('recipient', sa.String(length=128), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.Column('headers', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_outbound_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound')),
    sa.UniqueConstraint('message_id', name=op.f('uq_outbound_message_id'))
    )
    with op.batch_alter_table('outbound', schema=None) as batch_op:
        batch_op.create_index('ix_outbound_next_attempt_at', ['next_attempt_at'], unique=False)

    op.create_table('received',
    sa.Column('sender_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('message_id', sa.LargeBinary(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_received_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sender_key', 'message_id', 'user_id', name=op.f('pk_received'))
    )
    op.create_table('messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.Integer(), nullable=False),
    sa.Column('flags', sa.Text(), nullable=False),
    sa.Column('internaldate', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_messages_mailbox_id_mailboxes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('mailbox_id', 'uid', name='uq_messages_mailbox_id_uid')
    )


def downgrade() -> None:
    op.drop_table('messages')
    op.drop_table('received')
    with op.batch_alter_table('outbound', schema=None) as batch_op:
        batch_op.drop_index('ix_outbound_next_attempt_at')

    op.drop_table('outbound')
    op.drop_table('mailboxes')
    op.drop_table('users')
