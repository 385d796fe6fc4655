"""A PATCH takes a lead's other contacts away (`other_emails`, `other_phones`): what it
leaves out is forgotten by the lead, its arrivals, its match keys and search, so one
person's address that a merge put on another's lead can be erased alone (GDPR) without
erasing the whole lead. Nothing can be added this way. Both databases."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from cauce.core.db import unit_of_work
from cauce.core.web.idempotency import IdempotencyStore
from tests.leads.api_client import post_lead
from tests.leads.test_other_contacts import JOSE, PEPE


async def _merged(api: httpx.AsyncClient) -> str:
    """José's lead with Pepe's personal email and mobile as other contacts."""
    first = await post_lead(api, JOSE)
    second = await post_lead(api, PEPE)
    assert second["id"] == first["id"]
    lead = (await api.get(f"/v1/leads/{first['id']}")).json()
    assert (lead["other_emails"], lead["other_phones"]) == (["jfr2@hotmail.com"], ["+34612345678"])
    return str(first["id"])


Stored = tuple[str | None, str | None, str, list[tuple[str | None, str | None]], set[str]]


async def _stored(leads_app: FastAPI, uid: str) -> Stored:
    factory = leads_app.state.resources.db.sessionmaker
    async with factory() as session:
        lead = (
            await session.execute(
                text(
                    "SELECT id, other_emails, other_phones, search_text FROM leads WHERE uid = :u"
                ),
                {"u": uid},
            )
        ).one()
        sources = (
            await session.execute(
                text("SELECT email, phone FROM lead_sources WHERE lead_id = :i ORDER BY id"),
                {"i": lead[0]},
            )
        ).all()
        keys = (
            await session.execute(
                text("SELECT key FROM lead_match_keys WHERE lead_id = :i"), {"i": lead[0]}
            )
        ).scalars()
        return lead[1], lead[2], lead[3], [(s[0], s[1]) for s in sources], set(keys)


async def test_an_email_left_out_is_forgotten_everywhere(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """`"other_emails": []` forgets Pepe's email: not shown, not in the arrival that sent
    it, not a match key, not found by search; an arrival with it is a new lead. The phone
    stays, and the history says what changed."""
    uid = await _merged(api)
    async with unit_of_work(leads_app.state.resources.db.sessionmaker) as session:
        # An answer stored under an Idempotency-Key that shows the lead (a review's).
        await IdempotencyStore().remember(
            session, "key", "review-1", "f" * 64, 200, {"other_emails": ["jfr2@hotmail.com"]}, uid
        )
    answer = await api.patch(f"/v1/leads/{uid}", json={"other_emails": []})
    assert answer.status_code == 200, answer.text
    lead = (await api.get(f"/v1/leads/{uid}")).json()
    assert (lead["other_emails"], lead["other_phones"]) == ([], ["+34612345678"])
    assert lead["history"][0]["changes"] == {"fields": ["other_emails"]}
    other_emails, other_phones, search, sources, keys = await _stored(leads_app, uid)
    assert other_emails is None
    assert other_phones == "+34612345678"
    assert "jfr2" not in str(search)
    assert all("jfr2" not in str(source) for source in sources)
    assert not any("jfr2" in key for key in keys)
    found = (await api.get("/v1/leads", params={"q": "jfr2@hotmail.com"})).json()
    assert found["items"] == []
    async with leads_app.state.resources.db.sessionmaker() as session:
        answers = await session.scalar(
            text("SELECT count(*) FROM idempotency_keys WHERE subject = :u"), {"u": uid}
        )
    assert answers == 0  # the stored answer showing the lead (below) went with it
    again = await post_lead(api, {"email": "jfr2@hotmail.com", "first_name": "Lucía"})
    assert (again["outcome"], again["duplicate"]) == ("created", None)


async def test_null_forgets_every_phone_and_the_extension_with_it(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """`"other_phones": null` empties the list; the arrivals keep no phone of it."""
    uid = await _merged(api)
    answer = await api.patch(f"/v1/leads/{uid}", json={"other_phones": None})
    assert answer.status_code == 200, answer.text
    assert (await api.get(f"/v1/leads/{uid}")).json()["other_phones"] == []
    _, other_phones, _, sources, keys = await _stored(leads_app, uid)
    assert other_phones is None
    assert ("jfr2@hotmail.com", None) in sources
    assert not any(key == "p:+34612345678" for key in keys)
    # The lead's own phone is not "another" one: it stays.
    lead = (await api.get(f"/v1/leads/{uid}")).json()
    assert lead["phone"] == "+34954123456"


async def test_a_new_email_and_forgetting_the_old_one_in_one_change(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The person changed address and wants the old one forgotten: a new `email` with
    `"other_emails": []` leaves no trace of the old (which a change of email alone keeps
    among the other contacts)."""
    uid = await _merged(api)
    answer = await api.patch(
        f"/v1/leads/{uid}", json={"email": "jose.fr@aceitunasdelsur.es", "other_emails": []}
    )
    assert answer.status_code == 200, answer.text
    lead = (await api.get(f"/v1/leads/{uid}")).json()
    assert (lead["email"], lead["other_emails"]) == ("jose.fr@aceitunasdelsur.es", [])
    other_emails, _, search, sources, _ = await _stored(leads_app, uid)
    assert other_emails is None
    assert "jose@aceitunasdelsur.es" not in str(search)
    assert all(source[0] in (None, "jose.fr@aceitunasdelsur.es") for source in sources)


async def test_a_contact_the_lead_does_not_show_is_refused_and_nothing_changes(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Only taking away: an email the lead does not have, or its own, is a 422 pointing at
    the entry, and the lead is left as it was."""
    uid = await _merged(api)
    before = await _stored(leads_app, uid)
    for body, pointer in (
        ({"other_emails": ["jfr2@hotmail.com", "nuevo@otra.es"]}, "/other_emails/1"),
        ({"other_emails": ["jose@aceitunasdelsur.es"]}, "/other_emails/0"),
        ({"other_phones": ["+34 699 000 111"]}, "/other_phones/0"),
    ):
        answer = await api.patch(f"/v1/leads/{uid}", json=body)
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert [e["pointer"] for e in problem["errors"]] == [pointer]
        assert problem["errors"][0]["type"] == "not_an_other_contact"
    assert await _stored(leads_app, uid) == before
    # Kept as they are (written another way: Gmail dots, spaces in a phone): no change.
    same = await api.patch(
        f"/v1/leads/{uid}",
        json={"other_emails": ["JFR2@hotmail.com"], "other_phones": ["+34 612 34 56 78"]},
    )
    assert same.status_code == 200, same.text
    assert await _stored(leads_app, uid) == before


async def test_the_lists_are_bounded_and_typed(api: httpx.AsyncClient) -> None:
    """A list that is not one of strings, or too long, is refused by the schema."""
    uid = await _merged(api)
    for body in ({"other_emails": "jfr2@hotmail.com"}, {"other_phones": [612345678]}):
        answer = await api.patch(f"/v1/leads/{uid}", json=body)
        assert answer.status_code == 422, answer.text
    too_many = {"other_emails": [f"a{i}@b.es" for i in range(101)]}
    answer = await api.patch(f"/v1/leads/{uid}", json=too_many)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/other_emails"
