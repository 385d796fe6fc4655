"""`cauce leads train`, `cauce leads model` and `serve`'s check of the active scoring model,
as real processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import typer
from sqlalchemy import insert
from typer.testing import CliRunner, Result

from cauce.cli import _check_scoring_model, _run
from cauce.cli import app as cli_app
from cauce.core.config import Settings
from cauce.core.db import create_database, unit_of_work
from cauce.leads.learned import ModelArtefactInvalid, ModelStore, train
from cauce.leads.models import Lead
from cauce.leads.synthetic import synthetic_leads, training_examples
from tests.conftest import make_settings
from tests.test_cli import cauce, cli_env, free_port
from tests.test_cli_jobs import restore_logging

__all__ = ["restore_logging"]  # a fixture, used by name


def cauce_here(tmp_path: Path, *args: str, **env: str) -> Result:
    """`cauce ARGS` in-process (the model commands need no server and no new interpreter)."""
    environment = {"CAUCE_DATA_DIR": str(tmp_path / "data"), "CAUCE_LOG__FORMAT": "json", **env}
    return CliRunner().invoke(cli_app, list(args), env=environment)


def _store_with_active_model(tmp_path: Path) -> ModelStore:
    """The CLI's model store (under CAUCE_DATA_DIR) with v1 and v2 saved and v2 active."""
    store = ModelStore.for_data_dir(tmp_path / "data")
    report = train(training_examples(synthetic_leads(200, seed=1)), seed=1)
    store.save(report)
    store.save(report)
    store.activate(2)
    return store


async def _insert_outcomes(settings: Settings, count: int) -> None:
    db = create_database(settings)
    try:
        rows = [
            # Fixed ids: the held-out leads are chosen by id (`training.held_out_point`).
            {
                "id": i + 1,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cauce-test-lead-{i + 1}")),
                "status": lead.status,
                **lead.fields,
            }
            for i, lead in enumerate(synthetic_leads(count, seed=1))
        ]
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(insert(Lead), rows)
    finally:
        await db.dispose()


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_serve_refuses_an_altered_active_model_in_one_line(tmp_path: Path) -> None:
    """One byte appended to the active artefact stops `serve` before start-up with one line
    naming the problem and the way back, never a lifespan traceback."""
    store = _store_with_active_model(tmp_path)
    with store.artefact_path(2).open("ab") as handle:
        handle.write(b"\0")
    refused = cauce(tmp_path, "serve", CAUCE_HTTP__PORT=str(free_port()))
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "startup" not in refused.stderr.lower()
    (line,) = _errors(refused.stderr)
    assert "v2 artefact does not match its recorded SHA-256" in line
    assert "`cauce leads model activate points`" in line
    assert "saved: v1" in line


@pytest.mark.parametrize(
    ("damage", "problem"),
    [("deleted", "v2 artefact is missing"), ("pointer", "does not name a version (v<N>)")],
)
def test_serve_preflight_refuses_a_missing_model_or_a_garbage_pointer(
    tmp_path: Path, damage: str, problem: str
) -> None:
    """`serve`'s check refuses a deleted artefact or a garbage pointer, saying how to recover."""
    store = _store_with_active_model(tmp_path)
    if damage == "deleted":
        store.artefact_path(2).unlink()
    else:
        (store.root / "active").write_text("garbage")
    with pytest.raises(ModelArtefactInvalid) as refused:
        _check_scoring_model(make_settings(tmp_path / "data"))
    assert problem in refused.value.detail
    assert "`cauce leads model activate N`; saved: v1" in refused.value.detail
    assert "\n" not in refused.value.detail


def test_leads_model_list_and_activate(tmp_path: Path, restore_logging: None) -> None:
    """Versions are listed with their figures; a refused one cannot be activated, another
    version or the points model can."""
    store = _store_with_active_model(tmp_path)
    with store.artefact_path(2).open("ab") as handle:
        handle.write(b"\0")
    listed = cauce_here(tmp_path, "leads", "model", "list")
    assert listed.exit_code == 1, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("  v1    ROC AUC learned")
    assert lines[1].startswith("* v2    refused: model v2 artefact does not match")
    assert len(lines) == 2  # not "new leads are scored by learned-v2": it cannot load
    assert "learned-v2 cannot load" in _errors(listed.stderr)[0]

    again = cauce_here(tmp_path, "leads", "model", "activate", "v2")
    assert again.exit_code == 1
    assert "SHA-256" in _errors(again.stderr)[0]
    missing = cauce_here(tmp_path, "leads", "model", "activate", "7")
    assert missing.exit_code == 1
    assert "model version 7 does not exist" in missing.stderr
    assert cauce_here(tmp_path, "leads", "model", "activate", "latest").exit_code == 2

    older = cauce_here(tmp_path, "leads", "model", "activate", "1")
    assert older.exit_code == 0, older.stderr
    assert "learned-v1 now scores new leads" in older.stdout
    assert "`cauce worker`" in older.stdout
    assert store.active_version() == 1
    points = cauce_here(tmp_path, "leads", "model", "activate", "points")
    assert points.exit_code == 0, points.stderr
    assert store.active_version() is None
    listed = cauce_here(tmp_path, "leads", "model", "list")
    assert listed.stdout.splitlines()[-1] == "new leads are scored by the points model"


def test_train_prints_its_report_unwrapped(
    tmp_path: Path, settings: Settings, database_url: str
) -> None:
    """Off a terminal the report keeps one line per fact, however narrow COLUMNS is, and
    says what activation changes."""
    asyncio.run(_insert_outcomes(settings, 800))
    env = cli_env(tmp_path, CAUCE_DATABASE_URL=database_url)
    env["COLUMNS"] = "60"
    trained = subprocess.run(
        [sys.executable, "-m", "cauce", "leads", "train", "--seed", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trained.returncode == 0, trained.stderr
    lines = trained.stdout.splitlines()
    auc = next(line for line in lines if line.startswith("  ROC AUC, held out"))
    assert "95 % interval" in auc
    assert auc.endswith("margin 0.010)")
    result = next(line for line in lines if line.startswith("  Result"))
    assert "activated: learned-v1 now scores new leads, in place of the points model" in result
    scale = next(line for line in lines if line.startswith("  Scores now"))
    assert scale.endswith("do not add up to it")
    assert any(line.startswith("  Routing             no routing rule") for line in lines)


def test_train_refuses_an_unreachable_mlflow_at_once(tmp_path: Path, restore_logging: None) -> None:
    """A tracking server nobody answers is one line within seconds, before any training."""
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    refused = cauce_here(tmp_path, "leads", "train", CAUCE_MLFLOW__TRACKING_URI=uri)
    assert time.monotonic() - started < 30
    assert refused.exit_code == 1
    (line,) = _errors(refused.stderr)
    assert f"MLflow at {uri} (CAUCE_MLFLOW__TRACKING_URI) does not answer" in line
    assert "Nothing was trained or saved" in line
    assert ModelStore.for_data_dir(tmp_path / "data").versions() == []


def test_model_store_errors_name_the_store_not_the_database(
    tmp_path: Path, settings: Settings, database_url: str, restore_logging: None
) -> None:
    """A model store that is not a directory is reported as such, not as a database error."""
    asyncio.run(_insert_outcomes(settings, 100))
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "models").write_text("a file where a directory belongs")
    failed = cauce_here(tmp_path, "leads", "train", CAUCE_DATABASE_URL=database_url)
    assert failed.exit_code == 1
    (line,) = _errors(failed.stderr)
    assert "database" not in line
    assert f"model store {tmp_path / 'data' / 'models' / 'lead-scoring'}" in line


def test_run_names_the_file_of_a_file_system_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError about a file names that file; only one without a file blames the database."""

    async def unreadable() -> None:
        raise PermissionError(13, "Permission denied", "/srv/cauce/imports/x.csv")

    with pytest.raises(typer.Exit):
        _run(unreadable())
    message = capsys.readouterr().err
    assert "cannot use /srv/cauce/imports/x.csv: Permission denied" in message
    assert "database" not in message
