"""`cauce db ...`: the database schema's revision, and applying migrations.

Mounted by `cauce.cli`, which passes in its helpers (`cli_support`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.console import Console

from cauce.cli_support import Runner, SettingsOf
from cauce.core.errors import ConfigError


def build_db_app(settings_of: SettingsOf, run: Runner, out: Console) -> typer.Typer:
    """`cauce db ...`."""
    db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)

    @db_app.command("upgrade")
    def db_upgrade(
        revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    ) -> None:
        """Apply pending migrations to the configured database."""
        from cauce.core.db import create_database
        from cauce.core.db.migrate import current_revisions, newer_schema, upgrade

        settings = settings_of()

        async def go() -> set[str]:
            db = create_database(settings)
            try:
                if problem := await newer_schema(db):
                    raise ConfigError(problem)
                await upgrade(db, revision)
                return await current_revisions(db)
            finally:
                await db.dispose()

        revisions = run(go())
        out.print(
            f"database at revision {', '.join(sorted(revisions)) or '(empty)'}", highlight=False
        )

    @db_app.command("current")
    def db_current() -> None:
        """Show the database's revision and whether migrations are pending."""
        from cauce.core.db import create_database
        from cauce.core.db.migrate import current_revisions, newer_schema, pending_migrations

        settings = settings_of()

        async def go() -> tuple[set[str], bool, str | None]:
            db = create_database(settings)
            try:
                newer = await newer_schema(db)
                return await current_revisions(db), await pending_migrations(db), newer
            finally:
                await db.dispose()

        revisions, pending, newer = run(go())
        out.print(f"revision: {', '.join(sorted(revisions)) or '(empty)'}", highlight=False)
        if newer is not None:  # "pending" then, but no upgrade of this version helps
            out.print(f"pending migrations: none this version knows; {newer}", highlight=False)
            return
        out.print("pending migrations: " + ("yes (run `cauce db upgrade`)" if pending else "no"))

    @db_app.command("check")
    def db_check(
        wait: Annotated[
            float,
            typer.Option(
                min=0,
                help="Seconds to keep checking (every 2 s; a database not answering yet "
                "is checked again too) before giving up; 0: once",
            ),
        ] = 0,
    ) -> None:
        """Exit 0 if the schema is current, 1 if migrations are pending, the database does
        not answer or it is newer than this code (a readiness gate: an init container can
        wait on it before `serve` or `worker` start)."""
        from sqlalchemy.exc import DBAPIError

        from cauce.core.db import create_database
        from cauce.core.db.migrate import newer_than_code, pending_migrations

        settings = settings_of()

        async def go() -> str | None:
            db = create_database(settings)
            try:
                deadline = time.monotonic() + wait
                while True:
                    try:
                        if await newer_than_code(db):
                            return (
                                "the database is at a revision this version of Cauce does "
                                "not know: it was migrated by a later version"
                            )
                        if not await pending_migrations(db):
                            return None
                        problem = "migrations are pending: run `cauce db upgrade`"
                    except (DBAPIError, OSError) as exc:
                        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
                        problem = f"the database does not answer: {cause}"
                    if time.monotonic() >= deadline:
                        return problem
                    await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            finally:
                await db.dispose()

        problem = run(go())
        if problem is not None:
            out.print(problem, markup=False, highlight=False)
            raise typer.Exit(1)
        out.print("schema is current")

    return db_app
