"""Alembic migration scripts (run by `cauce db upgrade` and by `cauce serve` on SQLite)."""
