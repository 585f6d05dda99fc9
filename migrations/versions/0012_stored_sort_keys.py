"""Stored sort and search keys: ``bodies.sortkeys``, ``bodies.searchkeys``

The keys SORT and THREAD compare (RFC 5256 base subject, sent date, first From/To/Cc
mailbox, RFC 5957 display names, Message-ID and parent ids), and what SEARCH
FROM/TO/CC/BCC/SUBJECT look in, derived once when a message is stored
(``mailnode.mime.sortkeys.record``), so that a SORT, THREAD or such SEARCH of a large
mailbox reads one short record per message instead of decoding every stored structure (and
reading messages for their References or Subject fields). A column added to ``bodies`` (no table is
rebuilt: the triggers on ``messages`` stay as they are). Existing mail is not back-filled: a
NULL is answered from the stored structure, as before this revision, by the same functions.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('bodies', sa.Column('sortkeys', sa.Text(), nullable=True))
    op.add_column('bodies', sa.Column('searchkeys', sa.Text(), nullable=True))


def downgrade() -> None:
    op.get_bind().execute(sa.text("ALTER TABLE bodies DROP COLUMN searchkeys"))
    op.get_bind().execute(sa.text("ALTER TABLE bodies DROP COLUMN sortkeys"))
