"""Outgoing webhooks: HubSpot's v3 signature, batched events, retries, repeats; inspection."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time

import httpx
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from cauce.sandbox import SandboxCrmConfig, sign_v3, start_sandbox_crm_in_thread, verify_v3
from cauce.sandbox.cli import sandbox_app

from .conftest import CONTACTS, UPSERT, Receiver, StartCrm, by_email

SECRET = "app-secret-for-tests"


async def wait_for(receiver: Receiver, count: int) -> None:
    """Wait (up to 5 s) until the receiver has accepted `count` events."""
    async with asyncio.timeout(5):
        while len(receiver.events()) < count:
            receiver.arrived.clear()
            await receiver.arrived.wait()


async def test_changes_arrive_signed_and_batched(start_crm: StartCrm, receiver: Receiver) -> None:
    """Creations, a lifecycle change and a deletion reach the receiver with a valid v3 signature."""
    _, client = await start_crm(webhook_url=receiver.url, webhook_secret=SECRET)
    created = await client.post(UPSERT, json=by_email("a@x.es", "b@x.es"))
    await wait_for(receiver, 2)
    first_id = created.json()["results"][0]["id"]
    await client.patch(
        f"{CONTACTS}/{first_id}", json={"properties": {"lifecyclestage": "customer"}}
    )
    await client.patch(f"{CONTACTS}/{first_id}", json={"properties": {"firstname": "Ana"}})
    await client.delete(f"{CONTACTS}/{first_id}")
    await wait_for(receiver, 4)

    first = receiver.requests[0]
    assert first.body.startswith(b"[{")
    assert len([e for e in receiver.events() if e["subscriptionType"] == "contact.creation"]) == 2
    for request in receiver.requests:
        assert verify_v3(
            SECRET,
            method=request.method,
            uri=request.url,
            body=request.body,
            timestamp_ms=request.headers["X-HubSpot-Request-Timestamp"],
            signature=request.headers["X-HubSpot-Signature-v3"],
            now_ms=int(time.time() * 1000),
        )
    events = receiver.events()
    kinds = [e["subscriptionType"] for e in events]
    assert kinds == [
        "contact.creation",
        "contact.creation",
        "contact.propertyChange",
        "contact.deletion",
    ]
    change = events[2]
    assert change["propertyName"] == "lifecyclestage"
    assert change["propertyValue"] == "customer"
    assert change["objectId"] == int(first_id)
    assert change["changeSource"] == "API"
    assert len({e["eventId"] for e in events}) == 4
    assert all(e["attemptNumber"] == 0 and e["portalId"] and e["occurredAt"] for e in events)


async def test_ui_changes_fire_property_change_events(
    start_crm: StartCrm, receiver: Receiver
) -> None:
    """A salesperson's edit through /_sandbox/contacts is reported with changeSource CRM_UI.

    This sandbox sends through its own ``cauce.core.http`` transport.
    """
    _, client = await start_crm(webhook_url=receiver.url, webhook_transport=None)
    await client.post(UPSERT, json=by_email("ui@x.es"))
    await client.patch(
        "/_sandbox/contacts/ui@x.es",
        params={"idProperty": "email"},
        json={"properties": {"lifecyclestage": "other"}},
    )
    await wait_for(receiver, 2)
    change = receiver.events()[-1]
    assert change["subscriptionType"] == "contact.propertyChange"
    assert change["propertyValue"] == "other"
    assert change["changeSource"] == "CRM_UI"


async def test_failed_deliveries_are_retried_with_attempt_numbers(
    start_crm: StartCrm, receiver: Receiver
) -> None:
    """Answers 500 then 503 are retried; the delivery that lands carries attemptNumber 2."""
    receiver.statuses = [500, 503]
    _, client = await start_crm(webhook_url=receiver.url, webhook_retry_base_seconds=0.01)
    await client.post(UPSERT, json=by_email("retry@x.es"))
    await wait_for(receiver, 1)
    report = (await client.get("/_sandbox/stats")).json()["webhooks"]
    assert receiver.events()[0]["attemptNumber"] == 2
    assert report["requests_failed"] == 2
    assert report["events_delivered"] == 1


async def test_events_can_be_repeated_like_hubspot_does(
    start_crm: StartCrm, receiver: Receiver
) -> None:
    """webhook_duplicate_rate=1 sends every event twice with the same eventId."""
    _, client = await start_crm(webhook_url=receiver.url, webhook_duplicate_rate=1.0)
    await client.post(UPSERT, json=by_email("twice@x.es"))
    await wait_for(receiver, 2)
    await asyncio.sleep(0.1)
    ids = [e["eventId"] for e in receiver.events()]
    assert len(ids) == 2
    assert ids[0] == ids[1]


@given(body=st.binary(max_size=200), flip=st.integers(min_value=0, max_value=199))
def test_any_change_to_a_signed_body_fails_verification(body: bytes, flip: int) -> None:
    """A signature verifies for its own body only."""
    stamp = "1700000000000"
    uri = "https://cauce.example/v1/webhooks/hubspot"
    signature = sign_v3(SECRET, "POST", uri, body, stamp)

    def verify(candidate: bytes) -> bool:
        return verify_v3(
            SECRET, method="POST", uri=uri, body=candidate, timestamp_ms=stamp,
            signature=signature, now_ms=1700000000500,
        )  # fmt: skip

    assert verify(body)
    if body:
        tampered = bytearray(body)
        tampered[flip % len(body)] ^= 1
        assert not verify(bytes(tampered))


def test_stale_timestamps_are_refused() -> None:
    """A signature older than five minutes does not verify, even if it is correct."""
    stamp = "1700000000000"
    signature = sign_v3(SECRET, "POST", "http://h/x", b"[]", stamp)

    def verify(now_ms: int) -> bool:
        return verify_v3(
            SECRET, method="POST", uri="http://h/x", body=b"[]", timestamp_ms=stamp,
            signature=signature, now_ms=now_ms,
        )  # fmt: skip

    assert verify(1700000000000 + 299_000)
    assert not verify(1700000000000 + 301_000)


async def test_inspection_reports_no_duplicates_after_repeated_upserts(
    crm_client: httpx.AsyncClient,
) -> None:
    """Upserting the same keys many times leaves one contact per key and an empty duplicates map."""
    for _ in range(5):
        await crm_client.post(UPSERT, json=by_email("a@x.es", "b@x.es"))
        body = {"inputs": [{"idProperty": "cauce_id", "id": "L-1", "properties": {}}]}
        await crm_client.post(UPSERT, json=body)
    report = (await crm_client.get("/_sandbox/stats")).json()
    assert report["contacts"] == 3
    assert report["duplicates"] == {}
    assert report["created_total"] == 3
    assert report["requests"]["records_written"] == 15


async def test_inspection_reports_a_key_stored_twice(start_crm: StartCrm) -> None:
    """If cauce_id is not unique in the portal, plain creates can duplicate it, and stats say so."""
    _, client = await start_crm(unique_properties=(), extra_properties=("cauce_id",))
    for _ in range(2):
        await client.post(CONTACTS, json={"properties": {"cauce_id": "L-7"}})
    report = (await client.get("/_sandbox/stats")).json()
    assert report["duplicate_count"] == 1
    assert len(report["duplicates"]["cauce_id"]["L-7"]) == 2
    cleared = (await client.post("/_sandbox/reset")).json()
    assert cleared["contacts"] == 0
    assert cleared["requests"]["total"] == 0


def test_threaded_sandbox_serves_sync_callers() -> None:
    """start_sandbox_crm_in_thread serves from its own loop and stops cleanly."""
    with start_sandbox_crm_in_thread(SandboxCrmConfig(token="t")) as crm:
        response = httpx.post(
            crm.url + UPSERT, json=by_email("th@x.es"), headers={"Authorization": "Bearer t"}
        )
        assert response.status_code == 200
        assert crm.stats()["contacts"] == 1


def test_cli_refuses_bad_flags() -> None:
    """An out-of-range fault rate is a usage error (exit 2) naming the setting."""
    result = CliRunner().invoke(sandbox_app, ["crm", "--error-rate", "2"])
    assert result.exit_code == 2
    assert "error_rate" in result.output


async def test_cli_serves_and_signs_webhooks_until_sigterm(receiver: Receiver) -> None:
    """`sandbox crm --port 0` prints its URL, serves, sends signed webhooks, exits on SIGTERM."""
    code = "from cauce.sandbox.cli import sandbox_app; sandbox_app()"
    args = ["crm", "--port", "0", "--token", "tok", "--rate-limit", "5"]
    args += ["--webhook-url", receiver.url, "--webhook-secret", SECRET]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.search(r"url=(\S+) token=tok", line)
        assert match, line
        async with httpx.AsyncClient(headers={"Authorization": "Bearer tok"}) as client:
            response = await client.post(match.group(1) + UPSERT, json=by_email("cli@x.es"))
        assert response.status_code == 200
        assert response.headers["X-HubSpot-RateLimit-Max"] == "5"
        await wait_for(receiver, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    request = receiver.requests[0]
    assert verify_v3(
        SECRET,
        method="POST",
        uri=request.url,
        body=request.body,
        timestamp_ms=request.headers["X-HubSpot-Request-Timestamp"],
        signature=request.headers["X-HubSpot-Signature-v3"],
        now_ms=int(time.time() * 1000),
    )
