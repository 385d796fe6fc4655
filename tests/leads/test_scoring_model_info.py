"""Which model a running process scores with: `GET /v1/leads/scoring/model` and the
`cauce_leads_scoring_model_info` gauge.

A process loads its scorer at start-up and keeps it: after `cauce leads model activate`
it is `stale` until restarted, and both the answer and the gauge say so, so a deploy
script can tell which processes were restarted.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from cauce.core.config import Settings
from cauce.leads.learned import ModelStore, TrainingReport, publish, train
from cauce.leads.scoring import PointsModel
from cauce.leads.synthetic import synthetic_leads, training_examples
from tests.conftest import SettingsFactory
from tests.leads.api_client import LEADS_APP, client_with, serve_app
from tests.leads.test_score_model_shown import MARTA
from tests.test_cli_leads import _insert_outcomes, cauce_here

PATH = "/v1/leads/scoring/model"
INFO = "cauce_leads_scoring_model_info"


@pytest.fixture(scope="module")
def trained() -> TrainingReport:
    """A model trained on synthetic leads that activates (as test_score_model_shown)."""
    return train(training_examples(synthetic_leads(800, seed=1)), seed=1)


async def _model(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get(PATH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _gauge(api: httpx.AsyncClient) -> dict[str, float]:
    """The info gauge's samples, by their `model` label."""
    response = await api.get("/metrics")
    assert response.status_code == 200
    return {
        sample.labels["model"]: sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name == INFO
        for sample in family.samples
    }


async def _scored_by(api: httpx.AsyncClient) -> str:
    """The model a new lead's intake answer names: what the process really scores with."""
    response = await api.post("/v1/leads", json=MARTA)
    assert response.status_code in (200, 201), response.text
    model: str = response.json()["score_model"]
    return model


async def test_a_process_without_a_learned_model_says_points(
    settings_factory: SettingsFactory,
) -> None:
    """With no model ever activated, a process says it scores with the points model,
    loaded when it started, as the store says: not stale; its gauge says `points` alone."""
    before = datetime.now(UTC)
    async with serve_app(settings_factory(**LEADS_APP)) as (_, api):
        after = datetime.now(UTC)
        body = await _model(api)
        assert (body["model"], body["active_model"], body["stale"]) == ("points", "points", False)
        assert before <= datetime.fromisoformat(body["loaded_at"]) <= after
        assert isinstance(body["pid"], int)
        assert await _gauge(api) == {"points": 1.0}
        assert await _scored_by(api) == body["model"]


async def test_a_process_started_after_activation_says_the_learned_model(
    settings_factory: SettingsFactory, trained: TrainingReport
) -> None:
    """A process started after a learned model's activation scores with it, says so in
    the answer and the gauge, and is not stale."""
    settings = settings_factory(**LEADS_APP)
    assert publish(trained, ModelStore.for_data_dir(settings.data_dir)).activated
    async with serve_app(settings) as (_, api):
        body = await _model(api)
        assert body["model"] == body["active_model"] == "learned-v1"
        assert body["stale"] is False
        assert await _gauge(api) == {"learned-v1": 1.0}
        assert await _scored_by(api) == "learned-v1"


async def test_activating_another_model_makes_a_running_process_stale(
    settings_factory: SettingsFactory, trained: TrainingReport
) -> None:
    """Activating another version (or the points model) while a process runs leaves it
    scoring with the model it loaded: it answers `stale` with the store's new model,
    until a process started after says it has it."""
    settings = settings_factory(**LEADS_APP)
    store = ModelStore.for_data_dir(settings.data_dir)
    assert publish(trained, store).activated
    async with serve_app(settings) as (_, api):
        loaded = await _model(api)
        assert (loaded["model"], loaded["stale"]) == ("learned-v1", False)

        second = store.save(trained).version
        assert second is not None
        store.activate(second)
        body = await _model(api)
        assert body["model"] == "learned-v1"  # what it loaded, still
        assert body["loaded_at"] == loaded["loaded_at"]
        assert (body["active_model"], body["stale"]) == (f"learned-v{second}", True)
        assert await _gauge(api) == {"learned-v1": 1.0}
        assert await _scored_by(api) == "learned-v1"

        store.deactivate()  # `cauce leads model activate points`
        body = await _model(api)
        assert (body["active_model"], body["stale"]) == ("points", True)

        store.activate(second)
        async with serve_app(settings) as (_, restarted):
            again = await _model(restarted)
            assert again["model"] == again["active_model"] == f"learned-v{second}"
            assert again["stale"] is False
            assert again["loaded_at"] > loaded["loaded_at"]
            assert await _gauge(restarted) == {f"learned-v{second}": 1.0}
            # The process that was not restarted still says it is behind.
            assert (await _model(api))["stale"] is True


async def test_an_unreadable_active_pointer_is_a_problem_naming_no_path(
    settings_factory: SettingsFactory, trained: TrainingReport
) -> None:
    """When the store's active pointer names no version (a process started now would
    refuse to start), the answer is a 503 problem saying so and what this process scores
    with, without the server's paths; the process keeps scoring."""
    settings = settings_factory(**LEADS_APP)
    store = ModelStore.for_data_dir(settings.data_dir)
    assert publish(trained, store).activated
    async with serve_app(settings) as (_, api):
        (store.root / "active").write_text("latest\n", encoding="utf-8")
        response = await api.get(PATH)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "lead_scoring_store_unavailable"
        assert "learned-v1" in problem["detail"]
        assert str(settings.data_dir) not in response.text
        assert await _scored_by(api) == "learned-v1"


async def test_it_needs_leads_read(leads_app: FastAPI) -> None:
    """A key without `leads:read` (an intake form's) is refused with a 403 problem; no key
    is a 401."""
    async with await client_with(leads_app, ["leads:write"], name="form") as form:
        refused = await form.get(PATH)
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "leads:read"
    transport = httpx.ASGITransport(app=leads_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cauce.test") as anonymous:
        assert (await anonymous.get(PATH)).status_code == 401


async def test_the_route_is_no_lead_id(api: httpx.AsyncClient) -> None:
    """`/v1/leads/scoring/model` is answered by its own route, and a lead's id still goes
    to the lead's (`/v1/leads/scoring` is no lead: 404)."""
    assert (await api.get(PATH)).json()["model"] == "points"
    assert (await api.get("/v1/leads/scoring")).status_code == 404
    created = await api.post("/v1/leads", json=MARTA)
    assert (await api.get(f"/v1/leads/{created.json()['id']}")).status_code == 200


# -- `cauce leads train` names the settings it read ------------------------------------------

RULES_TOML = """
[[leads.scoring_rules]]
name = "has_email"
field = "email"
points = 20
reason = "has an email address"

[[leads.scoring_rules]]
name = "has_phone"
field = "phone"
points = 30
reason = "has a phone number"
"""


def _report_rows(stdout: str) -> dict[str, str]:
    """The report's `  Label   text` rows, by label."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            label, text = line[2:22].strip(), line[22:]
            rows[label] = text
    return rows


def test_the_training_report_names_the_settings_file_and_points_rules(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cauce leads train` reads the `cauce.toml` of the directory it runs in: its report
    says which file it read (or that there was none, so built-in defaults), the data
    directory, and which points rules it compared with (built-in or configured, with a
    fingerprint that changes with the rules), as the saved version's metadata does."""
    asyncio.run(_insert_outcomes(settings, 800))
    bare, configured = tmp_path / "bare", tmp_path / "configured"
    bare.mkdir()
    configured.mkdir()
    (configured / "cauce.toml").write_text(RULES_TOML, encoding="utf-8")
    monkeypatch.delenv("CAUCE_CONFIG", raising=False)
    url = str(settings.database_url)

    monkeypatch.chdir(bare)
    first = cauce_here(tmp_path, "leads", "train", "--seed", "1", CAUCE_DATABASE_URL=url)
    assert first.exit_code == 0, first.stderr
    rows = _report_rows(first.stdout)
    assert rows["Settings file"].startswith("none (")
    assert str(bare / "cauce.toml") in rows["Settings file"]
    assert "built-in defaults" in rows["Settings file"]
    assert rows["Data directory"] == str((tmp_path / "data").resolve())
    builtin = PointsModel()
    assert rows["Points rules"] == (
        f"built-in, {len(builtin.rules)} rules, sha256 {builtin.fingerprint}"
    )

    monkeypatch.chdir(configured)
    second = cauce_here(tmp_path, "leads", "train", "--seed", "1", CAUCE_DATABASE_URL=url)
    assert second.exit_code == 0, second.stderr
    rows = _report_rows(second.stdout)
    assert rows["Settings file"] == str((configured / "cauce.toml").resolve())
    assert rows["Points rules"].startswith("from the settings (leads.scoring_rules), 2 rules, ")
    fingerprint = rows["Points rules"].rsplit(" ", 1)[-1]
    assert fingerprint != builtin.fingerprint
    store = ModelStore.for_data_dir(tmp_path / "data")
    recorded = [store.metadata(v)["points_rules"] for v in store.versions()]
    assert [r["sha256"] for r in recorded] == [builtin.fingerprint, fingerprint]
    assert [r["builtin"] for r in recorded] == [True, False]
