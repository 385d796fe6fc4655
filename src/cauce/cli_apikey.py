"""`cauce apikey ...`: creating, listing and revoking API keys.

Mounted by `cauce.cli`, which passes in its helpers (`cli_support`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cauce.cli_support import Failer, Runner, SettingsOf, ensure_schema

if TYPE_CHECKING:
    from cauce.core.config import Settings


def _key_service(settings: Settings) -> Any:
    from cauce.core.db import create_database
    from cauce.core.security.apikeys import ApiKeyService

    db = create_database(settings)
    return db, ApiKeyService(db.sessionmaker, settings.secret_key.get_secret_value().encode())


def build_apikey_app(
    settings_of: SettingsOf, run: Runner, out: Console, err: Console, refuse: Failer
) -> typer.Typer:
    """`cauce apikey ...` (`refuse(message, 2)` ends a command with a usage error)."""
    apikey_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

    @apikey_app.command("create")
    def apikey_create(
        name: Annotated[str, typer.Option("--name", help="Who or what uses the key")],
        scopes: Annotated[
            str, typer.Option("--scopes", help="Comma-separated, e.g. leads:read,leads:write")
        ],
    ) -> None:
        """Create a key and print it once: it is stored only as a hash."""
        from cauce.core.errors import BadRequest
        from cauce.core.security.scopes import known_scopes, unknown_scopes

        # Bad input is a usage error (exit 2), as everywhere else, said before the
        # database is touched; the service checks the rest (the name) the same way.
        if bad := unknown_scopes(s.strip() for s in scopes.split(",") if s.strip()):
            raise refuse(
                f"--scopes: unknown scope(s): {', '.join(bad)}; the scopes are "
                f"{', '.join(sorted(known_scopes()))}",
                2,
            )
        settings = settings_of()

        async def go() -> Any:
            db, service = _key_service(settings)
            try:
                await ensure_schema(settings, db)
                return await service.create(name, scopes.split(","))
            except BadRequest as exc:
                return exc
            finally:
                await db.dispose()

        created = run(go())
        if isinstance(created, BadRequest):
            raise refuse(created.detail, 2)
        # The name as text, never markup: `--name "[/]"` failed here after the key was
        # stored (a MarkupError traceback, the key never shown).
        message = Text.assemble(
            "Created key ",
            (created.key_id, "bold"),
            f" ({created.name}) with scopes {', '.join(created.scopes)}. "
            "Store it now: it cannot be shown again.",
        )
        err.print(message, highlight=False)
        # The key alone on stdout, so scripts can capture it: KEY=$(cauce apikey create ...)
        sys.stdout.write(created.token + "\n")

    @apikey_app.command("list")
    def apikey_list() -> None:
        """List keys (never the keys themselves)."""
        settings = settings_of()

        async def go() -> Any:
            db, service = _key_service(settings)
            try:
                await ensure_schema(settings, db)
                return await service.list()
            finally:
                await db.dispose()

        keys = run(go())
        table = Table("key id", "name", "scopes", "created", "last used", "revoked")
        for k in keys:
            # Text, not markup: a name with brackets would vanish, or fail the whole list.
            cells = (
                k.key_id,
                k.name,
                ",".join(k.scopes),
                k.created_at.strftime("%Y-%m-%d %H:%M"),
                k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
                k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "-",
            )
            table.add_row(*(Text(cell) for cell in cells))
        out.print(table)

    @apikey_app.command("revoke")
    def apikey_revoke(
        key_id: Annotated[str, typer.Argument(help="The key id shown by `cauce apikey list`")],
    ) -> None:
        """Revoke a key; every process stops accepting it within CAUCE_AUTH__CACHE_TTL_SECONDS."""
        settings = settings_of()

        async def go() -> None:
            db, service = _key_service(settings)
            try:
                await ensure_schema(settings, db)
                await service.revoke(key_id)
            finally:
                await db.dispose()

        run(go())
        out.print(Text(f"revoked {key_id}"), highlight=False)

    return apikey_app
