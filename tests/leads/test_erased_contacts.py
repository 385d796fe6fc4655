"""A person erased at their request is not brought back by an imported file, on both
databases (found by a data protection officer's audit, helper-113: the next import of an
old list re-created the erased person, marketing consent and all). The erasure keeps
keyed hashes of their email, other emails and phone, never the values; an import's rows
carrying one are refused with the reason; a person who comes back by themselves (a form,
the API) is a new lead, whom a file may then update. A team's mailbox and a landline are
no one person's, and are not kept."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from cauce.app import Resources
from cauce.core.jobs.factory import JobWorker
from cauce.leads.models import ErasedContact
from tests.leads.api_client import post_lead
from tests.leads.import_client import error_report, import_csv

YES = {"marketing": True, "wording_version": "rgpd-2024-03"}


async def test_an_old_list_does_not_bring_an_erased_person_back(
    leads_app: FastAPI, api: httpx.AsyncClient, worker: JobWorker
) -> None:
    bea = await post_lead(
        api, {"email": "Bea.Ruiz@bodegas.es", "phone": "+34 612 345 678", "consent": YES}
    )
    # An arrival with another email leaves it among her other emails: hers too.
    other = await post_lead(api, {"email": "bea.ruiz@gmail.com", "phone": "+34 612 345 678"})
    assert (other["outcome"], other["id"]) == ("merged", bea["id"])
    assert (await api.delete(f"/v1/leads/{bea['id']}")).status_code == 204

    resources: Resources = leads_app.state.resources
    async with resources.db.sessionmaker() as session:
        digests = (await session.scalars(select(ErasedContact.digest))).all()
    assert len(digests) == 3  # her email, her other email, her phone: hashes only
    assert all(len(d) == 64 and "bodegas" not in d for d in digests)

    data = (
        "Email;Teléfono;Nombre;Consentimiento\n"
        "bea.ruiz@bodegas.es;;Beatriz;Sí\n"  # her email, in another case
        "beato@bodegas.es;;Beato;Sí\n"
        ";612 345 678;Beatriz;\n"  # her phone, no email
        "b.e.a.ruiz@gmail.com;;Bea;\n"  # her other email as Gmail reads it
        "jorge@bodegas.es;612 345 678;Jorge;\n"  # a colleague on her line: his own email
    )
    status = await import_csv(api, worker, data.encode(), {"consent_wording_version": "v1"})
    assert (status["rows_created"], status["rows_merged"], status["rows_rejected"]) == (2, 0, 3)
    report = await error_report(api, status)
    reasons = {(row[0], row[-1]) for row in report[1:]}
    assert {number for number, _ in reasons} == {"2", "4", "5"}
    assert all("erased on" in reason and "at their request" in reason for _, reason in reasons)
    found = (await api.get("/v1/leads", params={"q": "bea.ruiz"})).json()["items"]
    assert found == []

    # She comes back by herself, through a form: a new lead, and a file may update her.
    back = await post_lead(api, {"email": "bea.ruiz@bodegas.es", "source": "web_form"})
    assert back["outcome"] == "created"
    again = await import_csv(api, worker, b"Email;Estado del lead\nbea.ruiz@bodegas.es;Ganado\n")
    assert (again["rows_merged"], again["rows_rejected"]) == (1, 0)
    assert (await api.get(f"/v1/leads/{back['id']}")).json()["status"] == "won"


async def test_a_team_mailbox_or_a_landline_is_no_one_persons(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """Erasing a lead on `ventas@` and the office's landline does not refuse colleagues
    on them: only a person's own mailbox and mobile are kept."""
    lead = await post_lead(
        api, {"email": "ventas@acme.es", "phone": "+34 915 123 456", "first_name": "Luis"}
    )
    assert (await api.delete(f"/v1/leads/{lead['id']}")).status_code == 204
    data = "Email;Teléfono;Nombre\nventas@acme.es;;Juan\n;915 123 456;Pedro\n"
    status = await import_csv(api, worker, data.encode())
    assert (status["rows_created"], status["rows_rejected"]) == (2, 0)
