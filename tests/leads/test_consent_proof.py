"""Consent is stored as proof (GDPR art. 7): a `given_at` or `source` the client leaves out
is the time Cauce received it and the lead's source, on intake, batch, CSV and PATCH."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cauce.leads.matching.merge import merge

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
    assert first["source"] == "api"
    assert _recent(first["given_at"], before)
    assert second["source"] == "event"
    assert second["marketing"] is False
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
    # Recorded through the API, not where the lead first came from (a back-office key's
    # PATCH said its first source, a web form, had given it: helper-113's audit).
    assert consent["source"] == "api"
    assert _recent(consent["given_at"], before)
    # The same consent again: no new time, no new history line.
    history = len((await api.get(f"/v1/leads/{lead_id}")).json()["history"])
    again = await api.patch(f"/v1/leads/{lead_id}", json={"consent": CONSENT})
    assert again.status_code == 200, again.text
    after = await api.get(f"/v1/leads/{lead_id}")
    assert after.json()["consent"] == consent
    assert len(after.json()["history"]) == history
    # A withdrawal is a change, with its own time.
    withdrawn = await api.patch(f"/v1/leads/{lead_id}", json={"consent": {"marketing": False}})
    assert withdrawn.status_code == 200, withdrawn.text
    final = await _consent(api, lead_id)
    assert final["marketing"] is False
    assert final["given_at"] >= consent["given_at"]


# --- merges: a consent is kept whole, the later one winning -----------------------------


def test_merge_keeps_the_later_consent_whole() -> None:
    yes = {"marketing": True, "given_at": "2026-01-10T09:00:00Z", "wording_version": "v2",
           "source": "web_form"}  # fmt: skip
    no = {"marketing": False, "given_at": "2026-02-01T09:00:00+00:00", "wording_version": None,
          "source": "event"}  # fmt: skip
    merged, changes = merge({"consent": yes}, {"consent": no})
    assert merged["consent"] == no  # the withdrawal, not a "no" with the "yes" wording
    assert [(c.field, c.action) for c in changes] == [("consent", "overwritten")]
    # An older consent arriving later (an import of old records) does not undo a newer.
    merged, changes = merge({"consent": no}, {"consent": yes})
    assert merged["consent"] == no
    assert [(c.field, c.action) for c in changes] == [("consent", "kept")]
    # The same consent given again keeps its first proof, and is not a change.
    again = {**yes, "given_at": "2026-03-01T09:00:00Z"}
    merged, changes = merge({"consent": yes}, {"consent": again})
    assert merged["consent"] == yes
    assert changes == []
    # A stored consent without a time is the older one.
    merged, _ = merge({"consent": {**yes, "given_at": None}}, {"consent": no})
    assert merged["consent"] == no


async def test_a_later_withdrawal_is_honoured_on_merge(api: httpx.AsyncClient) -> None:
    first = await api.post(
        "/v1/leads", json=_lead("marta@bodegas.es", source="web_form", consent=CONSENT)
    )
    assert first.status_code == 201, first.text
    lead_id = first.json()["id"]
    optout = await api.post(
        "/v1/leads", json=_lead("marta@bodegas.es", source="event", consent={"marketing": False})
    )
    assert optout.status_code == 200, optout.text
    assert optout.json()["id"] == lead_id
    assert "consent" in optout.json()["duplicate"]["merged_fields"]
    consent = await _consent(api, lead_id)
    assert consent["marketing"] is False
    assert consent["source"] == "event"
    assert consent["wording_version"] is None
