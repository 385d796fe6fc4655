"""`cauce apikey ...`: creating, listing and revoking API keys.

Mounted by `cauce.cli`, which passes in its helpers (`cli_support`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cauce.cli_support import Runner, SettingsOf, ensure_schema
from cauce.core.config import Settings


def _key_service(settings: Settings) -> Any:
    from cauce.core.db import create_database
    from cauce.core.security.apikeys import ApiKeyService

    db = create_database(settings)
    return db, ApiKeyService(db.sessionmaker, settings.secret_key.get_secret_value().encode())


def build_apikey_app(
    settings_of: SettingsOf, run: Runner, out: Console, err: Console
) -> typer.Typer:
    """`cauce apikey ...`."""
    apikey_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

    @apikey_app.command("create")
    def apikey_create(
        name: Annotated[str, typer.Option("--name", help="Who or what uses the key")],
        scopes: Annotated[
            str, typer.Option("--scopes", help="Comma-separated, e.g. leads:read,leads:write")
        ],
    ) -> None:
        """Create a key and print it once: it is stored only as a hash."""
        settings = settings_of()

        async def go() -> Any:
            db, service = _key_service(settings)
            try:
                await ensure_schema(settings, db)
                return await service.create(name, scopes.split(","))
            finally:
                await db.dispose()

        created = run(go())
        err.print(
            f"Created key [bold]{created.key_id}[/] ({created.name}) with scopes "
            f"{', '.join(created.scopes)}. Store it now: it cannot be shown again.",
            highlight=False,
        )
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
            table.add_row(
                k.key_id,
                k.name,
                ",".join(k.scopes),
                k.created_at.strftime("%Y-%m-%d %H:%M"),
                k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
                k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "-",
            )
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
        out.print(f"revoked {key_id}")

    return apikey_app
