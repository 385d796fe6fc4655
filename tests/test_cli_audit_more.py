"""What the first CLI audit (`tests/test_cli_audit.py`) left: a schema a later version
migrated refused by `prepare_schema` itself (every caller, not only the CLI), an empty
CAUCE_DATA_DIR, a worker asked for a queue no task runs on, bad API-key scopes as the
usage error they are, and `cauce --help` without the heavy imports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from asgi_lifespan import LifespanManager

from cauce.app import create_app
from cauce.cli import SANDBOX_HELP
from cauce.core.config import Settings, load_settings
from cauce.core.db import create_database
from cauce.core.db.migrate import prepare_schema
from cauce.core.errors import ConfigError
from cauce.core.jobs.registry import TaskRegistry
from cauce.sandbox.cli import sandbox_app
from cauce.worker import WorkerRefused, run_worker, unknown_queues
from tests.conftest import TEST_SECRET, SettingsFactory, make_settings
from tests.settings_cli import serve_refusal
from tests.test_cli import HEAD, cauce
from tests.test_cli_audit import refused

AHEAD = "0999"
NEWER = (
    f"the database is at revision {AHEAD}, which this version of Cauce does not know "
    f"(it knows up to {HEAD}): a later version migrated it (run that version, or roll the "
    "schema back)"
)


def _migrated_by_a_later_version(url: str) -> None:
    """Mark the database at `url` as migrated by a later Cauce (as after a rollback)."""
    engine = sqlalchemy.create_engine(url.replace("+aiosqlite", ""))
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"UPDATE alembic_version SET version_num = '{AHEAD}'"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("auto_migrate", [True, False])
async def test_prepare_schema_refuses_a_schema_a_later_version_migrated(
    settings_factory: SettingsFactory, database_url: str, auto_migrate: bool
) -> None:
    """`prepare_schema` itself refuses it in one line naming both revisions: migrating
    failed in Alembic ("Can't locate revision"), and without auto-migration it was
    "pending migrations: run `cauce db upgrade`", which cannot help."""
    _migrated_by_a_later_version(database_url)
    settings = settings_factory(db={"auto_migrate": auto_migrate})
    db = create_database(settings)
    try:
        with pytest.raises(ConfigError) as refusal:
            await prepare_schema(db, settings)
    finally:
        await db.dispose()
    assert str(refusal.value) == NEWER


async def test_the_app_refuses_to_start_on_a_schema_a_later_version_migrated(
    tmp_path: Path,
) -> None:
    """The app's start-up (as `serve`'s processes and the demo run it) gets the same line."""
    settings = make_settings(tmp_path)
    db = create_database(settings)
    try:
        await prepare_schema(db, settings)
    finally:
        await db.dispose()
    _migrated_by_a_later_version(settings.effective_database_url)
    with pytest.raises(ConfigError, match=f"revision {AHEAD}, which this version"):
        async with LifespanManager(create_app(settings)):
            pass


def test_commands_calling_prepare_schema_refuse_a_later_schema(tmp_path: Path) -> None:
    """`cauce leads train` (which prepares the schema itself) showed Alembic's "cannot
    migrate the database: Can't locate revision"; `serve` and `apikey` now get their
    line from `prepare_schema` too."""
    assert cauce(tmp_path, "db", "upgrade").returncode == 0
    _migrated_by_a_later_version(f"sqlite:///{tmp_path / 'data' / 'cauce.db'}")
    for command in (["leads", "train"], ["apikey", "list"], ["db", "upgrade"]):
        assert refused(cauce(tmp_path, *command), 2) == f"error: {NEWER}", command


def test_an_empty_data_dir_variable_is_refused(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CAUCE_DATA_DIR=` meant the working directory: the database and models landed
    wherever the command ran."""
    monkeypatch.setenv("CAUCE_DATA_DIR", " ")
    with pytest.raises(ConfigError, match=r"CAUCE_DATA_DIR: is empty: name a directory"):
        load_settings()
    monkeypatch.delenv("CAUCE_DATA_DIR")
    assert load_settings().data_dir == Path(".cauce")


def test_serve_refuses_an_empty_data_dir(tmp_path: Path) -> None:
    """The command stops with one line naming the variable, and creates nothing here."""
    line = serve_refusal(tmp_path, CAUCE_DATA_DIR="")
    assert line.startswith("error: invalid configuration: CAUCE_DATA_DIR: is empty"), line
    assert not (tmp_path / "cauce.db").exists()


def _registry(*queues: str) -> TaskRegistry:
    registry = TaskRegistry()

    async def handler(*_: object) -> None:
        return None

    for index, queue in enumerate(queues):
        registry.task(f"t{index}", queue=queue)(handler)
    return registry


def test_unknown_queues_name_the_option_and_the_queues(tmp_path: Path) -> None:
    """A queue no registered task runs on is named, with the queues there are."""
    registry = _registry("default", "crm", "crm")
    settings = make_settings(tmp_path)
    assert unknown_queues(registry, ["crm"], settings) is None
    assert unknown_queues(registry, None, settings) is None  # all
    assert unknown_queues(registry, ["nosuch", "crm"], settings) == (
        "--queues: no task runs on queue 'nosuch'; the queues are crm, default"
    )
    assert unknown_queues(registry, ["a", "b"], settings) == (
        "--queues: no task runs on queues 'a', 'b'; the queues are crm, default"
    )
    configured = make_settings(tmp_path, jobs={"queues": ["nosuch"]})
    assert unknown_queues(registry, None, configured) == (
        "CAUCE_JOBS__QUEUES: no task runs on queue 'nosuch'; the queues are crm, default"
    )


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_run_worker_refuses_a_queue_no_task_runs_on(settings: Settings) -> None:
    """The worker started, claimed nothing, and looked healthy."""
    stop = asyncio.Event()
    stop.set()  # had it started, it would stop at once
    with pytest.raises(WorkerRefused, match="no task runs on queue 'nosuch'; the queues are"):
        await run_worker(settings, queues=["nosuch"], stop=stop)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_cauce_worker_refuses_unknown_queues(tmp_path: Path, database_url: str) -> None:
    """`cauce worker --queues nosuch` is a usage error (2) listing the known queues."""
    env = {"CAUCE_DATABASE_URL": database_url, "CAUCE_SECRET_KEY": TEST_SECRET}
    line = refused(cauce(tmp_path, "worker", "--queues", "crm,nosuch", **env), 2)
    assert line == (
        "error: --queues: no task runs on queue 'nosuch'; the queues are crm, default, imports"
    )
    line = refused(cauce(tmp_path, "worker", CAUCE_JOBS__QUEUES='["nosuch"]', **env), 2)
    assert line.startswith("error: CAUCE_JOBS__QUEUES: no task runs on queue 'nosuch'")


def test_apikey_create_with_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    """An unknown scope exited 1 (a failure) after creating the database; now 2, as every
    other bad input, before anything is touched, listing the scopes there are."""
    result = cauce(tmp_path, "apikey", "create", "--name", "x", "--scopes", "admin,leads:raed")
    assert refused(result, 2) == (
        "error: --scopes: unknown scope(s): leads:raed; the scopes are admin, jobs:admin, "
        "leads:admin, leads:read, leads:write"
    )
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()
    no_scope = cauce(tmp_path, "apikey", "create", "--name", "x", "--scopes", " , ")
    assert refused(no_scope, 2) == "error: a key needs at least one scope"
    no_name = cauce(tmp_path, "apikey", "create", "--name", " ", "--scopes", "admin")
    assert refused(no_name, 2) == "error: a key needs a name of 1 to 200 characters"
    assert no_name.stdout == ""


# What `cauce --help` used to import (2.4 s): none of it is needed to print the help.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "pydantic_settings",
    "fastapi",
    "sklearn",
    "aiohttp",
    "uvicorn",
    "cauce.app",
    "cauce.core.config",
    "cauce.core.db",
    # The job engine; its ports (no SQLAlchemy) give `--status` its choices.
    "procrastinate",
    "cauce.core.jobs.factory",
    "cauce.core.jobs.models",
    "cauce.core.jobs.embedded",
    "cauce.leads",
    "cauce.sandbox",
)


@pytest.mark.parametrize("args", [["--help"], ["jobs", "--help"], ["apikey", "--help"]])
def test_help_imports_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    """`cauce --help` imported SQLAlchemy, the settings, the job engine and the sandbox's
    aiohttp server (2.4 s); commands import what they need when they run."""
    code = (
        "import sys\n"
        "from cauce.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit:\n    pass\n"
        "print(*sorted(sys.modules), sep='\\n', file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "Usage" in result.stdout, result.stderr
    loaded = set(result.stderr.split())
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(f"{h}.") for h in HEAVY))
    assert heavy == []


def test_the_lazy_sandbox_group_is_the_sandbox_cli(tmp_path: Path) -> None:
    """`cauce sandbox` is mounted without importing it: its help and its commands are
    the sandbox module's own."""
    assert sandbox_app.info.help == SANDBOX_HELP
    group = cauce(tmp_path, "sandbox", "--help")
    assert group.returncode == 0, group.stderr
    assert SANDBOX_HELP in group.stdout
    assert "crm" in group.stdout
    bad = cauce(tmp_path, "sandbox", "crm", "--error-rate", "2")
    assert refused(bad, 2) == "error: error_rate must be within [0, 1], got 2.0"
