"""Typed, indexed sort and search keys: ``message_keys``

One row per message with what SORT, THREAD and SEARCH FROM/TO/CC/BCC/SUBJECT compare
(``mailnode.mime.sortkeys.StoredKeys``), each RFC 5256 sort key indexed with its mailbox, so
that a SORT is one ``ORDER BY`` the database answers from an index, a THREAD reads a few short
columns and a header SEARCH is an ``instr`` in SQL: no JSON record is decoded per message
any more (``bodies.sortkeys`` and ``bodies.searchkeys`` of 0012 are dropped). A table of its
own, not columns of ``messages``: listings read ``messages`` and stay narrow. A trigger deletes
a message's row with it (``messages`` itself is not rebuilt: its triggers stay). Clustered by
(mailbox, uid) (WITHOUT ROWID): a THREAD or SEARCH reads a mailbox's rows as one range.

Existing mail is back-filled here, one batch of bodies at a time: the keys of a body are
computed once from its stored structure and its header block (the body is not read), with
the functions that compute them when a message is stored, and written for every message
that shares it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

BATCH = 500
"""Bodies whose keys are computed per statement (memory: their header blocks)."""
# Only what message lists sort by most (arrival, date, subject, sender): every index is one
# more B-tree insert per delivered message (nine of them cost 26 us of the writer's time per
# message); SORT by another key reads the mailbox's rows of this table in SQLite's sorter
# (about 80 ms at 100,000 messages instead of 30).
_KEY_INDEXES = ("arrival", "sent", "subject", "from_addr")


def upgrade() -> None:
    op.create_table(
        'message_keys',
        sa.Column('mailbox_id', sa.Integer(), nullable=False),
        sa.Column('uid', sa.Integer(), nullable=False),
        sa.Column('arrival', sa.Integer(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('sent', sa.Integer(), nullable=False),
        sa.Column('subject', sa.LargeBinary(), nullable=False),
        sa.Column('reply', sa.Integer(), nullable=False),
        sa.Column('from_addr', sa.LargeBinary(), nullable=False),
        sa.Column('to_addr', sa.LargeBinary(), nullable=False),
        sa.Column('cc_addr', sa.LargeBinary(), nullable=False),
        sa.Column('display_from', sa.LargeBinary(), nullable=False),
        sa.Column('display_to', sa.LargeBinary(), nullable=False),
        sa.Column('message_id', sa.LargeBinary(), nullable=True),
        sa.Column('parents', sa.LargeBinary(), nullable=False),
        sa.Column('from_text', sa.LargeBinary(), nullable=False),
        sa.Column('to_text', sa.LargeBinary(), nullable=False),
        sa.Column('cc_text', sa.LargeBinary(), nullable=False),
        sa.Column('bcc_text', sa.LargeBinary(), nullable=False),
        sa.Column('subject_text', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('mailbox_id', 'uid', name=op.f('pk_message_keys')),
        sqlite_with_rowid=False,
    )
    _backfill()
    # Indexes after the back-fill: built once, sorted, instead of grown row by row.
    for name in _KEY_INDEXES:
        op.create_index(f'ix_message_keys_{name}', 'message_keys',
                        ['mailbox_id', name, 'uid'], unique=False)
    op.execute(
        "CREATE TRIGGER message_keys_gone AFTER DELETE ON messages BEGIN"
        " DELETE FROM message_keys WHERE mailbox_id = old.mailbox_id AND uid = old.uid;"
        " END")
    op.get_bind().execute(sa.text("ALTER TABLE bodies DROP COLUMN searchkeys"))
    op.get_bind().execute(sa.text("ALTER TABLE bodies DROP COLUMN sortkeys"))


def _backfill() -> None:
    """A row for every message, a batch of bodies at a time (bounded memory). On the
    migration's own sqlite3 connection (same transaction): SQLAlchemy's per-row parameter
    handling was most of the time."""
    from mailnode.mime import sortkeys
    from mailnode.mime.model import MessageStructure
    from mailnode.mime.structure import analyse

    conn = op.get_bind().connection.dbapi_connection
    assert conn is not None
    columns = sortkeys.STORED_COLUMNS
    insert = (f"INSERT INTO message_keys (mailbox_id, uid, arrival, size, {', '.join(columns)})"
              " SELECT mailbox_id, uid, internaldate, size, coalesce(?, internaldate),"
              f" {', '.join('?' * (len(columns) - 1))} FROM messages WHERE body_id = ?")
    last = 0
    while True:
        rows = conn.execute("SELECT id, structure FROM bodies WHERE id > ? ORDER BY id"
                            " LIMIT ?", (last, BATCH)).fetchall()
        if not rows:
            return
        params = []
        for body_id, blob in rows:
            st = None
            if blob is not None:
                try:
                    st = MessageStructure.decode(bytes(blob))
                except ValueError:
                    st = None
            if st is None:  # none stored (or an older format): the message is analysed
                raw = bytes(conn.execute("SELECT data FROM bodies WHERE id = ?",
                                         (body_id,)).fetchone()[0])
                st = analyse(raw)
            else:  # the header block is all the keys are made of
                raw = bytes(conn.execute("SELECT substr(data, 1, ?) FROM bodies WHERE id = ?",
                                         (st.root.body_start, body_id)).fetchone()[0])
            params.append((*sortkeys.stored_keys(raw, st), body_id))
        conn.executemany(insert, params)
        last = rows[-1][0]


def downgrade() -> None:
    op.add_column('bodies', sa.Column('sortkeys', sa.Text(), nullable=True))
    op.add_column('bodies', sa.Column('searchkeys', sa.Text(), nullable=True))
    op.execute("DROP TRIGGER message_keys_gone")
    for name in _KEY_INDEXES:
        op.drop_index(f'ix_message_keys_{name}', table_name='message_keys')
    op.drop_table('message_keys')
