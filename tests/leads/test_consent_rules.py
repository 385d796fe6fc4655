"""A person's marketing "no" is not undone by a consent that proves less, on both
databases (found by a data protection officer's audit, helper-113):

1. A row of an imported file whose consent has no time was stamped with the import's
   time, so a year-old list's "yes" was newer than the person's later "no" and opted them
   back in, the record claiming they agreed at import time. It keeps no time now, and a
   consent without one never replaces one with a time.
2. A "yes" sent with another email than the lead's (a lead matched by its phone) became
   the lead's consent, for an address its sender never gave. It stays that arrival's; a
   "no" reaches the lead whatever address it came with.
3. A PATCH could clear a consent (`null`) or put back a "yes" dated before the person's
   "no", and its history line named the field only. Clearing is refused (a withdrawal is
   `marketing: false`), an older consent is refused, and the line gives both consents.
"""

from __future__ import annotations

import httpx

from cauce.core.jobs.factory import JobWorker
from tests.leads.api_client import get_lead, post_lead
from tests.leads.import_client import import_csv

YES = {"marketing": True, "wording_version": "rgpd-2024-03", "source": "form-a"}
NO = {"marketing": False, "source": "unsubscribe-link"}


async def test_an_old_list_without_dates_does_not_undo_a_withdrawal(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    lead = await post_lead(api, {"email": "bea@bodegas.es", "consent": YES})
    withdrawn = await post_lead(api, {"email": "bea@bodegas.es", "consent": NO})
    assert withdrawn["outcome"] == "merged"
    data = "Email;Nombre;Consentimiento\nbea@bodegas.es;Beatriz;X\nnuevo@bodegas.es;Nuevo;Sí\n"
    status = await import_csv(
        api, worker, data.encode(), {"consent_wording_version": "rgpd-2023-01"}
    )
    assert (status["rows_merged"], status["rows_created"]) == (1, 1)
    bea = await get_lead(api, lead["id"])
    assert bea["consent"]["marketing"] is False
    line = bea["history"][0]
    assert line["action"] == "merged"
    assert "consent" in line["changes"]["kept"]
    # A new lead from the file keeps the consent without a time: not the import's.
    found = (await api.get("/v1/leads", params={"q": "nuevo@bodegas.es"})).json()["items"]
    assert [item["consent"] for item in found] == [
        {"marketing": True, "given_at": None, "wording_version": "rgpd-2023-01", "source": "csv"}
    ]


async def test_a_web_forms_yes_after_a_withdrawal_is_a_new_consent(
    api: httpx.AsyncClient,
) -> None:
    """Sent live (a form, the API), a consent without a time was given now: a person who
    opted out may opt in again."""
    lead = await post_lead(api, {"email": "bea@bodegas.es", "consent": NO})
    again = await post_lead(api, {"email": "bea@bodegas.es", "consent": YES})
    assert "consent" in again["duplicate"]["merged_fields"]
    consent = (await get_lead(api, lead["id"]))["consent"]
    assert consent["marketing"] is True
    assert consent["given_at"] is not None


async def test_a_yes_with_another_email_stays_that_arrivals(api: httpx.AsyncClient) -> None:
    phone = "+34 612 345 678"
    ana = await post_lead(
        api, {"email": "ana.gil@bodegas.es", "phone": phone, "consent": {"marketing": False}}
    )
    pedro = await post_lead(api, {"email": "pedro@gmail.com", "phone": phone, "consent": YES})
    assert (pedro["outcome"], pedro["duplicate"]["match"]) == ("merged", "phone")
    assert "consent" not in pedro["duplicate"]["merged_fields"]
    lead = await get_lead(api, ana["id"])
    assert lead["consent"]["marketing"] is False
    assert "pedro@gmail.com" in lead["other_emails"]
    assert "consent" in lead["history"][0]["changes"]["kept"]
    # The same mailbox's yes is the lead's, and a no from any of its addresses too.
    own = await post_lead(api, {"email": "Ana.Gil@bodegas.es", "consent": YES})
    assert "consent" in own["duplicate"]["merged_fields"]
    assert (await get_lead(api, ana["id"]))["consent"]["marketing"] is True
    other_no = await post_lead(api, {"email": "ana@gmail.com", "phone": phone, "consent": NO})
    assert "consent" in other_no["duplicate"]["merged_fields"]
    assert (await get_lead(api, ana["id"]))["consent"]["marketing"] is False


async def test_a_patch_records_consents_and_never_erases_one(api: httpx.AsyncClient) -> None:
    lead = await post_lead(api, {"email": "bea@bodegas.es", "consent": YES})
    uid = lead["id"]
    withdrawn = await api.patch(f"/v1/leads/{uid}", json={"consent": {"marketing": False}})
    assert withdrawn.status_code == 200, withdrawn.text
    stored = (await get_lead(api, uid))["consent"]
    assert (stored["marketing"], stored["source"]) == (False, "api")
    line = (await get_lead(api, uid))["history"][0]
    assert line["changes"]["fields"] == ["consent"]
    moved = line["changes"]["values"]["consent"]
    assert (moved["from"]["marketing"], moved["to"]["marketing"]) == (True, False)
    assert moved["from"]["wording_version"] == "rgpd-2024-03"

    cleared = await api.patch(f"/v1/leads/{uid}", json={"consent": None})
    assert cleared.status_code == 422, cleared.text
    error = cleared.json()["errors"][0]
    assert (error["pointer"], error["type"]) == ("/consent", "consent_not_clearable")

    backdated = {**YES, "given_at": "2019-01-01T00:00:00Z"}
    older = await api.patch(f"/v1/leads/{uid}", json={"consent": backdated})
    assert older.status_code == 422, older.text
    error = older.json()["errors"][0]
    assert (error["pointer"], error["type"]) == ("/consent/given_at", "consent_outdated")
    assert (await get_lead(api, uid))["consent"] == stored


async def test_an_unsubscribe_list_without_dates_withdraws_and_stays(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """An imported "no" without a date counts from its import (a withdrawal is honoured
    from when Cauce learns of it): it overrides the form's "yes" before it, and the old
    list's undated "yes" imported again does not undo it (review, helper-120)."""
    lead = await post_lead(api, {"email": "bea@bodegas.es", "consent": YES})
    options = {"consent_wording_version": "rgpd-2023-01"}
    baja = await import_csv(api, worker, b"Email;Consentimiento\nbea@bodegas.es;Baja\n", options)
    assert baja["rows_merged"] == 1
    consent = (await get_lead(api, lead["id"]))["consent"]
    assert consent["marketing"] is False
    assert consent["given_at"] is not None
    old = await import_csv(
        api, worker, b"Email;Consentimiento\nbea@bodegas.es;S\xc3\xad\n", options
    )
    assert old["rows_merged"] == 1
    assert (await get_lead(api, lead["id"]))["consent"]["marketing"] is False


async def test_a_yes_sent_without_an_email_stays_that_arrivals(api: httpx.AsyncClient) -> None:
    phone = "+34 612 345 679"
    ana = await post_lead(
        api, {"email": "ana.gil@bodegas.es", "phone": phone, "consent": {"marketing": False}}
    )
    by_phone = await post_lead(api, {"phone": phone, "consent": YES})
    assert (by_phone["outcome"], by_phone["id"]) == ("merged", ana["id"])
    assert (await get_lead(api, ana["id"]))["consent"]["marketing"] is False
    # A lead without an email takes a yes sent without one.
    luis = await post_lead(api, {"phone": "+34 699 000 111", "consent": {"marketing": False}})
    again = await post_lead(api, {"phone": "+34 699 000 111", "consent": YES})
    assert "consent" in again["duplicate"]["merged_fields"]
    assert (await get_lead(api, luis["id"]))["consent"]["marketing"] is True


async def test_a_patch_records_a_withdrawal_whatever_its_date(api: httpx.AsyncClient) -> None:
    lead = await post_lead(api, {"email": "bea@bodegas.es", "consent": YES})
    dated = {"marketing": False, "given_at": "2019-01-01T00:00:00Z", "source": "carta"}
    response = await api.patch(f"/v1/leads/{lead['id']}", json={"consent": dated})
    assert response.status_code == 200, response.text
    assert (await get_lead(api, lead["id"]))["consent"]["marketing"] is False
