"""Uploading a CSV to `POST /v1/leads/import`, running its job, and reading its status
and error report: shared by the import tests that go through the API."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx

from cauce.core.jobs.factory import JobWorker


async def post_csv(
    api: httpx.AsyncClient, data: bytes, options: dict[str, Any] | None = None
) -> httpx.Response:
    """Upload `data` as `leads.csv`, with `options` as the form's JSON when given."""
    form = {"options": json.dumps(options)} if options is not None else None
    return await api.post(
        "/v1/leads/import", files={"file": ("leads.csv", data, "text/csv")}, data=form
    )


async def import_csv(
    api: httpx.AsyncClient, worker: JobWorker, data: bytes, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Upload, run the import queue until idle, and return the status (which must say
    the import succeeded)."""
    response = await post_csv(api, data, options)
    assert response.status_code == 202, response.text
    await worker.run_until_idle(60)
    status = await api.get(f"/v1/leads/import/{response.json()['id']}")
    assert status.status_code == 200, status.text
    body: dict[str, Any] = status.json()
    assert body["state"] == "succeeded", body
    return body


async def error_report(api: httpx.AsyncClient, status: dict[str, Any]) -> list[list[str]]:
    """The import's error report as rows, read in the upload's delimiter (the report's)."""
    report = await api.get(f"/v1/leads/import/{status['id']}/errors.csv")
    assert report.status_code == 200, report.text
    text = report.content.decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=status["delimiter"] or ","))
