"""What the command groups split out of `cauce.cli` (`cli_db`, `cli_apikey`, `cli_jobs`)
share: the types of the helpers the root passes them (so they do not import the root,
which imports them) and `ensure_schema`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import typer

from cauce.core.config import Settings

T = TypeVar("T")
SettingsOf = Callable[[], Settings]
Failer = Callable[[str, int], typer.Exit]


class Runner(Protocol):
    """Runs a coroutine to its result; Cauce's errors end the command with a message
    and an exit code (`cauce.cli._run`)."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


async def ensure_schema(settings: Settings, db: Any) -> None:
    """Bring the schema up to date, or refuse a database with pending migrations, as
    `cauce serve` does (`prepare_schema`)."""
    from cauce.core.db.migrate import prepare_schema

    await prepare_schema(db, settings)
