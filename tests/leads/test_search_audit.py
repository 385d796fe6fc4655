"""The search and export audit's findings (helper-108), on both databases: a repeated
query parameter is refused rather than reduced to its last value; a phone number in `q`
is searched whole, as `+`, `00` or a national number; identifiers that look like numbers
or dates stay text in the export and import back as they were; the list cursor is opaque
and bound to its filters; `owner` is compared composed, `country` must be a country, an
unencoded `+` in a date gets a hint, and an export cut short is logged."""

from __future__ import annotations

import csv
import io
import unicodedata
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from cauce.core.jobs.factory import JobWorker
from cauce.leads import repository_lead as repo_lead
from cauce.leads.csv_export import EXPORT_COLUMNS, EXPORT_TEXT_COLUMNS, as_text, csv_export
from cauce.leads.csv_import import CsvLeadReader
from tests.conftest import SettingsFactory
from tests.leads.api_client import post_lead, serve_app
from tests.leads.import_client import import_csv

MARIA = {"first_name": "María", "last_name": "López", "phone": "+34612345678"}
JOAQUIN = {"first_name": "Joaquín", "last_name": "Sanz", "phone": "+34612038756"}


def _errors(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.text
    return [(e["pointer"], e["type"]) for e in response.json()["errors"]]


async def _found(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get("/v1/leads", params=params)
    assert response.status_code == 200, response.text
    return [lead["id"] for lead in response.json()["items"]]


# 1. Repeated parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/v1/leads", [("status", "new"), ("status", "won")], "status"),
        ("/v1/leads", [("limit", "5"), ("limit", "200")], "limit"),
        ("/v1/leads", [("q", "ana"), ("country", "ES"), ("q", "luis")], "q"),
        ("/v1/leads/export.csv", [("delimiter", ","), ("delimiter", ";")], "delimiter"),
        ("/v1/leads/export.csv", [("status", "new"), ("status", "new")], "status"),
    ],
)
async def test_a_repeated_parameter_is_refused_naming_it(
    api: httpx.AsyncClient, path: str, params: list[tuple[str, str]], name: str
) -> None:
    """A parameter given twice is a 422 naming it (`repeated`, saying to send it once) on
    the list and the export, even with equal values: only the last used to count."""
    await post_lead(api, {"email": "ana@empresa.es", "status": "won"})
    response = await api.get(path, params=tuple(params))
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _errors(response) == [(f"#query/{name}", "repeated")]
    assert "send it once" in response.json()["errors"][0]["detail"]
    single = await api.get(path, params=dict(params))
    assert single.status_code == 200, single.text


async def test_every_repeated_parameter_is_named_and_the_key_is_checked_first(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    """Two repeated parameters give two errors; a request without a key is a 401 first."""
    params = httpx.QueryParams(
        [("status", "new"), ("owner", "a"), ("status", "won"), ("owner", "b")]
    )
    assert _errors(await api.get("/v1/leads", params=params)) == [
        ("#query/status", "repeated"),
        ("#query/owner", "repeated"),
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=leads_app), base_url="http://cauce.test"
    ) as anonymous:
        assert (await anonymous.get("/v1/leads", params=params)).status_code == 401


# 2. Phone numbers in q ----------------------------------------------------------------


async def test_a_phone_number_is_searched_whole(api: httpx.AsyncClient) -> None:
    """`612 34 56 78` finds María's +34612345678 only (its groups used to be searched
    each on its own, anywhere: Joaquín's +34612038756 has them all); `0034...` in any
    spacing, `(+34)`, dots and dashes find her; a name beside the number still counts."""
    maria = (await post_lead(api, MARIA))["id"]
    joaquin = (await post_lead(api, JOAQUIN))["id"]
    for q in (
        "612 34 56 78",
        "612345678",
        "+34 612 34 56 78",
        "0034612345678",
        "0034 612 34 56 78",
        "00 34 612 34 56 78",
        "(+34) 612.34.56.78",
        "612-34-56-78",
        "María 612 34 56 78",
        "612 34 56 78 lopez",
    ):
        assert await _found(api, q=q) == [maria], q
    assert await _found(api, q="Joaquín 612 34 56 78") == []
    assert await _found(api, q="612 03 87 56") == [joaquin]
    # A part of a number is still found (its digits, joined)...
    assert await _found(api, q="+34 612") == [joaquin, maria]
    assert await _found(api, q="612 345") == [maria]
    # ...and two numbers are two conditions, each whole.
    assert await _found(api, q="612 34 56 78 612 03 87 56") == []


def test_phone_runs_leave_short_digit_groups_as_words() -> None:
    """Fewer than six digits without `+` or `00` are words (`5 28`), as before; a number
    counts as one word towards the limit of eight."""
    assert repo_lead.phone_runs("Calle 5 28") == ([], "Calle 5 28")
    assert repo_lead.phone_runs("ana 612 34 56 78 +34 699") == (
        ["612 34 56 78", "+34 699"],
        "ana",
    )
    assert repo_lead.phone_forms("0034 612 34 56 78", "ES") == ["34612345678"]
    assert repo_lead.phone_forms("020 7946 0958", "GB") == ["02079460958", "442079460958"]


async def test_many_digit_groups_of_one_number_are_one_word(api: httpx.AsyncClient) -> None:
    """A number written in nine groups is one of the eight words `q` may hold."""
    await post_lead(api, MARIA)
    response = await api.get("/v1/leads", params={"q": "ana luis 6 1 2 3 4 5 6 7 8"})
    assert response.status_code == 200, response.text


async def test_a_national_number_is_read_in_the_default_region(
    settings_factory: SettingsFactory,
) -> None:
    """With `leads.default_region` GB, a British number as dialled at home (`020 7946
    0958`, its trunk 0 not part of +442079460958) finds the lead; read in Spain (the
    default) it does not."""
    lead = {"email": "tom@example.co.uk", "phone": "+44 20 7946 0958"}
    created = ""
    for region, found in (("GB", True), ("ES", False)):
        settings = settings_factory(
            crm={"provider": "hubspot", "token": "t"},
            jobs={"embedded_worker": False},
            leads={"default_region": region},
        )
        async with serve_app(settings) as (_app, api):  # one database: the lead stays
            created = created or (await post_lead(api, lead))["id"]
            expected = [created] if found else []
            assert await _found(api, q="020 7946 0958") == expected, region
            assert await _found(api, q="+44 20 7946 0958") == [created]


# 3. Identifiers in the export ---------------------------------------------------------

IDENTIFIERS = ["000123", "1234567890123456789", "12/05", "5E3", "HS-1001"]


def _table(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


async def test_identifiers_that_look_like_numbers_stay_text_and_import_back(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """`external_id` and `phone_extension` cells a spreadsheet would read as a number or
    a date (`000123`, 19 digits, `12/05`, `5E3`, `007`) start with a tab, which keeps
    them text in Excel; other identifiers are as stored. Cauce's import trims the tab:
    the export imports back as it was."""
    for n, external_id in enumerate(IDENTIFIERS):
        lead = {"email": f"lead{n}@empresa.es", "external_id": external_id}
        if n == 0:
            lead.update(phone="+34 910 82 40 00", phone_extension="007")
        await post_lead(api, lead)
    exported = await api.get("/v1/leads/export.csv")
    assert exported.status_code == 200, exported.text
    rows = {row["email"]: row for row in _table(exported.content)}
    assert [rows[f"lead{n}@empresa.es"]["external_id"] for n in range(len(IDENTIFIERS))] == [
        "\t000123",
        "\t1234567890123456789",
        "\t12/05",
        "\t5E3",
        "HS-1001",
    ]
    assert rows["lead0@empresa.es"]["phone_extension"] == "\t007"
    assert rows["lead0@empresa.es"]["phone"] == "'+34910824000"
    assert all("\t" not in row["id"] for row in rows.values())

    # Imported again, with other contacts (so that the file makes new leads).
    copy = exported.content.replace(b"@empresa.es", b"@copia.es")
    copy = copy.replace(b"+34910824000", b"+34910824001")
    status = await import_csv(api, worker, copy)
    assert (status["rows_created"], status["rows_rejected"]) == (len(IDENTIFIERS), 0)
    back = {lead["email"]: lead for lead in (await api.get("/v1/leads")).json()["items"]}
    assert [back[f"lead{n}@copia.es"]["external_id"] for n in range(len(IDENTIFIERS))] == (
        IDENTIFIERS
    )
    assert back["lead0@copia.es"]["phone_extension"] == "007"


def test_the_import_reader_takes_the_tab_off_every_text_column() -> None:
    """Through the import's reader alone: each protected cell comes back as stored;
    cells with a formula character keep the apostrophe rule (`-5` is `'-5`) and a whole
    number a spreadsheet keeps as it is (`12`) is written as it is."""
    assert sorted(EXPORT_TEXT_COLUMNS) == ["external_id", "id", "phone_extension"]
    cells = {
        "-5": "'-5",
        "+34": "'+34",
        "'=x": "''=x",
        "": "",
        "ABC-12": "ABC-12",
        "12": "12",
        "12345678901": "12345678901",
        "123456789012": "\t123456789012",
        "0": "0",
        "01": "\t01",
        "1-ene": "\t1-ene",
        "true": "\ttrue",
    }
    assert {value: as_text(value) for value in cells} == cells
    records = [
        {"email": f"l{n}@empresa.es", "external_id": value, "phone": "+34612345678"}
        for n, value in enumerate([*IDENTIFIERS, "-5", "MAR1", "10:30", "50%", "12"])
    ]
    records[0]["phone_extension"] = "007"
    data = b"".join(csv_export(records, EXPORT_COLUMNS, text_columns=EXPORT_TEXT_COLUMNS))
    rows = list(CsvLeadReader().rows([data]))
    assert [row.error for row in rows] == [None] * len(records)
    assert [row.data["external_id"] for row in rows] == [r["external_id"] for r in records]
    assert rows[0].data["phone_extension"] == "007"


# 4. The cursor ------------------------------------------------------------------------


async def test_the_cursor_is_bound_to_its_filters(api: httpx.AsyncClient) -> None:
    """A cursor pages only the search that gave it: with other filters it is a 422
    `cursor_mismatch` (it used to skip leads silently), edited or numeric it is
    `cursor_invalid`; the same filters (in any spelling) and another page size go on."""
    ids = []
    for n, (status, country) in enumerate(
        [("lost", "MX"), ("new", "MX"), ("lost", "ES"), ("new", "MX"), ("lost", "MX")]
    ):
        lead = {"email": f"c{n}@empresa.es", "status": status, "country": country}
        ids.append((await post_lead(api, lead))["id"])
    first = await api.get("/v1/leads", params={"status": "lost", "limit": 1})
    cursor = first.json()["next_cursor"]
    assert first.json()["items"][0]["id"] == ids[4]
    assert not cursor.isdigit()

    again = await api.get("/v1/leads", params={"status": "lost", "limit": 5, "cursor": cursor})
    assert [lead["id"] for lead in again.json()["items"]] == [ids[2], ids[0]]
    assert again.json()["next_cursor"] is None

    other = await api.get("/v1/leads", params={"country": "MX", "cursor": cursor})
    assert _errors(other) == [("#query/cursor", "cursor_mismatch")]
    assert "other filters" in other.json()["errors"][0]["detail"]
    none = await api.get("/v1/leads", params={"cursor": cursor})
    assert _errors(none) == [("#query/cursor", "cursor_mismatch")]

    mx = await api.get("/v1/leads", params={"country": "mx", "limit": 1})
    mx_cursor = mx.json()["next_cursor"]
    same = await api.get("/v1/leads", params={"country": "MX", "cursor": mx_cursor})
    assert [lead["id"] for lead in same.json()["items"]] == [ids[3], ids[1], ids[0]]

    edited = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    for bad in (edited, "3", "0", "", "x" * 500, cursor + "=", cursor + "A", "²"):
        refused = await api.get("/v1/leads", params={"status": "lost", "cursor": bad})
        assert _errors(refused) == [("#query/cursor", "cursor_invalid")], bad


# 5. The small ones --------------------------------------------------------------------


async def test_owner_is_compared_composed(api: httpx.AsyncClient) -> None:
    """A decomposed `Iñaki` (n and a combining tilde) finds the owner stored composed."""
    lead = await post_lead(api, {"email": "o@empresa.es", "owner": "Iñaki Etxeberria"})
    decomposed = unicodedata.normalize("NFD", "Iñaki Etxeberria")
    assert decomposed != "Iñaki Etxeberria"
    assert await _found(api, owner=decomposed) == [lead["id"]]
    export = await api.get("/v1/leads/export.csv", params={"owner": decomposed})
    assert "o@empresa.es" in export.text


@pytest.mark.parametrize("path", ["/v1/leads", "/v1/leads/export.csv"])
async def test_country_must_be_a_country(api: httpx.AsyncClient, path: str) -> None:
    """`country=XX` is a 422 as a bad status is (it found nothing); `es` is ES."""
    lead = await post_lead(api, {"email": "p@empresa.es", "country": "ES"})
    for code in ("XX", "ZZ", "1A"):
        response = await api.get(path, params={"country": code})
        assert _errors(response) == [("#query/country", "country_unknown")], code
    assert (await api.get(path, params={"country": "es"})).status_code == 200
    assert await _found(api, country="es") == [lead["id"]]


async def test_created_after_is_inclusive_and_created_before_exclusive(
    api: httpx.AsyncClient,
) -> None:
    """The documented bounds: a lead created at the instant is after it, not before it."""
    lead = await post_lead(api, {"email": "t@empresa.es"})
    created = (await api.get("/v1/leads")).json()["items"][0]["created_at"]
    assert await _found(api, created_after=created) == [lead["id"]]
    assert await _found(api, created_before=created) == []


@pytest.mark.parametrize("name", ["created_after", "created_before"])
async def test_an_unencoded_plus_in_a_date_gets_a_hint(api: httpx.AsyncClient, name: str) -> None:
    """`...T10:00+01:00` sent as typed arrives as `...T10:00 01:00`: its 422 says to send
    the `+` as %2B; sent encoded, it is read."""
    raw = await api.get(f"/v1/leads?{name}=2025-01-01T10:00+01:00")
    assert _errors(raw) == [(f"#query/{name}", "datetime_parsing")]
    assert "%2B" in raw.json()["errors"][0]["detail"]
    encoded = await api.get(f"/v1/leads?{name}=2025-01-01T10:00%2B01:00")
    assert encoded.status_code == 200, encoded.text


async def test_the_openapi_document_describes_the_cursor_and_the_bounds(
    leads_app: FastAPI,
) -> None:
    """The cursor is described as opaque and bound to the filters, the dates' bounds as
    inclusive and exclusive."""
    parameters = {
        p["name"]: p.get("description", "")
        for p in leads_app.openapi()["paths"]["/v1/leads"]["get"]["parameters"]
    }
    assert "opaque" in parameters["cursor"]
    assert "same filters" in parameters["cursor"]
    assert "inclusive" in parameters["created_after"]
    assert "exclusive" in parameters["created_before"]


async def test_an_export_cut_short_is_logged_as_aborted(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the first page (its 200 and rows already sent) is logged as an
    aborted export with the rows sent, not only as an access line with 200."""
    await post_lead(api, {"email": "q@empresa.es"})
    search = repo_lead.search_rows
    calls = 0

    async def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("the database went away")
        return await search(*args, **kwargs)

    monkeypatch.setattr(repo_lead, "search_rows", failing)
    with capture_logs() as logs, pytest.raises(RuntimeError):
        await api.get("/v1/leads/export.csv")
    aborted = [e for e in logs if e["event"] == "leads.export.aborted"]
    assert aborted == [
        {
            "event": "leads.export.aborted",
            "log_level": "error",
            "reason": "error",
            "error": "RuntimeError",
            "rows": 1,
        }
    ]
