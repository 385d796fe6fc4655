"""The `cauce` command line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from cauce.core.config import Settings, load_settings
from cauce.core.errors import CauceError, ConfigError

T = TypeVar("T")

app = typer.Typer(
    name="cauce",
    help="Cauce: a self-hosted integration hub for leads, documents, tickets and backups.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
apikey_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(apikey_app, name="apikey")

out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    """Load settings and configure logging (to stderr: stdout is for results)."""
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    _setup_logging(settings)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except CauceError as exc:
        raise _fail(exc.detail, code=1) from None
    except (DBAPIError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise _fail(f"cannot use the database: {reason}", code=1) from None


def _setup_logging(settings: Settings) -> None:
    from cauce.core.observability.logging import configure_logging

    configure_logging(settings)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [CAUCE_HTTP__HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [CAUCE_HTTP__PORT]")] = None,
) -> None:
    """Run the HTTP API (on SQLite this also applies pending migrations).

    SIGTERM or Ctrl-C stops accepting connections and lets in-flight requests finish
    (up to CAUCE_HTTP__GRACEFUL_SHUTDOWN_SECONDS).
    """
    import uvicorn

    from cauce.app import create_app

    settings = _settings()
    # Check the schema before uvicorn starts, so a refusal is one clear line, not a
    # lifespan traceback.
    _run(_preflight(settings))
    config = uvicorn.Config(
        create_app(settings),
        host=host or settings.http.host,
        port=port or settings.http.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.http.graceful_shutdown_seconds),
        lifespan="on",
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if not server.started:
        raise _fail("the server did not start; see the log above", code=1)


async def _preflight(settings: Settings) -> None:
    from cauce.core.db import create_database
    from cauce.core.db.migrate import prepare_schema

    db = create_database(settings)
    try:
        await prepare_schema(db, settings)
    finally:
        await db.dispose()


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply pending migrations to the configured database."""
    from cauce.core.db import create_database
    from cauce.core.db.migrate import current_revisions, upgrade

    settings = _settings()

    async def go() -> set[str]:
        db = create_database(settings)
        try:
            await upgrade(db, revision)
            return await current_revisions(db)
        finally:
            await db.dispose()

    revisions = _run(go())
    out.print(f"database at revision {', '.join(sorted(revisions)) or '(empty)'}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and whether migrations are pending."""
    from cauce.core.db import create_database
    from cauce.core.db.migrate import current_revisions, pending_migrations

    settings = _settings()

    async def go() -> tuple[set[str], bool]:
        db = create_database(settings)
        try:
            return await current_revisions(db), await pending_migrations(db)
        finally:
            await db.dispose()

    revisions, pending = _run(go())
    out.print(f"revision: {', '.join(sorted(revisions)) or '(empty)'}")
    out.print("pending migrations: " + ("yes (run `cauce db upgrade`)" if pending else "no"))


def _key_service(settings: Settings) -> Any:
    from cauce.core.db import create_database
    from cauce.core.security.apikeys import ApiKeyService

    db = create_database(settings)
    return db, ApiKeyService(db.sessionmaker, settings.secret_key.get_secret_value().encode())


async def _ensure_schema(settings: Settings, db: Any) -> None:
    from cauce.core.db.migrate import prepare_schema

    await prepare_schema(db, settings)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="Comma-separated, e.g. leads:read,leads:write")
    ],
) -> None:
    """Create a key and print it once: it is stored only as a hash."""
    settings = _settings()

    async def go() -> Any:
        db, service = _key_service(settings)
        try:
            await _ensure_schema(settings, db)
            return await service.create(name, scopes.split(","))
        finally:
            await db.dispose()

    created = _run(go())
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
    settings = _settings()

    async def go() -> Any:
        db, service = _key_service(settings)
        try:
            await _ensure_schema(settings, db)
            return await service.list()
        finally:
            await db.dispose()

    keys = _run(go())
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
    settings = _settings()

    async def go() -> None:
        db, service = _key_service(settings)
        try:
            await _ensure_schema(settings, db)
            await service.revoke(key_id)
        finally:
            await db.dispose()

    _run(go())
    out.print(f"revoked {key_id}")


def main() -> None:
    """Console-script entry point."""
    app()
