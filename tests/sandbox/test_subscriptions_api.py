"""The sandbox's communication preferences v4 batch routes (email subscription statuses)."""

from __future__ import annotations

import httpx

from tests.sandbox.conftest import ManualClock, StartCrm

STATUSES = "/communication-preferences/v4/statuses"
WRITE = f"{STATUSES}/batch/write"
READ = f"{STATUSES}/batch/read"
OPT_OUT_READ = f"{STATUSES}/batch/unsubscribe-all/read"
MARKETING = 7_345_001


def status_input(email: str, state: str = "SUBSCRIBED", **extra: object) -> dict[str, object]:
    """One input of a batch write."""
    item: dict[str, object] = {
        "subscriberIdString": email,
        "channel": "EMAIL",
        "statusState": state,
        "subscriptionId": MARKETING,
        "legalBasis": "CONSENT_WITH_NOTICE",
        "legalBasisExplanation": "form v3",
    }
    item.update(extra)
    return item


async def test_a_write_answers_each_status_with_its_reason(crm_client: httpx.AsyncClient) -> None:
    """A write returns HubSpot's batch answer; a repeat is NO_STATUS_CHANGE, an opt-in
    after an opt-out RESUBSCRIBE_OCCURRED."""
    first = await crm_client.post(WRITE, json={"inputs": [status_input("Ana@Empresa.es")]})
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "COMPLETE"
    [result] = body["results"]
    assert result["status"] == "SUBSCRIBED"
    assert result["subscriptionId"] == MARKETING
    assert result["legalBasis"] == "CONSENT_WITH_NOTICE"
    assert result["setStatusSuccessReason"] == "REQUESTED_CHANGE_OCCURRED"
    assert result["subscriptionName"] == "Marketing Information"
    again = await crm_client.post(WRITE, json={"inputs": [status_input("ana@empresa.es")]})
    assert again.json()["results"][0]["setStatusSuccessReason"] == "NO_STATUS_CHANGE"
    out = await crm_client.post(
        WRITE, json={"inputs": [status_input("ana@empresa.es", "UNSUBSCRIBED")]}
    )
    assert out.json()["results"][0]["status"] == "UNSUBSCRIBED"
    back = await crm_client.post(WRITE, json={"inputs": [status_input("ana@empresa.es")]})
    assert back.json()["results"][0]["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED"


async def test_bad_inputs_are_per_input_errors(crm_client: httpx.AsyncClient) -> None:
    """An unknown subscription id, a bad address or a yes without a legal basis fail
    alone (207, each error naming its address); the good input is applied."""
    inputs = [
        status_input("ana@empresa.es"),
        status_input("eva@empresa.es", subscriptionId=999),
        status_input("not-an-email"),
        status_input("leo@empresa.es", legalBasis=None),
        status_input("sol@empresa.es", statusState="MAYBE"),
    ]
    inputs[3].pop("legalBasis")
    answer = await crm_client.post(WRITE, json={"inputs": inputs})
    assert answer.status_code == 207
    body = answer.json()
    assert [r["subscriberIdString"] for r in body["results"]] == ["ana@empresa.es"]
    assert body["numErrors"] == 4
    named = [e["context"]["subscriberIdString"] for e in body["errors"]]
    assert named == [["eva@empresa.es"], ["not-an-email"], ["leo@empresa.es"], ["sol@empresa.es"]]
    assert "999" in body["errors"][0]["message"]


async def test_malformed_or_oversized_requests_are_400(start_crm: StartCrm) -> None:
    """No inputs list, too many inputs, or a read without ?channel=EMAIL: 400."""
    _, client = await start_crm(max_batch_inputs=2)
    assert (await client.post(WRITE, json={"inputs": "x"})).status_code == 400
    many = [status_input(f"p{i}@e.es") for i in range(3)]
    assert (await client.post(WRITE, json={"inputs": many})).status_code == 400
    assert (await client.post(READ, json={"inputs": ["a@e.es"]})).status_code == 400
    answer = await client.post(READ, params={"channel": "EMAIL"}, json={"inputs": ["a@e.es"]})
    assert answer.status_code == 200


async def test_reads_show_statuses_and_opt_outs_of_all(start_crm: StartCrm) -> None:
    """The batch reads give each address's statuses and its opt-out of all email, which
    the inspection route sets as the person would and lists."""
    crm, client = await start_crm()
    await client.post(WRITE, json={"inputs": [status_input("ana@empresa.es")]})
    person = await client.post(
        "/_sandbox/subscriptions", json={"email": "eva@empresa.es", "status": "UNSUBSCRIBED"}
    )
    assert person.status_code == 200
    params = {"channel": "EMAIL"}
    emails = {"inputs": ["ana@empresa.es", "eva@empresa.es"]}
    read = (await client.post(READ, params=params, json=emails)).json()["results"]
    assert [s["status"] for s in read[0]["statuses"]] == ["SUBSCRIBED"]
    assert read[1]["statuses"] == []
    wide = (await client.post(OPT_OUT_READ, params=params, json=emails)).json()["results"]
    assert wide[0]["wideStatuses"] == []
    assert wide[1]["wideStatuses"][0]["status"] == "UNSUBSCRIBED"
    dump = (await client.get("/_sandbox/subscriptions")).json()
    assert [s["subscriberIdString"] for s in dump["statuses"]] == ["ana@empresa.es"]
    assert [s["subscriberIdString"] for s in dump["optedOutOfAll"]] == ["eva@empresa.es"]
    assert crm.state.snapshot()["subscription_statuses"] == 1
    await client.post("/_sandbox/reset")
    assert (await client.get("/_sandbox/subscriptions")).json()["statuses"] == []


async def test_status_requests_need_the_token_and_use_the_rate_limit(
    start_crm: StartCrm, clock: ManualClock
) -> None:
    """Without the token 401; each status request takes a slot like a contacts request."""
    crm, client = await start_crm(rate_limit=2, clock=clock.now)
    async with httpx.AsyncClient(base_url=crm.url) as anonymous:
        assert (await anonymous.post(WRITE, json={"inputs": []})).status_code == 401
    assert (await client.post(WRITE, json={"inputs": []})).status_code == 200
    assert (
        await client.post("/crm/v3/objects/contacts/batch/read", json={"inputs": []})
    ).is_success
    limited = await client.post(WRITE, json={"inputs": [status_input("ana@empresa.es")]})
    assert limited.status_code == 429
    assert limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    clock.advance(11)
    assert (await client.post(WRITE, json={"inputs": []})).status_code == 200
