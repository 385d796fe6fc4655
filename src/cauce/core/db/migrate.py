"""Alembic migrations, run programmatically on the async engine.

The scripts ship inside the package (`cauce/migrations`) so `cauce db upgrade` works from
an installed wheel, not only from a checkout.
"""

from __future__ import annotations

from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from cauce.core.config import Settings
from cauce.core.db.engine import Database
from cauce.core.errors import ConfigError

SCRIPT_LOCATION = "cauce:migrations"
log = structlog.get_logger("cauce.db")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts, optionally bound to a connection."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def _current(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


async def current_revisions(db: Database) -> set[str]:
    """The revisions the database is at (empty for a new database)."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def pending_migrations(db: Database) -> bool:
    """True when the database is not at the latest revision."""
    return await current_revisions(db) != _heads()


def _known() -> set[str]:
    return {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }


async def newer_than_code(db: Database) -> bool:
    """True when the database is at a revision this code does not know (a later version
    migrated it): no `upgrade` of this code helps, the code is the one behind."""
    return bool(await current_revisions(db) - _known())


async def newer_schema(db: Database) -> str | None:
    """Why the database's schema is ahead of this code (a later version of Cauce migrated
    it, as after a rollback), in one line naming the revision found and the latest this
    code knows; or None. No `cauce db upgrade` helps then."""
    current = await current_revisions(db)
    if not current - _known():
        return None
    return (
        f"the database is at revision {', '.join(sorted(current))}, which this version of "
        f"Cauce does not know (it knows up to {', '.join(sorted(_heads()))}): a later "
        "version migrated it (run that version, or roll the schema back)"
    )


# The transaction lock `upgrade` takes on PostgreSQL (one bigint: "CAUCEMIG").
MIGRATION_LOCK = 0x43415543454D4947


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one transaction (PostgreSQL DDL is transactional).

    On PostgreSQL the transaction first takes a lock, so two machines upgrading at once
    (a deploy step run twice, `CAUCE_DB__AUTO_MIGRATE` on several servers starting
    together) take turns: the second finds the first's revision committed and has
    nothing left to do, instead of failing halfway on a table that now exists.
    """

    def run(connection: Connection, *_: Any) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(run)


def should_auto_migrate(settings: Settings) -> bool:
    """Embedded SQLite applies its migrations itself; PostgreSQL only when told to (ADR 0002)."""
    if settings.db.auto_migrate is not None:
        return settings.db.auto_migrate
    return settings.is_sqlite


async def prepare_schema(db: Database, settings: Settings) -> None:
    """Bring the schema up to date, or refuse (`ConfigError`, one line) to start on a
    database left behind, or on one a later version of Cauce migrated (`newer_schema`:
    Alembic would fail looking for its revision, or call it "pending migrations")."""
    if problem := await newer_schema(db):
        raise ConfigError(problem)
    if not await pending_migrations(db):
        return
    if not should_auto_migrate(settings):
        raise ConfigError(
            "the database has pending migrations: run `cauce db upgrade` first "
            "(or set CAUCE_DB__AUTO_MIGRATE=true to apply them at start-up)"
        )
    log.info("db.migrating", dialect=db.dialect)
    await upgrade(db)
