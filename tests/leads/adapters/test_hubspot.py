"""The HubSpot adapter against the sandbox CRM, through the real guarded HTTP client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cauce.core.http import Transport
from cauce.core.resilience import BreakerPolicy, FakeClock, RateLimitedError, RateLimitPolicy
from cauce.leads.adapters import next_midnight
from cauce.leads.ports import CrmContact, CrmKey, CrmRejected, CrmThrottled, CrmUnavailable
from cauce.sandbox import SandboxCrm
from tests.leads.adapters.conftest import (
    FlakyTransport,
    MakeClients,
    MakeHubSpot,
    ManualClock,
    WallClock,
    contact,
    fast_policy,
)

UPSERT = "batch/upsert"


def upserts(crm: SandboxCrm) -> int:
    """Batch upsert requests the sandbox has seen."""
    return crm.state.stats.by_endpoint[UPSERT]


def contact_id(crm: SandboxCrm, prop: str, value: str) -> str | None:
    """The sandbox's record id for a key, if any."""
    found = crm.state.store.find(prop, value)
    return found.id if found is not None else None


async def test_create_then_update_keeps_one_contact_per_lead(make_hubspot: MakeHubSpot) -> None:
    """Upserting the same leads twice updates the contacts the first call created."""
    hubspot, crm = await make_hubspot()
    first = await hubspot.upsert(
        [contact(i, f"lead{i}@empresa.es", firstname="Ana") for i in range(3)]
    )
    assert all(o.ok for o in first)
    second = await hubspot.upsert(
        [contact(i, f"lead{i}@empresa.es", firstname="Eva") for i in range(3)]
    )
    assert [o.crm_id for o in second] == [o.crm_id for o in first]
    stats = crm.state.snapshot()
    assert (stats["contacts"], stats["created_total"], stats["duplicate_count"]) == (3, 3, 0)
    assert {c.properties["firstname"] for c in crm.state.store.live.values()} == {"Eva"}


async def test_a_mixed_batch_goes_in_one_request_per_key_property(
    make_hubspot: MakeHubSpot,
) -> None:
    """Email-keyed and Cauce-id-keyed contacts are sent apart and answered in input order."""
    hubspot, crm = await make_hubspot()
    batch = [contact(1, "uno@empresa.es"), contact(2), contact(3, "tres@empresa.es"), contact(4)]
    outcomes = await hubspot.upsert(batch)
    assert upserts(crm) == 2
    assert [o.lead_id for o in outcomes] == [1, 2, 3, 4]
    for sent, outcome in zip(batch, outcomes, strict=True):
        assert outcome.crm_id == contact_id(crm, sent.key.property, sent.key.value)


async def test_shuffled_results_are_matched_by_key(make_hubspot: MakeHubSpot) -> None:
    """Results in any order, and emails lower-cased by HubSpot, still map to the right lead."""
    hubspot, crm = await make_hubspot(shuffle_results=True)
    batch = [contact(i, f"Persona.{i}@Empresa.ES") for i in range(60)]
    outcomes = await hubspot.upsert(batch)
    for sent, outcome in zip(batch, outcomes, strict=True):
        assert outcome.crm_id == contact_id(crm, "email", sent.key.value.lower())
    assert len({o.crm_id for o in outcomes}) == 60


async def test_more_than_100_contacts_go_in_several_requests(make_hubspot: MakeHubSpot) -> None:
    """A batch is cut into requests of at most 100 inputs."""
    hubspot, crm = await make_hubspot()
    outcomes = await hubspot.upsert([contact(i, f"p{i}@empresa.es") for i in range(150)])
    assert all(o.ok for o in outcomes)
    assert upserts(crm) == 2


async def test_partial_answers_become_per_record_outcomes(make_hubspot: MakeHubSpot) -> None:
    """A 207 marks each refused record (permanent by category), the rest are synced."""
    hubspot, crm = await make_hubspot()
    await hubspot.upsert([contact(9, "ocupado@empresa.es")])
    # A Cauce-id-keyed contact carrying an email another contact owns: HubSpot's 409.
    keyed = contact(3)
    conflicting = CrmContact(3, 1, keyed.key, {**keyed.properties, "email": "ocupado@empresa.es"})
    batch = [contact(1), contact(2, lifecyclestage="not-a-stage"), conflicting]
    outcomes = await hubspot.upsert(batch)
    assert outcomes[0].ok
    assert not outcomes[1].ok
    assert not outcomes[1].retryable
    assert outcomes[1].error is not None
    assert outcomes[1].error.startswith("VALIDATION_ERROR")
    assert outcomes[2].error is not None
    assert outcomes[2].error.startswith("CONFLICT")
    assert not outcomes[2].retryable
    assert crm.state.stats.by_status[207] == 1


async def test_an_invalid_email_is_isolated_from_its_batch(make_hubspot: MakeHubSpot) -> None:
    """An email-keyed batch refused whole for one bad email syncs the others."""
    hubspot, crm = await make_hubspot()
    batch = [contact(i, f"p{i}@empresa.es") for i in range(5)]
    batch[3] = contact(3, "no-es-un-email")
    outcomes = await hubspot.upsert(batch)
    assert [o.ok for o in outcomes] == [True, True, True, False, True]
    assert outcomes[3].error is not None
    assert "INVALID_EMAIL" in outcomes[3].error
    assert upserts(crm) == 2  # named from the message: no bisection
    assert crm.state.snapshot()["contacts"] == 4


async def test_an_unattributable_refusal_is_bisected(make_hubspot: MakeHubSpot) -> None:
    """A record the message does not name is found by halving the batch."""
    hubspot, crm = await make_hubspot()
    batch = [contact(i, f"p{i}@empresa.es") for i in range(8)]
    batch[5] = contact(5, "p5@empresa.es", lifecyclestage="bogus")
    outcomes = await hubspot.upsert(batch)
    assert [o.ok for o in outcomes] == [True] * 5 + [False] + [True] * 2
    assert outcomes[5].error is not None
    assert "INVALID_OPTION" in outcomes[5].error
    assert upserts(crm) <= 1 + 2 * 3
    assert crm.state.snapshot()["contacts"] == 7


async def test_a_property_missing_from_the_portal_rejects_the_delivery(
    make_hubspot: MakeHubSpot,
) -> None:
    """A mapping to a property HubSpot lacks stops the delivery after one request."""
    hubspot, crm = await make_hubspot(extra_properties=())
    with pytest.raises(CrmRejected, match="FIELD_MAPPING"):
        await hubspot.upsert([contact(i, f"p{i}@empresa.es", cauce_score=5) for i in range(4)])
    assert upserts(crm) == 1


async def test_a_wrong_token_is_rejected(make_hubspot: MakeHubSpot) -> None:
    """A 401 is a rejection: no retry fixes a revoked token."""
    hubspot, _ = await make_hubspot(adapter={"token": "revoked"})
    with pytest.raises(CrmRejected, match="401"):
        await hubspot.upsert([contact(1, "a@empresa.es")])


async def test_ten_secondly_limit_throttles_for_one_interval(
    make_hubspot: MakeHubSpot, wall: WallClock, sandbox_clock: ManualClock
) -> None:
    """A TEN_SECONDLY 429 pauses the adapter for the window, then traffic resumes."""
    hubspot, crm = await make_hubspot(rate_limit=2)
    await hubspot.upsert([contact(1, "a@empresa.es")])
    await hubspot.upsert([contact(2, "b@empresa.es")])
    with pytest.raises(CrmThrottled) as caught:
        await hubspot.upsert([contact(3, "c@empresa.es")])
    assert caught.value.policy == "TEN_SECONDLY_ROLLING"
    assert caught.value.until == wall.now + timedelta(seconds=10)
    seen = crm.state.stats.total
    with pytest.raises(CrmThrottled):
        await hubspot.upsert([contact(3, "c@empresa.es")])
    assert crm.state.stats.total == seen  # paused locally: nothing sent
    wall.advance(10)
    sandbox_clock.advance(10)
    assert (await hubspot.upsert([contact(3, "c@empresa.es")]))[0].ok


async def test_daily_limit_pauses_until_midnight_in_the_account_zone(
    make_hubspot: MakeHubSpot, make_clients: MakeClients, pipeline_clock: FakeClock
) -> None:
    """A DAILY 429 pauses until the next local midnight and drains the rate limiter."""
    policy = fast_policy(rate_limit=RateLimitPolicy(enabled=True, rate=100, burst=100))
    clients = make_clients(policies={"hubspot": policy})
    hubspot, crm = await make_hubspot(
        clients=clients, daily_limit=1, adapter={"timezone": "Europe/Madrid"}
    )
    crm.state.limiter.acquire()  # someone else used today's only request
    with pytest.raises(CrmThrottled) as caught:
        await hubspot.upsert([contact(1, "a@empresa.es")])
    midnight_madrid = datetime(2025, 3, 10, 23, 0, tzinfo=UTC)
    assert (caught.value.policy, caught.value.until) == ("DAILY", midnight_madrid)
    # In-call retries may meet the 429 a few times; after that nothing is sent all day.
    assert 1 <= crm.state.stats.rate_limited["DAILY"] <= 3
    sent = crm.state.stats.total
    with pytest.raises(CrmThrottled):
        await hubspot.delete(CrmKey("cauce_id", "x"))
    assert crm.state.stats.total == sent
    limiter = clients.get("hubspot").pipeline.rate_limiter  # type: ignore[union-attr]
    assert limiter is not None
    with pytest.raises(RateLimitedError) as drained:
        await limiter.acquire(0)
    assert drained.value.retry_after == pytest.approx(13.5 * 3600, abs=1)


async def test_the_last_daily_request_starts_the_pause_before_any_429(
    make_hubspot: MakeHubSpot, wall: WallClock
) -> None:
    """When HubSpot says no daily request is left, the next call waits without sending."""
    reset = wall.now + timedelta(hours=2)
    hubspot, crm = await make_hubspot(daily_limit=1, adapter={"daily_reset": lambda now: reset})
    assert (await hubspot.upsert([contact(1, "a@empresa.es")]))[0].ok
    with pytest.raises(CrmThrottled) as caught:
        await hubspot.upsert([contact(2, "b@empresa.es")])
    assert (caught.value.policy, caught.value.until) == ("DAILY", reset)
    assert crm.state.stats.rate_limited["DAILY"] == 0


async def test_a_pause_begun_mid_call_stops_its_next_request(
    make_hubspot: MakeHubSpot, wall: WallClock
) -> None:
    """A mixed batch takes two requests (by Cauce id first, then by email). When the
    first answer says no daily request is left, the second is not sent: the first group
    is kept, the rest is left for after the reset, and the next call is throttled."""
    reset = wall.now + timedelta(hours=2)
    hubspot, crm = await make_hubspot(daily_limit=1, adapter={"daily_reset": lambda now: reset})
    outcomes = await hubspot.upsert([contact(1, "uno@empresa.es"), contact(2)])
    assert upserts(crm) == 1
    assert outcomes[1].ok
    assert not outcomes[0].ok
    assert outcomes[0].retryable
    with pytest.raises(CrmThrottled):
        await hubspot.upsert([contact(1, "uno@empresa.es")])
    assert crm.state.stats.rate_limited["DAILY"] == 0


async def test_an_outage_is_unavailable(make_hubspot: MakeHubSpot) -> None:
    """503s through every in-call retry surface as CrmUnavailable."""
    hubspot, crm = await make_hubspot(faults_outage_after=0.0, faults_outage_for=60.0)
    with pytest.raises(CrmUnavailable):
        await hubspot.upsert([contact(1, "a@empresa.es")])
    assert crm.state.stats.faults["outage"] == 3


async def test_an_open_circuit_says_when_to_come_back(
    make_hubspot: MakeHubSpot, wall: WallClock
) -> None:
    """Once the breaker opens, calls fail fast with the breaker's remaining open time."""
    breaker = BreakerPolicy(
        minimum_number_of_calls=2, sliding_window_size=2, wait_duration_in_open_state=30.0
    )
    hubspot, crm = await make_hubspot(policy=fast_policy(breaker=breaker), faults_error_rate=1.0)
    with pytest.raises(CrmUnavailable):
        await hubspot.upsert([contact(1, "a@empresa.es")])
    sent = crm.state.stats.total
    with pytest.raises(CrmUnavailable) as caught:
        await hubspot.upsert([contact(1, "a@empresa.es")])
    assert crm.state.stats.total == sent
    assert caught.value.retry_at is not None
    assert timedelta(0) < caught.value.retry_at - wall.now <= timedelta(seconds=30)


async def test_a_transient_5xx_is_retried_inside_the_call_with_one_key(
    make_hubspot: MakeHubSpot, make_clients: MakeClients
) -> None:
    """A 503 is retried at once with the same idempotency key, and the contact is created once."""
    flaky: list[FlakyTransport] = []

    def wrap(upstream: str, transport: Transport) -> Transport:
        flaky.append(FlakyTransport(transport, failures=1))
        return flaky[-1]

    clients = make_clients(policies={"hubspot": fast_policy()}, wrap_transport=wrap)
    hubspot, crm = await make_hubspot(clients=clients)
    outcomes = await hubspot.upsert([contact(1, "a@empresa.es")])
    assert outcomes[0].ok
    keys = [r.headers.get("Idempotency-Key") for r in flaky[0].sent]
    assert len(keys) == 2
    assert keys[0] is not None
    assert keys[0] == keys[1]
    assert crm.state.snapshot()["created_total"] == 1


async def test_delete_by_cauce_id_erases_for_good(make_hubspot: MakeHubSpot) -> None:
    """GDPR delete by the Cauce id removes the contact; a second delete finds nothing."""
    hubspot, crm = await make_hubspot()
    lead = contact(1, "borrar@empresa.es")
    await hubspot.upsert([lead])
    key = CrmKey("cauce_id", str(lead.properties["cauce_id"]))
    assert await hubspot.delete(key) is True
    assert crm.state.snapshot()["contacts"] == 0
    assert crm.state.snapshot()["archived"] == 0
    assert await hubspot.delete(key) is False


async def test_read_back_by_any_key(make_hubspot: MakeHubSpot) -> None:
    """Reading by email (any case) or Cauce id returns the stored contact; unknown keys None."""
    hubspot, _ = await make_hubspot(adapter={"read_properties": ("email", "firstname", "cauce_id")})
    with_email, without = contact(1, "lee@empresa.es", firstname="Lía"), contact(2, firstname="Sin")
    outcomes = await hubspot.upsert([with_email, without])
    records = await hubspot.read(
        [CrmKey("email", "LEE@empresa.es"), without.key, CrmKey("email", "nadie@empresa.es")]
    )
    assert records[0] is not None
    assert records[1] is not None
    assert records[2] is None
    assert (records[0].crm_id, records[0].properties["firstname"]) == (outcomes[0].crm_id, "Lía")
    assert records[1].crm_id == outcomes[1].crm_id
    assert records[1].properties["cauce_id"] == without.key.value


def test_next_midnight_in_madrid_follows_dst() -> None:
    """Madrid's midnight is 23:00 UTC in winter and 22:00 UTC in summer."""
    reset = next_midnight("Europe/Madrid")
    assert reset(datetime(2025, 1, 15, 12, tzinfo=UTC)) == datetime(2025, 1, 15, 23, tzinfo=UTC)
    assert reset(datetime(2025, 7, 15, 12, tzinfo=UTC)) == datetime(2025, 7, 15, 22, tzinfo=UTC)
    assert reset(datetime(2025, 7, 15, 22, 30, tzinfo=UTC)) == datetime(2025, 7, 16, 22, tzinfo=UTC)


async def test_a_lead_that_gains_an_email_updates_its_own_contact(
    make_hubspot: MakeHubSpot,
) -> None:
    """Synced first by Cauce id, then keyed by a new email, the lead keeps its one contact."""
    hubspot, crm = await make_hubspot()
    others = [contact(i, f"otro{i}@empresa.es") for i in range(3)]
    (first,) = await hubspot.upsert([contact(7, phone="+34612000007")])
    keyed = contact(7)
    with_email = contact(7, "nuevo@empresa.es", uid=str(keyed.properties["cauce_id"]))
    outcomes = await hubspot.upsert([*others, with_email])
    assert all(o.ok for o in outcomes)
    assert outcomes[3].crm_id == first.crm_id
    stored = crm.state.store.live[str(first.crm_id)]
    assert stored.properties["email"] == "nuevo@empresa.es"
    assert crm.state.snapshot()["contacts"] == 4
