"""outbound delay notices, known records

Whether the sender was told a copy is delayed; and the newest address record seen for each
correspondent, used when the DHT does not answer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbound', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delay_notified', sa.Integer(), server_default='0', nullable=False))
    op.create_table('known_records',
    sa.Column('user_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('record', sa.LargeBinary(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('node_key', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('user_key', name=op.f('pk_known_records')),
    )
    op.create_index('ix_known_records_node_key', 'known_records', ['node_key'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_known_records_node_key', table_name='known_records')
    op.drop_table('known_records')
    with op.batch_alter_table('outbound', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_column('delay_notified')
