"""Lead request models: normalised values, per-field rejections, batches, patches."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cauce.core.errors import NotFound, ValidationFailed
from cauce.leads.errors import (
    FieldError,
    LeadInvalid,
    LeadNotFound,
)
from cauce.leads.phones import number_country
from cauce.leads.responses import BatchItemResult, BatchResult, LeadOut
from cauce.leads.schemas import IntakeOptions, LeadIn, LeadPatch, LeadSource, LeadStatus
from cauce.leads.schemas_batch import (
    MAX_BATCH_ITEMS,
    LeadBatchIn,
    field_errors,
    validate_batch,
    validate_lead,
)
from cauce.leads.schemas_requests import ImportOptionsIn

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def errors_of(payload: dict[str, Any], options: IntakeOptions | None = None) -> list[FieldError]:
    outcome = validate_lead(payload, options or IntakeOptions(now=NOW))
    assert not isinstance(outcome, LeadIn), "expected the payload to be rejected"
    return outcome


def test_spanish_lead_is_normalised() -> None:
    """A typical Spanish web-form lead comes out cleaned, split and in canonical forms."""
    lead = LeadIn.model_validate(
        {
            "email": "María José <MJ.Garcia@Hotmail.ES>",
            "phone": "612 34 56 78",
            "full_name": "  MARÍA JOSÉ GARCÍA DE LA FUENTE ",
            "company": "<b>Construcciones Ñandú</b>, S.L.",
            "job_title": "Directora\tde compras",
            "country": "España",
            "region": "Comunidad de Madrid",
            "city": "Alcalá de Henares",
            "language": "es_ES",
            "source": "web_form",
            "utm": {"source": "google", "campaign": "primavera 2025"},
            "consent": {
                "marketing": True,
                "given_at": "2025-03-01T12:00:00+01:00",
                "wording_version": "rgpd-v3",
                "source": "https://empresa.es/contacto",
            },
            "custom_fields": {"sector": "Construcción", "empleados": 40, "cliente": False},
            "external_id": "WF-1",
        }
    )
    assert lead.email == "mj.garcia@hotmail.es"
    assert lead.phone == "+34612345678"
    assert (lead.first_name, lead.last_name) == ("María José", "García de la Fuente")
    assert lead.full_name == "María José García de la Fuente"
    assert lead.company == "Construcciones Ñandú, S.L."
    assert lead.job_title == "Directora de compras"
    assert (lead.country, lead.language) == ("ES", "es-ES")
    assert lead.source is LeadSource.WEB_FORM
    assert lead.status is LeadStatus.NEW
    assert lead.consent is not None
    assert lead.consent.given_at == datetime(2025, 3, 1, 11, 0, tzinfo=UTC)
    assert lead.custom_fields == {"sector": "Construcción", "empleados": 40, "cliente": False}
    assert lead.is_free_email
    assert not lead.is_disposable_email
    dumped = lead.model_dump()
    assert dumped["is_free_email"] is True
    assert dumped["is_disposable_email"] is False


def test_json_input_validates_the_same_as_python_input() -> None:
    """Raw JSON bodies (the fast path) give the same lead and the same errors as dicts."""
    body = {
        "email": "Ana@Empresa.ES",
        "phone": "612345678",
        "status": "working",
        "consent": {"marketing": False, "given_at": "2025-02-01T00:00:00Z"},
    }
    from_json = LeadIn.model_validate_json(json.dumps(body))
    assert from_json == LeadIn.model_validate(body)
    with pytest.raises(ValidationError) as info:
        LeadIn.model_validate_json('{"email": "no-at-sign", "consent": {"marketing": "true"}}')
    assert [e["pointer"] for e in field_errors(info.value)] == ["/email", "/consent/marketing"]


@pytest.mark.parametrize("given_at", [1000, 1.5, "1700000000"])
def test_a_consent_time_is_iso_8601_never_a_unix_time(given_at: object) -> None:
    """A number (or numeric text) where the consent's time goes is refused at its pointer:
    `1000` was stored as 1970-01-01T00:16:40Z, a proof of consent dated 1970."""
    consent = {"marketing": True, "wording_version": "v1", "given_at": given_at}
    body = {"email": "a@empresa.es", "consent": consent}
    with pytest.raises(ValidationError) as info:
        LeadIn.model_validate(body)
    assert [e["pointer"] for e in field_errors(info.value)] == ["/consent/given_at"]
    with pytest.raises(ValidationError) as info:
        LeadIn.model_validate_json(json.dumps(body))
    assert [e["pointer"] for e in field_errors(info.value)] == ["/consent/given_at"]


def test_separate_names_are_kept_and_compose_the_full_name() -> None:
    """First and last names given separately are not re-split; they compose full_name,
    and a full name sent with the first name only gives the last name its other words."""
    lead = LeadIn.model_validate(
        {"email": "a@empresa.es", "first_name": "María", "last_name": "José García"}
    )
    assert (lead.first_name, lead.last_name) == ("María", "José García")
    assert lead.full_name == "María José García"
    both = LeadIn.model_validate(
        {"email": "a@empresa.es", "first_name": "Ana", "full_name": "Ana Ruiz Gil"}
    )
    assert (both.first_name, both.last_name, both.full_name) == ("Ana", "Ruiz Gil", "Ana Ruiz Gil")


def test_full_name_split_follows_the_country() -> None:
    """A US lead's full name keeps one surname; a Mexican lead's keeps two."""
    us = LeadIn.model_validate({"email": "a@b.com", "full_name": "Mary Ann Smith", "country": "US"})
    mx = LeadIn.model_validate({"email": "a@b.mx", "full_name": "Juan Pérez Soto", "country": "MX"})
    assert (us.first_name, us.last_name) == ("Mary Ann", "Smith")
    assert (mx.first_name, mx.last_name) == ("Juan", "Pérez Soto")


def test_phone_is_read_in_the_leads_country_then_the_default_region() -> None:
    """National numbers use the lead's country, else the configured default region."""
    mx = LeadIn.model_validate({"phone": "55 1234 5678", "country": "México"})
    assert mx.phone == "+525512345678"
    by_default = LeadIn.model_validate(
        {"phone": "55 1234 5678"}, context=IntakeOptions(default_phone_region="MX").context()
    )
    assert by_default.phone == "+525512345678"
    spain = LeadIn.model_validate({"phone": "+34 612 34 56 78", "country": "MX"})
    assert spain.phone == "+34612345678"


def test_blank_strings_are_absent_fields() -> None:
    """Blank text fields (as web forms send them) become None, not empty strings."""
    lead = LeadIn.model_validate(
        {"email": "", "phone": "612345678", "company": "   ", "first_name": "<br>"}
    )
    assert lead.email is None
    assert lead.company is None
    assert lead.first_name is None


def test_company_keeps_its_case_but_names_are_fixed() -> None:
    """Capitals are fixed in person names only: a company may be called IBM."""
    lead = LeadIn.model_validate({"email": "a@ibm.com", "first_name": "JUAN", "company": "IBM"})
    assert lead.first_name == "Juan"
    assert lead.company == "IBM"


@pytest.mark.parametrize(
    ("payload", "pointer", "error_type"),
    [
        ({"email": "not-an-email"}, "/email", "email_invalid"),
        ({"email": 42}, "/email", "string_type"),
        ({"phone": "999 99 99 99"}, "/phone", "phone_invalid"),
        ({"phone": 612345678}, "/phone", "string_type"),
        ({"email": "a@b.es", "country": "Narnia"}, "/country", "country_unknown"),
        ({"email": "a@b.es", "language": "klingon"}, "/language", "language_unknown"),
        ({"email": "a@b.es", "company": "x" * 201}, "/company", "text_too_long"),
        ({"email": "a@b.es", "first_name": "x" * 101}, "/first_name", "text_too_long"),
        ({"email": "a@b.es", "first_name": ["Ana"]}, "/first_name", "string_type"),
        ({"email": "a@b.es", "status": "open"}, "/status", "enum"),
        ({"email": "a@b.es", "source": "fax"}, "/source", "enum"),
        ({"email": "a@b.es", "favourite_colour": "blue"}, "/favourite_colour", "extra_forbidden"),
        ({"email": "a@b.es", "utm": {"sauce": "x"}}, "/utm/sauce", "extra_forbidden"),
        ({"email": "a@b.es", "consent": {"marketing": "yes"}}, "/consent/marketing", "bool_type"),
        ({"email": "a@b.es", "consent": {"marketing": 1}}, "/consent/marketing", "bool_type"),
        ({"email": "a@b.es", "consent": {}}, "/consent/marketing", "missing"),
        (
            {"email": "a@b.es", "consent": {"marketing": True}},
            "/consent/wording_version",
            "consent_wording_missing",
        ),
        (
            {
                "email": "a@b.es",
                "consent": {"marketing": False, "given_at": "2025-03-01T12:00:00"},
            },
            "/consent/given_at",
            "timezone_aware",
        ),
        (
            {
                "email": "a@b.es",
                "consent": {"marketing": False, "given_at": "2025-03-02T12:00:00Z"},
            },
            "/consent/given_at",
            "consent_in_future",
        ),
        (
            {"email": "a@b.es", "custom_fields": {"Bad Key": 1}},
            "/custom_fields/Bad Key",
            "custom_field_key_invalid",
        ),
        (
            {"email": "a@b.es", "custom_fields": {"notes": "x" * 1025}},
            "/custom_fields/notes",
            "custom_field_value_too_long",
        ),
        (
            {"email": "a@b.es", "custom_fields": {"tags": ["a"]}},
            "/custom_fields/tags",
            "custom_field_value_invalid",
        ),
        (
            {"email": "a@b.es", "custom_fields": {"big": 2**60}},
            "/custom_fields/big",
            "custom_field_value_invalid",
        ),
        (
            {"email": "a@b.es", "custom_fields": {f"k{i}": i for i in range(51)}},
            "/custom_fields",
            "too_long",
        ),
    ],
)
def test_every_rejection_names_its_field(
    payload: dict[str, Any], pointer: str, error_type: str
) -> None:
    """Each invalid field is reported with its JSON pointer, a stable type and a reason."""
    errors = errors_of(payload)
    assert {"pointer": pointer, "type": error_type} in [
        {"pointer": e["pointer"], "type": e["type"]} for e in errors
    ]
    assert all(e["detail"] for e in errors)


def test_missing_contact_names_both_fields() -> None:
    """Without email and phone, both fields are named as the way to fix the lead."""
    errors = errors_of({"first_name": "Ana"})
    assert [(e["pointer"], e["type"]) for e in errors] == [
        ("/email", "contact_required"),
        ("/phone", "contact_required"),
    ]


def test_an_invalid_email_is_not_also_reported_as_missing_contact() -> None:
    """A bad email is reported once, as bad, not again as a missing contact."""
    assert [e["pointer"] for e in errors_of({"email": "nope"})] == ["/email"]


def test_phone_rejection_says_the_region() -> None:
    """An invalid national number's reason names the region it was read in."""
    (error,) = errors_of({"phone": "999 99 99 99"})
    assert error["detail"] == "is not a valid number for region ES"


def test_pointers_escape_slash_and_tilde() -> None:
    """Keys with `/` or `~` are escaped as RFC 6901 requires."""
    errors = errors_of({"email": "a@b.es", "custom_fields": {"a/b~c": 1}})
    assert errors[0]["pointer"] == "/custom_fields/a~1b~0c"


def test_errors_never_echo_the_input() -> None:
    """Rejected personal data is not copied into the error (it would reach the logs)."""
    with pytest.raises(ValidationError) as info:
        LeadIn.model_validate({"email": "secret-person@", "phone": "+34 999"})
    assert "secret-person" not in str(info.value)


def test_computed_flags_cannot_be_sent() -> None:
    """The email flags are Cauce's to compute; a client cannot set them."""
    errors = errors_of({"email": "a@b.es", "is_free_email": True})
    assert errors[0]["pointer"] == "/is_free_email"


def test_disposable_email_is_flagged() -> None:
    """A throw-away inbox is accepted but flagged, for scoring to weigh."""
    lead = LeadIn.model_validate({"email": "x@mailinator.com"})
    assert lead.is_disposable_email
    assert not lead.is_free_email


def test_consent_in_the_past_is_accepted_and_stored_in_utc() -> None:
    """A consent timestamp with an offset is kept, in UTC."""
    lead = LeadIn.model_validate(
        {
            "email": "a@b.es",
            "consent": {
                "marketing": True,
                "given_at": (NOW - timedelta(days=1)).isoformat(),
                "wording_version": "v1",
            },
        },
        context=IntakeOptions(now=NOW).context(),
    )
    assert lead.consent is not None
    assert lead.consent.given_at == NOW - timedelta(days=1)


@pytest.mark.parametrize(
    ("given_at", "now", "expected"),
    [
        # Future and without a UTC form: the future is said first, as always.
        ("9999-12-31T23:59:59-14:00", NOW, "consent_in_future"),
        ("9999-12-31T23:59:59-14:00", None, "datetime_out_of_range"),
        ("0001-01-01T00:30:00+01:00", NOW, "datetime_out_of_range"),
        ("0001-01-01T00:30:00+01:00", None, "datetime_out_of_range"),
        ("2025-03-01T13:04:00+01:00", NOW, datetime(2025, 3, 1, 12, 4, tzinfo=UTC)),
        ("2025-03-01T13:06:00+01:00", NOW, "consent_in_future"),
        ("2025-03-01T12:05:00Z", NOW, datetime(2025, 3, 1, 12, 5, tzinfo=UTC)),
        ("2025-03-01T12:05:00.000001Z", NOW, "consent_in_future"),
        ("3025-03-01T12:05:00-03:00", None, datetime(3025, 3, 1, 15, 5, tzinfo=UTC)),
    ],
)
def test_consent_time_checks(given_at: str, now: datetime | None, expected: object) -> None:
    """Consent times: refused in the future (5 minutes of skew), or without a UTC form;
    kept in UTC otherwise."""
    outcome = validate_lead(
        {"email": "a@b.es", "consent": {"marketing": False, "given_at": given_at}},
        IntakeOptions(now=now),
    )
    if isinstance(expected, datetime):
        assert isinstance(outcome, LeadIn)
        assert outcome.consent is not None
        assert outcome.consent.given_at == expected
        assert outcome.consent.given_at.tzinfo is UTC
    else:
        assert not isinstance(outcome, LeadIn)
        assert [(e["pointer"], e["type"]) for e in outcome] == [("/consent/given_at", expected)]


# --- property-based -----------------------------------------------------------------------

TEXT_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "full_name",
    "company",
    "job_title",
    "country",
    "region",
    "city",
    "language",
    "owner",
    "external_id",
)


@given(st.dictionaries(st.sampled_from(TEXT_FIELDS), st.text(max_size=120), max_size=8))
@settings(max_examples=300, deadline=None)
def test_arbitrary_text_gives_a_lead_or_a_validation_error(fields: dict[str, str]) -> None:
    """Any text in any field is either a lead or a ValidationError naming fields."""
    try:
        lead = LeadIn.model_validate(fields)
    except ValidationError as exc:
        for error in field_errors(exc):
            assert error["pointer"].startswith("/")
            assert error["detail"]
    else:
        assert lead.email is not None or lead.phone is not None


VALID_PARTS = st.fixed_dictionaries(
    {"email": st.sampled_from(["Ana.Ruiz@Empresa.ES", "x@gmail.com", "josé@bücher.de"])},
    optional={
        "phone": st.sampled_from(["612 345 678", "+52 55 1234 5678", "0034 912345678"]),
        "full_name": st.text(max_size=60),
        "first_name": st.text(max_size=30),
        "company": st.text(max_size=60),
        "country": st.sampled_from(["españa", "MX", "us", "Portugal"]),
        "language": st.sampled_from(["ES", "en_us", "castellano"]),
        "city": st.text(max_size=40),
    },
)


@given(VALID_PARTS)
@settings(max_examples=200, deadline=None)
@example({"email": "a@b.es", "full_name": ",AA"})
@example({"email": "a@b.es", "first_name": "a", "last_name": "y"})
@example({"email": "a@b.es", "full_name": "x" * 150 + " " + "y" * 40})
@example({"email": "a@b.es", "first_name": "0A-\u0130"})  # Turkish capital dotted I
def test_validation_is_idempotent(payload: dict[str, str]) -> None:
    """Validating a validated lead's own data gives the same lead, but for the country of
    a lead whose national number (`612 345 678`) gave none: stored in E.164 (`+34...`),
    the number names its country when validated again, as one typed so does."""
    try:
        lead = LeadIn.model_validate(payload)
    except ValidationError:
        return
    again = LeadIn.model_validate(lead.model_dump(exclude={"is_free_email", "is_disposable_email"}))
    if lead.country is None and lead.phone is not None:
        assert again.country == number_country(lead.phone)
        again = again.model_copy(update={"country": None})
    assert again == lead


# --- patch --------------------------------------------------------------------------------


def test_patch_lists_only_the_fields_sent() -> None:
    """A patch changes only what it names; null and blank clear a field."""
    patch = LeadPatch.model_validate({"company": "", "city": None, "phone": "612345678"})
    assert patch.changes() == {"company": None, "city": None, "phone": "+34612345678"}


def test_patch_splits_a_full_name_into_changes() -> None:
    """A full name sent alone also changes first and last name."""
    patch = LeadPatch.model_validate({"full_name": "Juan García López"})
    assert patch.changes() == {
        "full_name": "Juan García López",
        "first_name": "Juan",
        "last_name": "García López",
    }


def test_patch_validates_like_intake() -> None:
    """A patch gets the same per-field validation, without the contact requirement."""
    with pytest.raises(ValidationError) as info:
        LeadPatch.model_validate({"email": "bad", "status": None, "colour": "red"})
    pointers = {e["pointer"]: e["type"] for e in field_errors(info.value)}
    assert pointers == {
        "/email": "email_invalid",
        "/colour": "extra_forbidden",
    }
    with pytest.raises(ValidationError) as cleared:
        LeadPatch.model_validate({"status": None})
    assert field_errors(cleared.value)[0]["pointer"] == "/status"
    assert LeadPatch.model_validate({"status": "won"}).changes() == {"status": LeadStatus.WON}


# --- batch --------------------------------------------------------------------------------


def test_batch_keeps_valid_items_and_reports_the_others_by_index() -> None:
    """One bad item never sinks the batch; its errors point into /items/{i}."""
    result = validate_batch(
        [
            {"email": "ana@empresa.es"},
            "not an object",
            {"phone": "123"},
            {"email": "luis@empresa.es", "custom_fields": {"X": 1}},
            {"phone": "+34 612 345 678"},
        ]
    )
    assert [index for index, _ in result.valid] == [0, 4]
    assert [(item.index, [e["pointer"] for e in item.errors]) for item in result.invalid] == [
        (1, ["/items/1"]),
        (2, ["/items/2/phone"]),
        (3, ["/items/3/custom_fields/X"]),
    ]


def test_batch_envelope_bounds() -> None:
    """A batch holds 1 to 1,000 items; item contents are not judged by the envelope."""
    with pytest.raises(ValidationError):
        LeadBatchIn.model_validate({"items": []})
    with pytest.raises(ValidationError):
        LeadBatchIn.model_validate({"items": [{}] * (MAX_BATCH_ITEMS + 1)})
    assert len(LeadBatchIn.model_validate({"items": [1] * MAX_BATCH_ITEMS}).items) == 1000


def test_import_options() -> None:
    """Import options normalise the default region and refuse unknown delimiters."""
    options = ImportOptionsIn.model_validate({"default_phone_region": "méxico"})
    assert options.default_phone_region == "MX"
    with pytest.raises(ValidationError):
        ImportOptionsIn.model_validate({"delimiter": ":"})


# --- errors and responses -----------------------------------------------------------------


def test_lead_errors_carry_status_and_stable_codes() -> None:
    """Leads errors are core errors of the right status, with their own codes."""
    invalid = LeadInvalid([{"pointer": "/email", "detail": "bad", "type": "email_invalid"}])
    assert isinstance(invalid, ValidationFailed)
    assert (invalid.status_code, invalid.code) == (422, "validation_failed")
    assert invalid.extra["errors"][0]["pointer"] == "/email"
    assert isinstance(LeadNotFound(), NotFound)
    assert (LeadNotFound.status_code, LeadNotFound.code) == (404, "lead_not_found")


def test_response_models_read_attributes() -> None:
    """LeadOut reads any object with the lead's attributes (an ORM row)."""

    class Row:
        id = "lead_1"
        source = "csv"
        status = "qualified"
        email = "ana@empresa.es"
        score = 72.5
        created_at = NOW
        updated_at = NOW

    out = LeadOut.model_validate(Row())
    assert out.status is LeadStatus.QUALIFIED
    assert out.score == 72.5
    result = BatchResult(
        received=2,
        accepted=1,
        rejected=1,
        items=[
            BatchItemResult(index=0, outcome="created", id="lead_1"),
            BatchItemResult.model_validate(
                {
                    "index": 1,
                    "outcome": "rejected",
                    "errors": [{"pointer": "/items/1/email", "detail": "x", "type": "y"}],
                }
            ),
        ],
    )
    assert result.model_dump()["items"][1]["errors"][0]["pointer"] == "/items/1/email"


@pytest.mark.parametrize(
    ("phone", "country"),
    [
        ("+52 55 1234 5678", "MX"),
        ("+54 9 11 2345 6789", "AR"),
        ("+1 809 555 0123", "DO"),
        ("0057 320 138 2641", "CO"),
        # The default region's own, typed with its prefix (an audit found these gave
        # none: test_country_inference).
        ("+34 612 34 56 78", "ES"),
        # A national number says nothing: the region it is read in was assumed.
        ("612 34 56 78", None),
        # Not a country's: the international freephone's region is "001" (found by review).
        ("+800 1234 5678", None),
    ],
)
def test_a_lead_without_country_takes_its_phones(phone: str, country: str | None) -> None:
    """A number typed with an international prefix gives a lead without `country` that
    country (scoring and routing saw +52 leads as Spanish: found by an audit with Latin
    American data), the default region's own too; a national number says nothing."""
    assert LeadIn.model_validate({"phone": phone}).country == country
    # A country sent stands, and the default region is the one options name.
    assert LeadIn.model_validate({"phone": "+52 55 1234 5678", "country": "PE"}).country == "PE"
    in_mexico = IntakeOptions(default_phone_region="MX").context()
    mexican = LeadIn.model_validate({"phone": "+52 55 1234 5678"}, context=in_mexico)
    assert mexican.country == "MX"
    national = LeadIn.model_validate({"phone": "55 1234 5678"}, context=in_mexico)
    assert national.country is None


def test_a_country_taken_from_the_phone_does_not_split_the_full_name() -> None:
    """The names are split by the country sent (none: the Spanish way), not by the one a
    US phone gives afterwards (which would read `María José García` as given names and
    lose the match with the same person sent without a phone: found by review)."""
    lead = LeadIn.model_validate(
        {"phone": "+1 305 555 0123", "full_name": "María José García López"}
    )
    assert (lead.country, lead.first_name, lead.last_name) == ("US", "María José", "García López")
