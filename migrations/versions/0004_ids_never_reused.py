"""ids never reused, uidvalidity counter, shared bodies, outbound payloads

Identifiers of users, mailboxes, messages and queue rows become AUTOINCREMENT: SQLite's
plain INTEGER PRIMARY KEY hands the highest id out again after a delete, so a cache or a
session keyed on a deleted mailbox's id could show another user's mail. UIDVALIDITY comes
from a node-wide counter that never goes back (it was the creation second). Message bytes
move to ``bodies`` (shared by copies, with their MIME structure), and remote recipients of
one submission share one ``outbound_payloads`` row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 13:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_AUTO = {'sqlite_autoincrement': True}


def _recreate(name: str) -> None:
    with op.batch_alter_table(name, recreate='always', table_kwargs=_AUTO):
        pass


def upgrade() -> None:
    op.create_table('bodies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('structure', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bodies')),
    **_AUTO,
    )
    op.create_table('counters',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_counters')),
    )
    op.create_table('outbound_payloads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('headers', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound_payloads')),
    **_AUTO,
    )
    op.execute("INSERT INTO counters (name, value) "
               "SELECT 'uidvalidity', COALESCE(MAX(uidvalidity), 0) FROM mailboxes")
    _recreate('users')
    _recreate('mailboxes')

    op.create_table('messages_new',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.Integer(), nullable=False),
    sa.Column('flags', sa.Text(), nullable=False),
    sa.Column('internaldate', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('body_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['body_id'], ['bodies.id'], name='fk_messages_body_id_bodies'),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name='fk_messages_mailbox_id_mailboxes', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name='pk_messages'),
    sa.UniqueConstraint('mailbox_id', 'uid', name='uq_messages_mailbox_id_uid'),
    **_AUTO,
    )
    op.execute("INSERT INTO bodies (id, data) SELECT id, body FROM messages")
    op.execute("INSERT INTO messages_new (id, mailbox_id, uid, flags, internaldate, size, "
               "body_id) SELECT id, mailbox_id, uid, flags, internaldate, size, id FROM messages")
    op.drop_table('messages')
    op.rename_table('messages_new', 'messages')
    op.create_index('ix_messages_body_id', 'messages', ['body_id'], unique=False)

    with op.batch_alter_table('outbound', recreate='always', table_kwargs=_AUTO) as batch_op:
        batch_op.add_column(sa.Column('payload_id', sa.Integer(), nullable=True))
        batch_op.alter_column('sealed', existing_type=sa.LargeBinary(), nullable=True)
        batch_op.alter_column('headers', existing_type=sa.LargeBinary(), nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_outbound_payload_id_outbound_payloads'),
                                    'outbound_payloads', ['payload_id'], ['id'])
        batch_op.create_index('ix_outbound_payload_id', ['payload_id'], unique=False)


def downgrade() -> None:
    # Queued rows without a sealed envelope cannot be represented before 0004: dropped.
    op.execute("DELETE FROM outbound WHERE sealed IS NULL")
    with op.batch_alter_table('outbound', recreate='always') as batch_op:
        batch_op.drop_index('ix_outbound_payload_id')
        batch_op.drop_constraint('fk_outbound_payload_id_outbound_payloads', type_='foreignkey')
        batch_op.drop_column('payload_id')
        batch_op.alter_column('sealed', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.alter_column('headers', existing_type=sa.LargeBinary(), nullable=False)
    op.create_table('messages_old',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.Integer(), nullable=False),
    sa.Column('flags', sa.Text(), nullable=False),
    sa.Column('internaldate', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name='fk_messages_mailbox_id_mailboxes', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name='pk_messages'),
    sa.UniqueConstraint('mailbox_id', 'uid', name='uq_messages_mailbox_id_uid'),
    )
    op.execute("INSERT INTO messages_old (id, mailbox_id, uid, flags, internaldate, size, body) "
               "SELECT m.id, m.mailbox_id, m.uid, m.flags, m.internaldate, m.size, b.data "
               "FROM messages m JOIN bodies b ON b.id = m.body_id")
    op.drop_index('ix_messages_body_id', table_name='messages')
    op.drop_table('messages')
    op.rename_table('messages_old', 'messages')
    for name in ('mailboxes', 'users'):
        with op.batch_alter_table(name, recreate='always', table_kwargs={'sqlite_autoincrement': False}):
            pass
    op.drop_table('outbound_payloads')
    op.drop_table('counters')
    op.drop_table('bodies')
