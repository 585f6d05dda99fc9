"""Alembic migrations of the mailnode database (batch mode for SQLite)."""
