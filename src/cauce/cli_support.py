"""What the command groups split out of `cauce.cli` (`cli_db`, `cli_apikey`, `cli_jobs`)
share: the types of the helpers the root passes them (so they do not import the root,
which imports them) and `ensure_schema`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import typer

from cauce.core.config import Settings
from cauce.core.errors import ConfigError

T = TypeVar("T")
SettingsOf = Callable[[], Settings]
Failer = Callable[[str, int], typer.Exit]


class Runner(Protocol):
    """Runs a coroutine to its result; Cauce's errors end the command with a message
    and an exit code (`cauce.cli._run`)."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


async def newer_schema(db: Any) -> str | None:
    """Why the database's schema is ahead of this code (a later version of Cauce migrated
    it, as after a rollback), or None. No `cauce db upgrade` helps then."""
    from cauce.core.db.migrate import current_revisions, newer_than_code

    if not await newer_than_code(db):
        return None
    revisions = ", ".join(sorted(await current_revisions(db)))
    return (
        f"the database is at revision {revisions}, which this version of Cauce does not "
        "know: a later version migrated it (run that version, or roll the schema back)"
    )


async def ensure_schema(settings: Settings, db: Any) -> None:
    """Bring the schema up to date, or refuse a database with pending migrations, as
    `cauce serve` does (`prepare_schema`); refuse a schema ahead of this code (`ConfigError`)
    rather than look for its revision among the migrations."""
    from cauce.core.db.migrate import prepare_schema

    if problem := await newer_schema(db):
        raise ConfigError(problem)
    await prepare_schema(db, settings)
