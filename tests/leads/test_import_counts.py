"""A CSV import's rows are counted in `cauce_leads_intake_total` as the API's leads are:
created, merged and rejected alike (its rejected rows were not counted)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from cauce.app import job_worker_for
from tests.leads.import_client import import_csv


def _count(app: FastAPI, outcome: str) -> float:
    registry = app.state.resources.registry
    return registry.get_sample_value("cauce_leads_intake_total", {"outcome": outcome}) or 0.0


async def test_imported_rows_are_counted_by_outcome(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    before = {o: _count(leads_app, o) for o in ("created", "merged", "rejected")}
    bad = await api.post("/v1/leads", json={"email": "no-es-un-email"})
    assert bad.status_code == 422
    data = (
        b"email;nombre;telefono\n"
        b"ana@empresa.es;Ana;612345678\n"
        b"no-es-un-email;Luis;\n"
        b";Marta;12\n"
        b"ANA@empresa.es;Ana;\n"
        b"luis@empresa.es;Luis;\n"
    )
    status = await import_csv(api, job_worker_for(leads_app.state.resources), data)
    assert (status["rows_created"], status["rows_merged"], status["rows_rejected"]) == (2, 1, 2)
    after = {o: _count(leads_app, o) for o in ("created", "merged", "rejected")}
    assert after["created"] - before["created"] == 2
    assert after["merged"] - before["merged"] == 1
    assert after["rejected"] - before["rejected"] == 3  # the API's one and the file's two
