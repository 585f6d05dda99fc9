"""mailbox recent uid: which messages are \\Recent (RFC 3501 §2.3.2)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:50:43.551959
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recent_uid', sa.Integer(), server_default='0', nullable=False))
    # Mail that was already there when the server learnt \Recent is not new to anyone.
    op.execute("UPDATE mailboxes SET recent_uid = uidnext - 1")



def downgrade() -> None:
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('recent_uid')

