"""friends, invites, held mail

The friends' network: invites handed out, friends' nodes, and sealed envelopes held as a
relay for friends' users while their node is away.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'invites',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('secret_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('hold_bytes', sa.Integer(), nullable=False),
        sa.Column('hold_days', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Integer(), nullable=False),
        sa.Column('expires_at', sa.Integer(), nullable=False),
        sa.Column('used_by', sa.LargeBinary(length=32), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_invites')),
        sa.UniqueConstraint('secret_hash', name=op.f('uq_invites_secret_hash')),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'friends',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('node_key', sa.LargeBinary(length=32), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('endpoints', sa.Text(), nullable=False),
        sa.Column('endpoints_seq', sa.Integer(), server_default='0', nullable=False),
        sa.Column('secret', sa.LargeBinary(length=16), nullable=True),
        sa.Column('invite_expires_at', sa.Integer(), nullable=True),
        sa.Column('hold_bytes', sa.Integer(), nullable=False),
        sa.Column('hold_days', sa.Integer(), nullable=False),
        sa.Column('their_hold_bytes', sa.Integer(), server_default='0', nullable=False),
        sa.Column('their_hold_days', sa.Integer(), server_default='0', nullable=False),
        sa.Column('created_at', sa.Integer(), nullable=False),
        sa.Column('last_seen', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_friends')),
        sa.UniqueConstraint('name', name=op.f('uq_friends_name')),
        sa.UniqueConstraint('node_key', name=op.f('uq_friends_node_key')),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'held',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('friend_id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.LargeBinary(length=16), nullable=False),
        sa.Column('recipient_key', sa.LargeBinary(length=32), nullable=False),
        sa.Column('sealed', sa.LargeBinary(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('received_at', sa.Integer(), nullable=False),
        sa.Column('expires_at', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=64), server_default='', nullable=False),
        sa.ForeignKeyConstraint(['friend_id'], ['friends.id'],
                                name=op.f('fk_held_friend_id_friends'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_held')),
        sa.UniqueConstraint('recipient_key', 'message_id',
                            name='uq_held_recipient_key_message_id'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_held_friend_id', 'held', ['friend_id'], unique=False)
    op.create_index('ix_held_expires_at', 'held', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_held_expires_at', table_name='held')
    op.drop_index('ix_held_friend_id', table_name='held')
    op.drop_table('held')
    op.drop_table('friends')
    op.drop_table('invites')
