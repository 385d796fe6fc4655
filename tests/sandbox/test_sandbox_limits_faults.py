"""The sandbox's rate limits (rolling window, daily cap) and injected faults, on fixed seeds."""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.sandbox.limits import RequestLimiter

from .conftest import UPSERT, ManualClock, StartCrm, by_email

RATE_BODY_KEYS = {"status", "message", "errorType", "correlationId", "policyName"}


async def contacts(client: httpx.AsyncClient) -> int:
    """How many live contacts the sandbox holds."""
    count: int = (await client.get("/_sandbox/stats")).json()["contacts"]
    return count


async def test_rolling_window_answers_429_then_recovers(
    start_crm: StartCrm, clock: ManualClock
) -> None:
    """Past N requests in the window: HubSpot's 429 body and headers; slots free as time rolls."""
    _, client = await start_crm(rate_limit=3, clock=clock.now)
    remaining = []
    for i in range(3):
        response = await client.post(UPSERT, json=by_email(f"r{i}@x.es"))
        assert response.status_code == 200
        remaining.append(response.headers["X-HubSpot-RateLimit-Remaining"])
        clock.advance(4)  # requests at t=0, 4, 8
    assert remaining == ["2", "1", "0"]
    limited = await client.post(UPSERT, json=by_email("late@x.es"))  # t=12: t=0 has rolled off
    assert limited.status_code == 200
    refused = await client.post(UPSERT, json=by_email("late2@x.es"))
    assert refused.status_code == 429
    body = refused.json()
    assert set(body) == RATE_BODY_KEYS
    assert body["status"] == "error"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert refused.headers["X-HubSpot-RateLimit-Max"] == "3"
    assert refused.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert refused.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert "X-HubSpot-RateLimit-Daily-Remaining" in refused.headers
    assert "Retry-After" not in refused.headers
    clock.advance(10)
    assert (await client.post(UPSERT, json=by_email("late2@x.es"))).status_code == 200
    report = (await client.get("/_sandbox/stats")).json()
    assert report["requests"]["rate_limited"] == {"TEN_SECONDLY_ROLLING": 1}


async def test_retry_after_is_sent_only_when_asked(start_crm: StartCrm, clock: ManualClock) -> None:
    """With send_retry_after the 429 says how long until a slot frees, in whole seconds."""
    _, client = await start_crm(rate_limit=1, clock=clock.now, send_retry_after=True)
    await client.post(UPSERT, json=by_email("a@x.es"))
    clock.advance(3)
    refused = await client.post(UPSERT, json=by_email("b@x.es"))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"


async def test_injected_5xx_use_a_slot_in_the_window(
    start_crm: StartCrm, clock: ManualClock
) -> None:
    """Failed requests count against the limit, as on the real service."""
    _, client = await start_crm(rate_limit=2, clock=clock.now, faults_error_rate=1.0)
    statuses = [(await client.post(UPSERT, json=by_email("a@x.es"))).status_code for _ in range(3)]
    assert statuses[0] >= 500
    assert statuses[1] >= 500
    assert statuses[2] == 429


async def test_daily_cap_holds_until_the_day_resets(
    start_crm: StartCrm, clock: ManualClock
) -> None:
    """After the daily cap, the DAILY 429 persists across windows and lifts at the day's end."""
    _, client = await start_crm(daily_limit=2, day_seconds=60, clock=clock.now)
    for i in range(2):
        assert (await client.post(UPSERT, json=by_email(f"d{i}@x.es"))).status_code == 200
    refused = await client.post(UPSERT, json=by_email("d3@x.es"))
    assert refused.status_code == 429
    assert refused.json()["policyName"] == "DAILY"
    assert refused.json()["message"] == "You have reached your daily limit."
    assert refused.headers["X-HubSpot-RateLimit-Daily"] == "2"
    assert refused.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    clock.advance(30)
    assert (await client.post(UPSERT, json=by_email("d3@x.es"))).status_code == 429
    clock.advance(30)
    reset = await client.post(UPSERT, json=by_email("d3@x.es"))
    assert reset.status_code == 200
    assert reset.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"


@given(st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), max_size=80))
def test_no_window_ever_admits_more_than_the_limit(gaps: list[float]) -> None:
    """Whatever the arrival times, any 10 s span holds at most `limit` admitted requests."""
    clock = ManualClock()
    limiter = RequestLimiter(
        limit=5, window_seconds=10, daily_limit=0, day_seconds=86_400, clock=clock.now
    )
    admitted: list[float] = []
    for gap in gaps:
        clock.advance(gap / 10)
        if limiter.acquire().policy is None:
            admitted.append(clock.now())
    for i, start in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t < start + 10) <= 5


async def test_error_rate_fails_before_writing(start_crm: StartCrm) -> None:
    """error_rate=1: every API request is a 5xx (HTML from the gateways) and nothing is stored."""
    _, client = await start_crm(faults_error_rate=1.0)
    statuses = set()
    for i in range(20):
        response = await client.post(UPSERT, json=by_email(f"e{i}@x.es"))
        statuses.add(response.status_code)
        if response.status_code in (502, 504):
            assert response.headers["Content-Type"].startswith("text/html")
        else:
            assert response.json()["status"] == "error"
    assert statuses <= {500, 502, 503, 504}
    assert len(statuses) > 1
    assert await contacts(client) == 0


async def test_error_after_write_applies_then_fails(start_crm: StartCrm) -> None:
    """error_after_write_rate=1: the write lands although the answer is a 5xx; a replay updates."""
    _, client = await start_crm(faults_error_after_write_rate=1.0)
    response = await client.post(UPSERT, json=by_email("w@x.es"))
    assert response.status_code in (500, 504)
    assert await contacts(client) == 1
    await client.post("/_sandbox/faults", json={"error_after_write_rate": 0})
    replay = await client.post(UPSERT, json=by_email("w@x.es"))
    assert replay.json()["results"][0]["new"] is False
    assert (await client.get("/_sandbox/stats")).json()["duplicate_count"] == 0


async def test_reset_rate_closes_the_connection(start_crm: StartCrm) -> None:
    """reset_rate=1: the client sees the connection drop and nothing is written."""
    _, client = await start_crm(faults_reset_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(UPSERT, json=by_email("r@x.es"))
    assert await contacts(client) == 0


async def test_latency_delays_answers(start_crm: StartCrm) -> None:
    """latency_ms=200 delays each answer by at least half the mean."""
    _, client = await start_crm(faults_latency_ms=200)
    started = time.perf_counter()
    await client.post(UPSERT, json=by_email("slow@x.es"))
    assert time.perf_counter() - started >= 0.1


async def test_configured_outage_answers_503_for_its_length(
    start_crm: StartCrm, clock: ManualClock
) -> None:
    """--outage-after 5 --outage-for 10: 200 before, 503 during (no slot used), 200 after."""
    _, client = await start_crm(
        clock=clock.now, rate_limit=2, faults_outage_after=5, faults_outage_for=10
    )
    assert (await client.post(UPSERT, json=by_email("o@x.es"))).status_code == 200
    clock.advance(5)
    for _ in range(3):
        assert (await client.post(UPSERT, json=by_email("o@x.es"))).status_code == 503
    clock.advance(10)
    assert (await client.post(UPSERT, json=by_email("o@x.es"))).status_code == 200


async def test_outage_can_be_started_and_stopped_at_runtime(crm_client: httpx.AsyncClient) -> None:
    """POST /_sandbox/faults {"outage": S} starts an outage now; {"outage": 0} ends it."""
    started = await crm_client.post("/_sandbox/faults", json={"outage": 30})
    assert started.json()["outage_for"] == 30
    assert (await crm_client.post(UPSERT, json=by_email("o@x.es"))).status_code == 503
    assert (await crm_client.get("/_sandbox/stats")).json()["faults"]["in_outage"] is True
    await crm_client.post("/_sandbox/faults", json={"outage": 0})
    assert (await crm_client.post(UPSERT, json=by_email("o@x.es"))).status_code == 200
    bad = await crm_client.post("/_sandbox/faults", json={"error_rate": 2})
    assert bad.status_code == 400


async def test_a_fixed_seed_fails_the_same_requests(start_crm: StartCrm) -> None:
    """Two sandboxes with one seed answer the same request sequence with the same statuses."""
    runs = []
    for _ in range(2):
        _, client = await start_crm(
            seed=42, faults_error_rate=0.3, faults_error_after_write_rate=0.2
        )
        runs.append(
            [
                (await client.post(UPSERT, json=by_email(f"s{i}@x.es"))).status_code
                for i in range(30)
            ]
        )
    assert runs[0] == runs[1]
    assert {200} < set(runs[0])
