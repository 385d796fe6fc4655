"""The `cauce` command line: the root app, `serve` and `worker`, and the helpers every
command uses (settings, errors as exit codes). Each command group has a module of its own
(`cli_db`, `cli_apikey`, `cli_jobs`, `cli_leads`, `sandbox.cli`), mounted here.

`cauce --help` imports this module and every command group's: what a command needs
beyond typer and rich (the settings, SQLAlchemy, the app, the leads context) is imported
inside it, so that help, and a refused usage, answer at once."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Coroutine, Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from cauce.cli_apikey import build_apikey_app
from cauce.cli_db import build_db_app
from cauce.cli_jobs import build_jobs_app
from cauce.cli_jobs import parse_since as parse_since
from cauce.cli_leads import build_leads_app, demo_command
from cauce.core.errors import CauceError, ConfigError

if TYPE_CHECKING:
    from cauce.core.config import Settings

T = TypeVar("T")

app = typer.Typer(
    name="cauce",
    help="Cauce: a self-hosted integration hub for leads, documents, tickets and backups.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    # The message as text, never markup: it quotes values (a key name, a setting, a path)
    # that may hold brackets, which rich would swallow or fail on (a MarkupError traceback).
    line = Text.assemble(("error:", "bold red"), " ", message)
    err.print(line, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    """Load settings and configure logging (to stderr: stdout is for results)."""
    from cauce.core.config import load_settings, setting_name

    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if problem := _database_url_problem(settings):
        # Named where it was set: `cauce.toml: database_url`, or the variable.
        name = setting_name(("database_url",), overrides)
        raise _fail(f"invalid configuration: {name}: {problem}")
    _setup_logging(settings)
    return settings


def _database_url_problem(settings: Settings) -> str | None:
    """Why the database URL cannot be parsed (a port that is no number), or None. Said
    without the URL, which may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(settings.effective_database_url)
    except ArgumentError:
        return "not a database URL (postgresql+psycopg://user:password@host:5432/database)"
    except ValueError:  # the one int() of the parse: the port
        return "its port is not a number (percent-encode a password's special characters)"
    return None


@contextmanager
def _errors() -> Iterator[None]:
    """Cauce's errors, the database's and the file system's as one line and an exit code:
    2 for configuration (the settings, the schema), 1 for a failure."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except CauceError as exc:
        raise _fail(exc.detail, code=1) from None
    except DBAPIError as exc:
        raise _fail(f"cannot use the database: {exc.orig or exc}", code=1) from None
    except CommandError as exc:  # Alembic: a revision it does not know
        raise _fail(f"cannot migrate the database: {exc}") from None
    except OSError as exc:
        if exc.filename is not None:
            # A file or directory (the data dir, the model store...), not the database
            # connection: name it rather than blame the database.
            where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
            # makedirs over a file says "File exists": the path is there, but no directory.
            why = "not a directory" if isinstance(exc, FileExistsError) else exc.strerror
            raise _fail(f"cannot use {where}: {why or exc}", code=1) from None
        raise _fail(f"cannot use the database: {exc}", code=1) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with _errors():
        return asyncio.run(coro)


def _setup_logging(settings: Settings) -> None:
    from cauce.core.observability.logging import configure_logging

    configure_logging(settings)


def server_options(settings: Settings, host: str | None, port: int | None) -> dict[str, Any]:
    """uvicorn's options for `cauce serve`. Forwarded headers are believed only from
    `http.trusted_proxies`: from anyone else they would let a client choose the address
    the access log and traces give it."""
    proxies = settings.http.trusted_proxies.strip()
    options: dict[str, Any] = {
        "host": host or settings.http.host,
        "port": port or settings.http.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": bool(proxies),
        "server_header": False,
        "timeout_graceful_shutdown": int(settings.http.graceful_shutdown_seconds),
        "lifespan": "on",
    }
    if proxies:
        options["forwarded_allow_ips"] = proxies
    return options


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [CAUCE_HTTP__HOST]")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on [CAUCE_HTTP__PORT]")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes serving the API, PostgreSQL only [CAUCE_HTTP__WORKERS]"
        ),
    ] = None,
) -> None:
    """Run the HTTP API (on SQLite this also applies pending migrations).

    SIGTERM or Ctrl-C stops accepting connections and lets in-flight requests finish
    (up to CAUCE_HTTP__GRACEFUL_SHUTDOWN_SECONDS). On PostgreSQL, `--workers N` runs N
    processes on one port (one a core, say); SQLite has one writer: one process.
    """
    import uvicorn

    from cauce.app import create_app

    settings = _settings()
    processes = workers or settings.http.workers
    if processes > 1 and settings.is_sqlite:
        raise _fail(
            "SQLite takes one writer at a time: run one `cauce serve` process "
            "(several need PostgreSQL, CAUCE_DATABASE_URL)"
        )
    options = server_options(settings, host, port)
    # The address first: uvicorn binds only after the app has started (its worker too),
    # and then exits with status 3 and a log line when the port is taken.
    _check_address(options["host"], options["port"])
    # Check the schema and the active scoring model before uvicorn starts, so a refusal
    # is one clear line, not a lifespan traceback.
    _run(_preflight(settings))
    if processes > 1:
        _serve_processes(processes, options)
        return
    config = uvicorn.Config(create_app(settings), **options)
    server = uvicorn.Server(config)
    try:
        server.run()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except SystemExit:  # uvicorn's start-up failed (it has logged why)
        if server.started:
            raise
        raise _fail("the server did not start; see the log above", code=1) from None
    if not server.started:
        raise _fail("the server did not start; see the log above", code=1)


def _check_address(host: str, port: int) -> None:
    """Refuse, in one line, an address `cauce serve` cannot listen on (taken, not this
    machine's, a name that does not resolve), binding each of its addresses as asyncio's
    server will (IPv6 sockets IPv6 only, so `localhost`'s two do not collide)."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except (OSError, OverflowError, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise _fail(f"cannot listen on {host}:{port}: {why}", code=1) from None


def _serve_processes(processes: int, options: dict[str, Any]) -> None:
    """`processes` uvicorn processes on one socket, sharing their metrics (`cli_serve`)."""
    from cauce.cli_serve import processes_config, serve_processes

    config = processes_config(processes, options)
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn has logged why (the port is taken, say)
        raise _fail(f"cannot listen on {options['host']}:{options['port']}", code=1) from None
    serve_processes(config, sock)


async def _preflight(settings: Settings) -> None:
    from cauce.cli_support import ensure_schema
    from cauce.core.db import create_database
    from cauce.leads.wiring import check_settings

    check_settings(settings)  # what only the leads context can check (routing by places)

    db = create_database(settings)
    try:
        await ensure_schema(settings, db)
    finally:
        await db.dispose()
    await asyncio.to_thread(_check_scoring_model, settings)


def _check_scoring_model(settings: Settings) -> None:
    """Load the active learned model as start-up will: a damaged, missing or altered one
    is refused here (`ModelArtefactInvalid`, saying how to recover), never loaded."""
    from cauce.leads.scoring import MODEL_STORE_PATH

    pointer = settings.data_dir / MODEL_STORE_PATH / "active"
    if not pointer.exists():
        return  # the points model scores: no need to import scikit-learn
    from cauce.leads.learned import load_active

    load_active(settings.data_dir)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs run at once [CAUCE_JOBS__CONCURRENCY]")
    ] = None,
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues to serve [CAUCE_JOBS__QUEUES]")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this port (off)"),
    ] = None,
) -> None:
    """Run jobs (PostgreSQL; start as many processes, on as many machines, as needed).

    SIGTERM or Ctrl-C stops claiming, lets running jobs finish for
    CAUCE_JOBS__GRACEFUL_SHUTDOWN_SECONDS, and puts the rest back in the queue. A queue no
    task runs on is refused, as is a database this version cannot run on (pending
    migrations, or one a later version migrated).
    """
    settings = _settings()
    from cauce.worker import SQLITE_REFUSAL, run_worker

    if settings.is_sqlite:
        raise _fail(SQLITE_REFUSAL)
    served = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    _run(run_worker(settings, concurrency=concurrency, queues=served, metrics_port=metrics_port))


def _guarded(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with Cauce's errors as one line and an exit code (`_errors`), for the
    commands that run their own event loop (`cauce demo`)."""

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> None:
        with _errors():
            command(*args, **kwargs)

    return guarded


class _LazyGroup(TyperGroup):
    """A command group whose commands are built when first asked for: listing the root's
    commands (`cauce --help`) needs only its help line, not its module's imports."""

    load: Callable[[], typer.Typer]
    _loaded: MutableMapping[str, Any] | None = None

    @property  # typer's attribute, filled on first use
    def commands(self) -> MutableMapping[str, Any]:
        """The group's (click) commands by name, built on first use."""
        loaded = self._loaded
        if loaded is None:
            loaded = self._loaded = typer.main.get_group(self.load()).commands
        return loaded

    @commands.setter
    def commands(self, value: MutableMapping[str, Any]) -> None:
        self._loaded = value or None  # typer's empty mapping: the commands are the loaded


def _lazy_typer(load: Callable[[], typer.Typer], help_line: str) -> typer.Typer:
    """A typer mounting `load()`'s commands, imported only when one of them is run or
    its group's help is asked for; `help_line` is the group's help."""
    group = type("LazyGroup", (_LazyGroup,), {"load": staticmethod(load)})
    return typer.Typer(cls=group, help=help_line, no_args_is_help=True)


def _sandbox_app() -> typer.Typer:
    # The sandbox package imports its aiohttp server (about 0.3 s).
    from cauce.sandbox.cli import sandbox_app

    return sandbox_app


# The sandbox group's help, as `cauce.sandbox.cli` gives it (a test keeps them in step).
SANDBOX_HELP = "Local stand-ins for outside systems, with fault injection."

app.add_typer(build_db_app(_settings, _run, out), name="db")
app.add_typer(build_apikey_app(_settings, _run, out, err, _fail), name="apikey")
app.add_typer(build_jobs_app(_settings, _run, out, err, _fail), name="jobs")
app.add_typer(_lazy_typer(_sandbox_app, SANDBOX_HELP), name="sandbox")
app.add_typer(build_leads_app(_settings, _run, out, _fail), name="leads")
app.command("demo")(_guarded(demo_command(out)))


def main() -> None:
    """Console-script entry point."""
    app()
