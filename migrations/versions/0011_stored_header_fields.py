"""Stored header fields: ``bodies.fields``

The lines of the header fields message lists ask for (From, To, Subject, Date, ...), kept
apart when a message is stored (``mailnode.mime.headers.stored_fields``), so that a
``HEADER.FIELDS`` of those fields neither copies the whole header block out of SQLite nor
scans it. A column added to ``bodies`` (no table is rebuilt: the triggers on ``messages``
stay as they are). Existing mail is not back-filled: a NULL is answered from the header
block, as before this revision.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('bodies', sa.Column('fields', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.get_bind().execute(sa.text("ALTER TABLE bodies DROP COLUMN fields"))
