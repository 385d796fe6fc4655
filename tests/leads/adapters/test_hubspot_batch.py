"""HubSpot batch bodies: matching results to inputs, reading errors, naming culprits, resets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given
from hypothesis import strategies as st

from cauce.leads.adapters import next_midnight, period_reset
from cauce.leads.adapters.hubspot_batch import (
    HubSpotError,
    attribute,
    group_by_property,
    map_upsert_results,
    parse_error,
    rejection_kind,
    upsert_inputs,
)
from cauce.leads.ports import CrmContact, CrmKey
from tests.leads.adapters.conftest import contact

local_part = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._",
    min_size=1,
    max_size=12,
)


@st.composite
def email_batches(draw: st.DrawFn) -> list[CrmContact]:
    """Contacts with distinct emails in mixed case."""
    locals_ = draw(st.lists(local_part, min_size=1, max_size=30, unique_by=str.lower))
    return [contact(i, f"{name}@Empresa.es") for i, name in enumerate(locals_)]


def _answer(batch: list[CrmContact], order: list[int]) -> dict[str, object]:
    """HubSpot's answer: lower-cased emails, results in the given order, no trace ids."""
    return {
        "status": "COMPLETE",
        "results": [
            {"id": str(5000 + i), "properties": {"email": batch[i].key.value.lower()}}
            for i in order
        ],
    }


@given(email_batches(), st.randoms(use_true_random=False))
def test_results_map_to_their_inputs_whatever_the_order(
    batch: list[CrmContact], rng: random.Random
) -> None:
    """Each input gets the id of the result whose key is its own, in any result order."""
    order = list(range(len(batch)))
    rng.shuffle(order)
    outcomes = map_upsert_results("email", batch, _answer(batch, order))
    assert [o.crm_id if o else None for o in outcomes] == [str(5000 + i) for i in range(len(batch))]


def test_trace_ids_map_results_without_key_properties() -> None:
    """A result without the key property is placed by its echoed objectWriteTraceId."""
    batch = [contact(1), contact(2)]
    body = {"results": [{"id": "7", "objectWriteTraceId": "1", "properties": {}}]}
    outcomes = map_upsert_results("cauce_id", batch, body)
    assert outcomes[0] is None
    assert outcomes[1] is not None
    assert outcomes[1].crm_id == "7"


def test_per_record_errors_follow_their_category() -> None:
    """Errors name inputs by trace id or id; categories decide whether a retry may help."""
    batch = [contact(1), contact(2), contact(3)]
    body = {
        "results": [{"id": "9", "properties": {"cauce_id": batch[0].key.value}}],
        "errors": [
            {
                "category": "VALIDATION_ERROR",
                "message": "bad",
                "context": {"objectWriteTraceId": ["1"]},
            },
            {
                "category": "INTERNAL_ERROR",
                "message": "later",
                "context": {"ids": [batch[2].key.value]},
            },
        ],
    }
    first, second, third = map_upsert_results("cauce_id", batch, body)
    assert first is not None
    assert first.ok
    assert second is not None
    assert (second.error, second.retryable) == (
        "VALIDATION_ERROR: bad",
        False,
    )
    assert third is not None
    assert third.retryable


def test_an_unreadable_answer_reports_nothing() -> None:
    """A 2xx body that is not HubSpot's shape maps no input."""
    assert map_upsert_results("email", [contact(1, "a@b.es")], ["nope"]) == [None]


def test_inputs_carry_key_and_trace_id() -> None:
    """Each input names its idProperty, id and position."""
    (only,) = upsert_inputs([contact(1, "a@b.es", firstname="Ana")])
    assert (only["idProperty"], only["id"], only["objectWriteTraceId"]) == ("email", "a@b.es", "0")
    assert only["properties"]["firstname"] == "Ana"


def test_groups_split_by_property_and_hold_back_case_twins() -> None:
    """Email and Cauce id contacts form separate groups; an email twin in another case waits."""
    batch = [contact(1, "a@b.es"), contact(2), contact(3, "A@B.ES"), contact(4, "c@b.es")]
    groups, repeated = group_by_property(batch)
    assert groups == {"email": [0, 3], "cauce_id": [1]}
    assert repeated == [2]


def test_html_error_bodies_parse_to_nothing() -> None:
    """A gateway's HTML 5xx yields empty fields, not an exception."""
    assert parse_error(b"<html><body>Bad Gateway</body></html>") == HubSpotError()
    limited = parse_error(orjson.dumps({"errorType": "RATE_LIMIT", "policyName": "DAILY"}))
    assert (limited.category, limited.policy_name) == ("RATE_LIMIT", "DAILY")


def _problems(*errors: str) -> HubSpotError:
    entries = [{"isValid": False, "error": e, "name": "x", "message": "m"} for e in errors]
    message = "Property values were not valid: " + orjson.dumps(entries).decode()
    return HubSpotError("VALIDATION_ERROR", message)


def test_schema_and_request_problems_stop_record_problems_are_isolated() -> None:
    """Missing properties and malformed requests reject the delivery; bad values do not."""
    assert rejection_kind(_problems("PROPERTY_DOESNT_EXIST")) == "config"
    assert rejection_kind(_problems("INVALID_EMAIL", "READ_ONLY_VALUE")) == "config"
    assert rejection_kind(_problems("INVALID_EMAIL")) == "records"
    assert (
        rejection_kind(HubSpotError("CONFLICT", "Contact already exists. Existing ID: 5"), 409)
        == "records"
    )
    non_unique = "Unable to perform update/upsert by non-unique 0-1 property x in portal ID 1"
    assert rejection_kind(HubSpotError("VALIDATION_ERROR", non_unique)) == "config"
    assert rejection_kind(HubSpotError("VALIDATION_ERROR", "Invalid input JSON")) == "config"


def test_culprits_are_named_by_whole_words_only() -> None:
    """An email inside another email is not a match; the exact one is."""
    batch = [contact(1, "a@b.co"), contact(2, "xa@b.co")]
    refused, later = attribute(
        HubSpotError("VALIDATION_ERROR", "Email address xa@b.co is invalid"),
        "email",
        batch,
        "cauce_id",
    )
    assert (refused, later) == ({1}, set())


def test_a_clash_on_the_cauce_id_names_its_owner() -> None:
    """A conflict message quoting a Cauce id names the input carrying it."""
    batch = [contact(1, "a@b.es"), contact(2, "b@b.es")]
    uid = str(batch[1].properties["cauce_id"])
    error = HubSpotError(
        "CONFLICT", f"A contact with cauce_id {uid} already exists. Existing ID: 4"
    )
    assert attribute(error, "email", batch, "cauce_id") == ({1}, set())


def test_duplicate_ids_send_the_repeats_later() -> None:
    """'Duplicate IDs' keeps the first of each id and holds back the others."""
    batch = [
        CrmContact(i, 1, CrmKey("email", e), {})
        for i, e in enumerate(["a@b.es", " A@b.es", "c@b.es"])
    ]
    error = HubSpotError(
        "VALIDATION_ERROR", "Duplicate IDs found in batch input: [a@b.es]. IDs must be unique"
    )
    assert attribute(error, "email", batch, "cauce_id") == (set(), {1})


def test_nothing_is_named_when_the_message_names_no_input() -> None:
    """A message about an option value names nobody (the batch gets bisected)."""
    batch = [contact(1, "a@b.es", lifecyclestage="lead")]
    error = _problems("INVALID_OPTION")
    assert attribute(error, "email", batch, "cauce_id") == (set(), set())


ZONES = [
    "UTC",
    "Europe/Madrid",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "Atlantic/Canary",
]


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(ZONES),
)
def test_the_daily_reset_is_the_next_local_midnight(now: datetime, zone: str) -> None:
    """The reset is in the future, within a day (plus a DST hour), at 00:00 local time."""
    reset = next_midnight(zone)(now)
    assert now < reset <= now + timedelta(hours=25)
    local = reset.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute, local.second) == (0, 0, 0)
    assert local.date() == now.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)


@given(email_batches(), st.data())
def test_an_invalid_email_names_exactly_its_input(
    batch: list[CrmContact], data: st.DataObject
) -> None:
    """Whatever the other emails (prefixes, suffixes, case), only the quoted one is named."""
    culprit = data.draw(st.integers(min_value=0, max_value=len(batch) - 1))
    entry = {
        "error": "INVALID_EMAIL",
        "message": f"Email address {batch[culprit].key.value} is invalid",
    }
    message = "Property values were not valid: " + orjson.dumps([entry]).decode()
    refused, later = attribute(
        HubSpotError("VALIDATION_ERROR", message), "email", batch, "cauce_id"
    )
    assert (refused, later) == ({culprit}, set())


@given(st.floats(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=600))
def test_a_short_day_resets_at_the_next_period_boundary(offset: float, seconds: int) -> None:
    """A configured short day ends at the next multiple of its length after its origin."""
    origin = datetime(2025, 3, 10, tzinfo=UTC)
    now = origin + timedelta(seconds=offset)
    reset = period_reset(timedelta(seconds=seconds), origin)(now)
    assert now < reset <= now + timedelta(seconds=seconds)
    assert ((reset - origin) / timedelta(seconds=seconds)).is_integer()
