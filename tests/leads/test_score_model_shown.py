"""Every answer that shows a lead's score names the model that gave it (`score_model`).

While a learned model is active, leads stored before keep their points scores: two
scales side by side. So `score_model` (`points`, `learned-v<N>`) goes with `score` in
the answer to `POST /v1/leads`, in each scored batch item and in the CSV export (its last
column: the export's first fifteen columns are how an import knows it), as it does in a
lead's detail. A key without `leads:read` is still shown nothing of the lead.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cauce.leads.csv_columns import EXPORT_HEADER_PREFIX
from cauce.leads.csv_export import EXPORT_COLUMNS
from cauce.leads.learned import ModelStore, TrainingReport, publish, train
from cauce.leads.synthetic import synthetic_leads, training_examples
from tests.conftest import SettingsFactory
from tests.leads.api_client import LEADS_APP, client_with, get_lead, serve_app

ANA = {
    "email": "ana.garcia@bodegasduero.es",
    "first_name": "Ana",
    "last_name": "García Núñez",
    "company": "Bodegas Duero S.L.",
    "job_title": "Directora Comercial",
    "country": "ES",
}

MARTA = {
    "email": "marta@olivaresjaen.es",
    "first_name": "Marta",
    "company": "Olivares del Jaén S.A.",
    "job_title": "CEO",
    "country": "ES",
}


def _after_score(answer: dict[str, Any]) -> str | None:
    """The key right after `score` in an answer (as its JSON writes them)."""
    keys = list(answer)
    return keys[keys.index("score") + 1]


async def _export(api: httpx.AsyncClient) -> list[dict[str, str]]:
    response = await api.get("/v1/leads/export.csv")
    assert response.status_code == 200, response.text
    reader = csv.DictReader(io.StringIO(response.text.lstrip("\ufeff")))
    assert reader.fieldnames == list(EXPORT_COLUMNS)
    return list(reader)


async def test_intake_batch_and_export_name_the_points_model(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    """A points-scored lead's intake answer (created and merged), its batch item and its
    export row say `points`, as its detail does; a rejected item has no score and no
    model; and the export keeps its first fifteen columns, `score_model` last."""
    created = await api.post("/v1/leads", json=ANA)
    assert created.status_code == 201, created.text
    answer = created.json()
    assert answer["score_model"] == "points"
    assert _after_score(answer) == "score_model"
    detail = await get_lead(api, answer["id"])
    assert (detail["score"], detail["score_model"]) == (answer["score"], "points")

    merged = await api.post("/v1/leads", json={**ANA, "phone": "+34 612 345 678"})
    assert merged.status_code == 200, merged.text
    assert (merged.json()["outcome"], merged.json()["score_model"]) == ("merged", "points")

    items = [
        {"email": "luis@ferreteriaolmo.es", "first_name": "Luis", "country": "ES"},
        {"email": "bad"},
        {**ANA, "city": "Valladolid"},
    ]
    batch = await api.post("/v1/leads/batch", json={"items": items})
    assert batch.status_code == 200, batch.text
    shown = batch.json()["items"]
    assert [item["outcome"] for item in shown] == ["created", "rejected", "merged"]
    assert [item["score_model"] for item in shown] == ["points", None, "points"]
    assert (shown[1]["score"], shown[2]["id"]) == (None, answer["id"])
    assert all(_after_score(item) == "score_model" for item in shown)

    assert EXPORT_COLUMNS[: len(EXPORT_HEADER_PREFIX)] == EXPORT_HEADER_PREFIX
    assert EXPORT_COLUMNS[-1] == "score_model"
    rows = await _export(api)
    assert {row["email"]: row["score_model"] for row in rows} == {
        "ana.garcia@bodegasduero.es": "points",
        "luis@ferreteriaolmo.es": "points",
    }

    # A key without `leads:read` is still shown nothing of the lead (nor its model).
    async with await client_with(leads_app, ["leads:write"], name="form") as form:
        single = await form.post("/v1/leads", json={**ANA, "email": "otra@bodegasduero.es"})
        assert (single.status_code, single.json()) == (202, {"accepted": True})
        accepted = await form.post("/v1/leads/batch", json={"items": items})
        assert accepted.status_code == 202, accepted.text
        assert [set(item) for item in accepted.json()["items"]] == [
            {"index", "accepted", "errors"}
        ] * 3


@pytest.fixture(scope="module")
def trained() -> TrainingReport:
    """A model trained on synthetic leads that activates (as test_api_untested_paths)."""
    return train(training_examples(synthetic_leads(800, seed=1)), seed=1)


async def test_answers_and_export_tell_learned_scores_from_points_scores(
    settings_factory: SettingsFactory, api: httpx.AsyncClient, trained: TrainingReport
) -> None:
    """Once a learned model is active, a new lead's intake answer, batch item and export
    row say `learned-v1`, while a lead stored before keeps `points` in the export: the
    export tells the two scales apart."""
    before = (await api.post("/v1/leads", json=ANA)).json()
    assert before["score_model"] == "points"

    settings = settings_factory(**LEADS_APP)  # `api`'s settings: the same database and data_dir
    store = ModelStore.for_data_dir(settings.data_dir)
    assert publish(trained, store).activated
    async with serve_app(settings) as (_, fresh):
        single = await fresh.post("/v1/leads", json=MARTA)
        assert single.status_code == 201, single.text
        answer = single.json()
        assert answer["score_model"] == "learned-v1"
        detail = await get_lead(fresh, answer["id"])
        assert (detail["score"], detail["score_model"]) == (answer["score"], "learned-v1")

        batch = await fresh.post(
            "/v1/leads/batch", json={"items": [{"email": "pepe.perez@gmail.com"}]}
        )
        assert batch.status_code == 200, batch.text
        assert batch.json()["items"][0]["score_model"] == "learned-v1"

        rows = await _export(fresh)
    assert {row["email"]: row["score_model"] for row in rows} == {
        "ana.garcia@bodegasduero.es": "points",
        "marta@olivaresjaen.es": "learned-v1",
        "pepe.perez@gmail.com": "learned-v1",
    }
