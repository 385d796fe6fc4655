"""Consent in CSV imports (helper-118, a data protection officer's audit): the consent
words people and forms write (`Acepto`, `Sí, acepto`, `✓`, `Opt-out`, `Baja`...) are
read, a placeholder (`-`, `n/a`) is no consent rather than a rejected row, another word
fails its row listing the words read; a yes without a wording version says to set
`consent_wording_version`; and `consent_given_at` gives the rows' consents their time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cauce.core.jobs.factory import JobWorker
from cauce.leads import csv_cells, scoring
from cauce.leads.csv_import import CsvLeadReader, ReportLine, validate_row
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_requests import ImportOptionsIn
from tests.leads.import_client import error_report, import_csv, post_csv

HEADER = "Correo;Consentimiento\r\n"


def _read(cell: str, **options: Any) -> LeadIn | list[ReportLine]:
    """One row `x@empresa.es;<cell>` read and validated as the import does."""
    reader = CsvLeadReader.from_options(ImportOptionsIn(delimiter=";", **options))
    rows = list(reader.rows([f"{HEADER}x@empresa.es;{cell}\r\n".encode()]))
    assert reader.plan is not None
    return validate_row(rows[0], reader.plan)


YES_CELLS = [
    "Acepto", "ACEPTO", "acepto.", "Sí, acepto", "si, acepto", "Si acepto", "SÍ, ACEPTO.",
    "si.", "Sí.", "¡Sí!", "✓", "✔", "✔️", "Opt-in", "opt in", "OPT-IN", "optin", "Sí",
    "yes", "X", "1", "ok", "Aceptado", "acepta",
]  # fmt: skip
NO_CELLS = [
    "No acepto", "NO ACEPTO.", "no.", "Opt-out", "opt out", "optout", "Baja", "BAJA",
    "de baja", "Dado de baja", "dada de baja", "No", "false", "0", "No aceptado",
]  # fmt: skip


@pytest.mark.parametrize("cell", YES_CELLS)
def test_consent_yes_words_are_read(cell: str) -> None:
    lead = _read(cell, consent_wording_version="v1")
    assert isinstance(lead, LeadIn), lead
    assert lead.consent is not None
    assert lead.consent.marketing is True


@pytest.mark.parametrize("cell", NO_CELLS)
def test_consent_no_words_are_read(cell: str) -> None:
    lead = _read(cell)
    assert isinstance(lead, LeadIn), lead
    assert lead.consent is not None
    assert lead.consent.marketing is False


@pytest.mark.parametrize(
    "cell", ["-", "n/a", "N/A", "#N/A", "--", "?", "null", "NA", "No consta", "."]
)
def test_a_placeholder_is_no_consent_not_a_rejection(cell: str) -> None:
    """What stands for an empty cell elsewhere in Cauce is no consent recorded: the row is
    imported, without a consent (not with a no, and not rejected)."""
    lead = _read(cell, consent_wording_version="v1")
    assert isinstance(lead, LeadIn), lead
    assert lead.consent is None


@pytest.mark.parametrize("cell", ["quizá", "Alta", "talvez", "✗", "2", "-1", "sí no", "да"])
def test_another_word_fails_its_row_listing_the_words_read(cell: str) -> None:
    """A word that is no consent Cauce reads fails its row (as a status or a date does),
    the report naming the column and the field and listing the words, never the cell.
    `Alta` (signed up, or high) is not read as a yes: a consent must be unambiguous."""
    lines = _read(cell, consent_wording_version="v1")
    assert isinstance(lines, list), lines
    [line] = lines
    assert (line.row, line.column, line.field) == (2, "Consentimiento", "consent.marketing")
    for word in ("Sí", "Acepto", "✓", "Opt-in", "No acepto", "Opt-out", "Baja"):
        assert word in line.reason, (word, line.reason)
    assert "Input should be" not in line.reason
    assert "n/a" in line.reason  # what to write for no consent recorded
    if len(cell) > 2 and cell != "-1":
        assert cell not in line.reason  # the cell may be personal: never repeated


def test_the_scoring_words_stay_the_general_yes_and_no() -> None:
    """The consent-only words are a set of their own: scoring's yes/no words (which the
    import's general words match) do not grow with them."""
    assert scoring.TRUE_WORDS == csv_cells._TRUE
    assert scoring.FALSE_WORDS == csv_cells._FALSE
    assert "acepto" not in scoring.TRUE_WORDS
    assert "baja" not in scoring.FALSE_WORDS


def test_a_yes_without_a_wording_version_names_the_import_option() -> None:
    """A `Sí` with no wording version (no column, no option) fails its row saying to set
    the import option `consent_wording_version` (or to add a version column)."""
    lines = _read("Sí")
    assert isinstance(lines, list), lines
    [line] = lines
    assert line.field == "consent.wording_version"
    assert "consent_wording_version" in line.reason
    assert "is required when marketing consent is given" in line.reason


# consent_given_at ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-12-31", datetime(2024, 12, 31, tzinfo=UTC)),
        ("31/12/2024", datetime(2024, 12, 31, tzinfo=UTC)),
        ("31/12/2024 10:30", datetime(2024, 12, 31, 10, 30, tzinfo=UTC)),
        ("2024-12-31T10:30:00+01:00", datetime(2024, 12, 31, 9, 30, tzinfo=UTC)),
        ("2024-12-31T10:30:00Z", datetime(2024, 12, 31, 10, 30, tzinfo=UTC)),
        ("20241231", datetime(2024, 12, 31, tzinfo=UTC)),
    ],
)
def test_consent_given_at_gives_the_rows_their_time(value: str, expected: datetime) -> None:
    """Read as a date cell is; a row without a consent gets no time (and no consent)."""
    options = ImportOptionsIn(delimiter=";", consent_wording_version="v1", consent_given_at=value)
    reader = CsvLeadReader.from_options(options)
    rows = list(reader.rows([f"{HEADER}a@empresa.es;Sí\r\nb@empresa.es;\r\n".encode()]))
    assert reader.plan is not None
    lead, other = (validate_row(row, reader.plan) for row in rows)
    assert isinstance(lead, LeadIn)
    assert isinstance(other, LeadIn)
    assert lead.consent is not None
    assert lead.consent.given_at == expected
    assert other.consent is None


def test_a_consent_date_column_wins_row_by_row() -> None:
    options = ImportOptionsIn(
        delimiter=";", consent_wording_version="v1", consent_given_at="2024-01-01"
    )
    reader = CsvLeadReader.from_options(options)
    data = (
        "Correo;Consentimiento;Fecha consentimiento\r\n"
        "a@empresa.es;Sí;15/03/2024\r\n"
        "b@empresa.es;No;\r\n"
    ).encode()
    rows = list(reader.rows([data]))
    assert reader.plan is not None
    first, second = (validate_row(row, reader.plan) for row in rows)
    assert isinstance(first, LeadIn)
    assert isinstance(second, LeadIn)
    assert first.consent is not None
    assert first.consent.given_at == datetime(2024, 3, 15, tzinfo=UTC)
    assert second.consent is not None
    assert second.consent.given_at == datetime(2024, 1, 1, tzinfo=UTC)


# Through the API, on both databases ------------------------------------------------------


async def _consents(api: httpx.AsyncClient) -> dict[str, Any]:
    items = (await api.get("/v1/leads", params={"limit": 200})).json()["items"]
    return {lead["email"]: lead["consent"] for lead in items}


async def test_an_import_reads_the_consent_words_and_placeholders(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """Words are read, placeholders import the row without a consent, an unknown word
    fails its row alone with the list of words, and the filter then finds them."""
    data = (
        "Correo;Consentimiento\r\n"
        "a@empresa.es;Sí, acepto\r\n"
        "b@empresa.es;✓\r\n"
        "c@empresa.es;Baja\r\n"
        "d@empresa.es;Opt-out\r\n"
        "e@empresa.es;n/a\r\n"
        "f@empresa.es;-\r\n"
        "g@empresa.es;quizá\r\n"
    ).encode()
    status = await import_csv(
        api,
        worker,
        data,
        {"consent_wording_version": "rgpd-v2", "consent_given_at": "2024-05-01"},
    )
    assert (status["rows_read"], status["rows_created"], status["rows_rejected"]) == (7, 6, 1)
    consents = await _consents(api)
    assert {email: (c or {}).get("marketing") for email, c in consents.items()} == {
        "a@empresa.es": True,
        "b@empresa.es": True,
        "c@empresa.es": False,
        "d@empresa.es": False,
        "e@empresa.es": None,
        "f@empresa.es": None,
    }
    assert consents["a@empresa.es"]["given_at"] == "2024-05-01T00:00:00Z"
    assert consents["a@empresa.es"]["wording_version"] == "rgpd-v2"
    assert consents["c@empresa.es"]["given_at"] == "2024-05-01T00:00:00Z"
    [header, line] = await error_report(api, status)
    assert header == ["row", "column", "field", "reason"]
    assert line[:3] == ["8", "Consentimiento", "consent.marketing"]
    assert "Acepto" in line[3]
    assert "quizá" not in line[3]
    found = await api.get("/v1/leads", params={"consent_marketing": "none"})
    assert {lead["email"] for lead in found.json()["items"]} == {"e@empresa.es", "f@empresa.es"}


async def test_an_import_s_yes_without_wording_names_the_option(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    status = await import_csv(api, worker, b"Correo;Consentimiento\r\na@empresa.es;S\xc3\xad\r\n")
    assert status["rows_rejected"] == 1
    [_, line] = await error_report(api, status)
    assert line[2] == "consent.wording_version"
    assert "consent_wording_version" in line[3]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("ayer", "date_invalid"),
        ("45657", "date_invalid"),
        ("31/02/2024", "date_invalid"),
        ("2024-12-31T25:00:00+01:00", "date_invalid"),
        (20241231, "string_type"),
        ((datetime.now(UTC) + timedelta(days=2)).date().isoformat(), "consent_in_future"),
    ],
)
async def test_a_bad_consent_given_at_is_refused_before_the_upload_is_kept(
    api: httpx.AsyncClient, value: Any, kind: str
) -> None:
    """An option that is no date the import reads, or a time in the future (as the API's
    consent refuses one), is a 422 `import_options_invalid` at the option."""
    response = await post_csv(api, b"Correo\nana@empresa.es\n", {"consent_given_at": value})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "import_options_invalid"
    assert [(e["pointer"], e["type"]) for e in body["errors"]] == [
        ("/options/consent_given_at", kind)
    ]
    if kind == "date_invalid" and value != "31/02/2024":
        assert "31/12/2024" in body["errors"][0]["detail"]


async def test_the_openapi_document_lists_the_option(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    text = str(document["paths"]["/v1/leads/import"]["post"])
    assert "consent_given_at" in text
