"""Alembic environment: runs on the connection handed over by `cauce.core.db.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cauce.migrations.tables import metadata

target_metadata = metadata


def run_migrations(connection: Connection) -> None:
    """Run with batch mode on SQLite, which cannot ALTER most things in place."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `cauce db upgrade`, not the alembic command")
run_migrations(connection)
