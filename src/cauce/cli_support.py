"""What the command groups split out of `cauce.cli` (`cli_db`, `cli_apikey`, `cli_jobs`)
share: the types of the helpers the root passes them (so they do not import the root,
which imports them) and `ensure_schema`.

Nothing heavy is imported here at module level (settings, SQLAlchemy, Alembic):
`cauce --help` imports every command group, and should answer at once."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import typer

if TYPE_CHECKING:
    from cauce.core.config import Settings
    from cauce.core.db import Database

T = TypeVar("T")
SettingsOf = Callable[[], "Settings"]
Failer = Callable[[str, int], typer.Exit]


class Runner(Protocol):
    """Runs a coroutine to its result; Cauce's errors end the command with a message
    and an exit code (`cauce.cli._run`)."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


async def ensure_schema(settings: Settings, db: Database) -> None:
    """Bring the schema up to date, or refuse a database with pending migrations or one a
    later version migrated, as `cauce serve` does (`prepare_schema`, `ConfigError`)."""
    from cauce.core.db.migrate import prepare_schema

    await prepare_schema(db, settings)
