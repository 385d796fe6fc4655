"""Consent is stored as proof (GDPR art. 7): a `given_at` or `source` the client leaves out
is the time Cauce received it and the lead's source, on intake, batch, CSV and PATCH."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

CONSENT = {"marketing": True, "wording_version": "rgpd-2024-03"}


def _lead(email: str, **extra: Any) -> dict[str, Any]:
    return {"email": email, "first_name": "Lucía", "last_name": "Gómez Ruiz", **extra}


async def _consent(api: httpx.AsyncClient, lead_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/leads/{lead_id}")
    assert response.status_code == 200, response.text
    consent: dict[str, Any] = response.json()["consent"]
    return consent


def _recent(stamp: str, before: datetime) -> bool:
    at = datetime.fromisoformat(stamp)
    return at.tzinfo is not None and before - timedelta(seconds=1) <= at <= datetime.now(UTC)


async def test_missing_time_and_place_are_filled_on_intake(api: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    created = await api.post(
        "/v1/leads", json=_lead("lucia@bodegas.es", source="web_form", consent=CONSENT)
    )
    assert created.status_code == 201, created.text
    consent = await _consent(api, created.json()["id"])
    assert consent["marketing"] is True
    assert consent["wording_version"] == "rgpd-2024-03"
    assert consent["source"] == "web_form"
    assert _recent(consent["given_at"], before)


async def test_what_the_client_sent_is_kept(api: httpx.AsyncClient) -> None:
    given = {**CONSENT, "given_at": "2026-03-01T10:00:00+01:00", "source": "https://x.es/f"}
    created = await api.post("/v1/leads", json=_lead("ana@bodegas.es", consent=given))
    assert created.status_code == 201, created.text
    consent = await _consent(api, created.json()["id"])
    assert consent["source"] == "https://x.es/f"
    assert datetime.fromisoformat(consent["given_at"]) == datetime(2026, 3, 1, 9, tzinfo=UTC)


async def test_batch_items_get_their_own_source(api: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    items = [
        _lead("uno@bodegas.es", source="api", consent=CONSENT),
        _lead("dos@bodegas.es", source="event", consent={"marketing": False}),
        _lead("tres@bodegas.es"),
    ]
    response = await api.post("/v1/leads/batch", json={"items": items})
    assert response.status_code == 200, response.text
    ids = [item["id"] for item in response.json()["items"]]
    first, second = await _consent(api, ids[0]), await _consent(api, ids[1])
    assert first["source"] == "api" and _recent(first["given_at"], before)
    assert second["source"] == "event" and second["marketing"] is False
    assert _recent(second["given_at"], before)
    assert (await api.get(f"/v1/leads/{ids[2]}")).json()["consent"] is None


async def test_patch_fills_the_proof_and_a_repeat_changes_nothing(
    api: httpx.AsyncClient,
) -> None:
    created = await api.post("/v1/leads", json=_lead("eva@bodegas.es", source="csv"))
    lead_id = created.json()["id"]
    before = datetime.now(UTC)
    patched = await api.patch(f"/v1/leads/{lead_id}", json={"consent": CONSENT})
    assert patched.status_code == 200, patched.text
    consent = await _consent(api, lead_id)
    assert consent["source"] == "csv" and _recent(consent["given_at"], before)
    # The same consent again: no new time, no new history line.
    history = len((await api.get(f"/v1/leads/{lead_id}")).json()["history"])
    again = await api.patch(f"/v1/leads/{lead_id}", json={"consent": CONSENT})
    assert again.status_code == 200, again.text
    after = await api.get(f"/v1/leads/{lead_id}")
    assert after.json()["consent"] == consent
    assert len(after.json()["history"]) == history
    # A withdrawal is a change, with its own time.
    withdrawn = await api.patch(
        f"/v1/leads/{lead_id}", json={"consent": {"marketing": False}}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    final = await _consent(api, lead_id)
    assert final["marketing"] is False and final["given_at"] >= consent["given_at"]
