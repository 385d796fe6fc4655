"""A CSV whose header row repeats a header (`Teléfono;Teléfono`, `Notas;notas`: equal once
case, accents and punctuation are folded), through `POST /v1/leads/import` on both
databases: every column keeps its own identity by position.

- Of a repeated header left to the defaults, only the first column fills its default
  field; the others become custom fields of their own (`telefono`, `notas_2`), never
  joined into or overwriting another value.
- The import status lists every column once, in file order, a repeated header's columns
  labelled with their position (`Teléfono (column 4)`); the error report names the
  column an error came from by that label.
- A mapping entry naming a repeated header is a 422 pointing at `/options/mapping/<header>` that
  gives the columns; an entry may name one of those columns by its label instead.

Before this, the status kept one entry per distinct header (the phone column vanished
behind the custom field of its twin), a phone error was reported with no column, two
`Apellidos` columns were joined into one surname, and `{"Teléfono": null}` dropped both
columns."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from cauce.core.jobs.factory import JobWorker
from cauce.leads.csv_columns import column_labels, plan_columns
from cauce.leads.csv_headers import MULTI_COLUMN_TARGETS, fold_header
from cauce.leads.csv_mapping import check_mapping
from cauce.leads.errors import ImportMappingInvalid
from tests.leads.import_client import error_report, import_csv, post_csv

PROBLEM = "application/problem+json"
HEADER = "Nombre;Email;Teléfono;Teléfono;Notas;notas;Apellidos;Apellidos"
COLUMNS = [
    {"column": "Nombre", "field": "first_name"},
    {"column": "Email", "field": "email"},
    {"column": "Teléfono (column 3)", "field": "phone"},
    {"column": "Teléfono (column 4)", "field": "custom_fields.telefono"},
    {"column": "Notas (column 5)", "field": "custom_fields.notas"},
    {"column": "notas (column 6)", "field": "custom_fields.notas_2"},
    {"column": "Apellidos (column 7)", "field": "last_name"},
    {"column": "Apellidos (column 8)", "field": "custom_fields.apellidos"},
]


async def _lead(api: httpx.AsyncClient, email: str) -> dict[str, Any]:
    found = await api.get("/v1/leads", params={"q": email})
    assert found.status_code == 200, found.text
    items = [lead for lead in found.json()["items"] if lead["email"] == email]
    assert len(items) == 1, found.json()
    lead: dict[str, Any] = items[0]
    return lead


def _refusal(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["code"] == "import_mapping_invalid"
    errors: list[dict[str, str]] = body["errors"]
    return errors


# --- through the API, on both databases ----------------------------------------------------


async def test_each_column_of_a_repeated_header_keeps_its_own_value(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """The first `Teléfono` is the phone and the second a custom field; `Notas` and
    `notas` are two custom fields; two `Apellidos` are not joined: the first is the
    surname, the second a custom field. Nothing is merged, overwritten or dropped, and
    the status lists all eight columns in file order, each once."""
    data = (
        f"{HEADER}\n"
        "Ana;ana@empresa.es;612345678;699887766;uno;dos;García;López\n"
        "Luis;luis@empresa.es;612000111;;tres;;Pérez;\n"
    ).encode()
    status = await import_csv(api, worker, data)
    assert status["columns"] == COLUMNS
    assert (status["rows_read"], status["rows_created"], status["rows_rejected"]) == (2, 2, 0)
    ana = await _lead(api, "ana@empresa.es")
    assert (ana["first_name"], ana["last_name"], ana["phone"]) == ("Ana", "García", "+34612345678")
    assert ana["custom_fields"] == {
        "telefono": "699887766",
        "notas": "uno",
        "notas_2": "dos",
        "apellidos": "López",
    }
    luis = await _lead(api, "luis@empresa.es")
    assert (luis["last_name"], luis["phone"]) == ("Pérez", "+34612000111")
    assert luis["custom_fields"] == {"notas": "tres"}


async def test_the_error_report_names_the_column_of_a_repeated_header_an_error_came_from(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """An error in the first `Teléfono` names `Teléfono (column 3)`; one in the second
    `notas` column (a custom value over the size bound) names `notas (column 6)`; a cell
    with undecodable bytes in the second `Teléfono` names `Teléfono (column 4)`."""
    long_note = "n" * 1100
    text = (
        f"{HEADER}\n"
        "Ana;ana@empresa.es;12;699887766;uno;dos;García;López\n"
        f"Luis;luis@empresa.es;612000111;;tres;{long_note};Pérez;\n"
    )
    data = text.encode() + b"Eva;eva@empresa.es;612000222;6\xff9;;;Ruiz;\n"
    status = await import_csv(api, worker, data)
    assert status["columns"] == COLUMNS
    assert (status["rows_read"], status["rows_rejected"]) == (3, 3)
    lines = await error_report(api, status)
    assert [line[:3] for line in lines] == [
        ["row", "column", "field"],
        ["2", "Teléfono (column 3)", "phone"],
        ["3", "notas (column 6)", "custom_fields.notas_2"],
        ["4", "Teléfono (column 4)", "custom_fields.telefono"],
    ]
    assert lines[3][3].startswith("the cell has bytes that are not valid utf-8; ")


@pytest.mark.parametrize(
    ("mapping", "header", "columns"),
    [
        ({"Teléfono": "phone"}, "Teléfono", "'Teléfono' in columns 3 and 4"),
        ({"TELEFONO": None}, "TELEFONO", "'Teléfono' in columns 3 and 4"),
        (
            {"notas": "custom_fields.comentarios"},
            "notas",
            "'Notas' in column 5 and 'notas' in column 6",
        ),
        ({"Apellidos": "last_name"}, "Apellidos", "'Apellidos' in columns 7 and 8"),
    ],
)
async def test_a_mapping_naming_a_repeated_header_is_refused_giving_the_columns(
    leads_app: FastAPI,
    api: httpx.AsyncClient,
    mapping: dict[str, str | None],
    header: str,
    columns: str,
) -> None:
    """Whatever its target (a field, null, a custom field, a name field that could be
    joined), an entry naming a header the file repeats cannot say which column it means:
    a 422 problem whose error points at the entry, gives the columns and their labels;
    the upload is not kept."""
    data = f"{HEADER}\nAna;ana@empresa.es;612345678;;;;García;\n".encode()
    errors = _refusal(await post_csv(api, data, {"mapping": mapping}))
    assert len(errors) == 1
    assert errors[0]["pointer"] == f"/options/mapping/{header}"
    assert errors[0]["type"] == "mapping_column_ambiguous"
    assert f"the file has {columns}" in errors[0]["detail"]
    assert "(column " in errors[0]["detail"]  # the labels that would name one column
    imports_dir = leads_app.state.resources.settings.data_dir / "imports"
    assert not imports_dir.exists() or list(imports_dir.iterdir()) == []


async def test_a_mapping_may_name_a_repeated_header_s_column_by_its_label(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """The labels the status shows are mapping keys (compared folded like headers): with
    the first `Teléfono` sent to a custom field, the second, now the first of that header
    left to the defaults, is the phone; a column may be skipped and another sent where
    the user wants. An error then names the column the phone came from."""
    mapping: dict[str, str | None] = {
        "telefono (COLUMN 3)": "custom_fields.fijo",
        "Notas (column 5)": None,
        "Apellidos (column 8)": "custom_fields.segundo_apellido",
    }
    data = (
        f"{HEADER}\n"
        "Ana;ana@empresa.es;954112233;612345678;uno;dos;García;López\n"
        "Luis;luis@empresa.es;954000111;12;tres;cuatro;Pérez;Ruiz\n"
    ).encode()
    status = await import_csv(api, worker, data, {"mapping": mapping})
    assert status["columns"] == [
        {"column": "Nombre", "field": "first_name"},
        {"column": "Email", "field": "email"},
        {"column": "Teléfono (column 3)", "field": "custom_fields.fijo"},
        {"column": "Teléfono (column 4)", "field": "phone"},
        {"column": "Notas (column 5)", "field": None},
        {"column": "notas (column 6)", "field": "custom_fields.notas"},
        {"column": "Apellidos (column 7)", "field": "last_name"},
        {"column": "Apellidos (column 8)", "field": "custom_fields.segundo_apellido"},
    ]
    ana = await _lead(api, "ana@empresa.es")
    assert (ana["phone"], ana["last_name"]) == ("+34612345678", "García")
    assert ana["custom_fields"] == {
        "fijo": "954112233",
        "notas": "dos",
        "segundo_apellido": "López",
    }
    lines = await error_report(api, status)
    assert [line[:3] for line in lines[1:]] == [["3", "Teléfono (column 4)", "phone"]]


async def test_with_unknown_columns_ignored_the_later_columns_show_as_ignored(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """`unknown_columns: ignore` drops the later columns of a repeated header as it drops
    any column no field claims, and the status says so for each of them."""
    data = f"{HEADER}\nAna;ana@empresa.es;612345678;699887766;uno;dos;García;López\n".encode()
    status = await import_csv(api, worker, data, {"unknown_columns": "ignore"})
    assert [c["field"] for c in status["columns"]] == [
        "first_name", "email", "phone", None, None, None, "last_name", None,
    ]  # fmt: skip
    assert [c["column"] for c in status["columns"]] == [c["column"] for c in COLUMNS]
    ana = await _lead(api, "ana@empresa.es")
    assert (ana["phone"], ana["last_name"], ana["custom_fields"]) == ("+34612345678", "García", {})


async def test_a_repeated_header_past_the_probed_start_fails_the_import_saying_why(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A header row longer than the probed start is planned by the job: an entry naming
    a repeated header then fails the import (not a 500), its detail naming the entry and
    the columns."""
    long = "Notas " + "x" * 70_000
    data = f"email;Teléfono;{long};teléfono\na@empresa.es;612345678;x;699887766\n".encode()
    response = await post_csv(api, data, {"mapping": {"Teléfono": "phone"}})
    assert response.status_code == 202, response.text
    await worker.run_until_idle(60)
    status = (await api.get(f"/v1/leads/import/{response.json()['id']}")).json()
    assert (status["state"], status["rows_read"]) == ("failed", 0)
    assert (
        "/options/mapping/Teléfono: the file has 'Teléfono' in column 2 and 'teléfono' in column 4"
        in (status["detail"])
    )


# --- the column plan, without a database ---------------------------------------------------


def test_labels_position_the_columns_of_a_repeated_header_only() -> None:
    """Unique headers are their own labels; every column of a repeated header (empty
    headers too) gets its position; a header that would read like such a label makes
    the label take its position again, so labels never collide, even folded."""
    assert column_labels(["email", "Notas", "notas", "", ""]) == [
        "email", "Notas (column 2)", "notas (column 3)", "(column 4)", "(column 5)",
    ]  # fmt: skip
    assert column_labels(["Notas", "Notas", "notas column 1"]) == [
        "Notas (column 1) (column 1)", "Notas (column 2)", "notas column 1",
    ]  # fmt: skip
    plan = plan_columns(["Notas", "Notas", "notas column 1"], {"notas column 1": "company"})
    assert plan.targets == ["custom_fields.notas", "custom_fields.notas_2", "company"]


def test_an_entry_matching_two_columns_by_header_and_label_is_refused() -> None:
    """Two entries for one column are refused whether they name it by header or label
    spelled differently, and the check without the file still sees repeated targets."""
    with pytest.raises(ImportMappingInvalid) as info:
        plan_columns(["Tel", "Tel"], {"Tel (column 1)": "phone", "tel column 1": "custom_fields.x"})
    assert [(e["pointer"], e["type"]) for e in info.value.errors] == [
        ("/options/mapping/tel column 1", "mapping_column_repeated")
    ]
    with pytest.raises(ImportMappingInvalid):
        check_mapping({"Tel (column 1)": "phone", "Tel (column 2)": "phone"})
    with pytest.raises(ImportMappingInvalid) as info:
        plan_columns(["Tel", "Tel"], {"Tel (column 3)": "phone"})
    assert info.value.errors[0]["type"] == "mapping_column_unknown"


HEADER_WORDS = st.sampled_from(
    ["Teléfono", "TELEFONO", "teléfono:", "Notas", "notas", "Apellidos", "Primer apellido",
     "Segundo apellido", "Email", "Nombre", "", "???", "Notas (column 1)", "notas column 2",
     "(column 3)", "Sector"]
)  # fmt: skip


@given(headers=st.lists(HEADER_WORDS, min_size=1, max_size=9))
def test_any_header_row_gives_each_column_its_own_label_and_target(headers: list[str]) -> None:
    """For any header row: labels are distinct (folded too, where positioned), one per
    column; each positioned label names its column as a mapping key; no two columns
    share a target but joined name columns of distinct headers; a repeated header's
    columns never share one."""
    plan = plan_columns(headers)
    assert len(plan.labels) == len(plan.targets) == len(headers)
    assert len(set(plan.labels)) == len(headers)
    folded = Counter(fold_header(h) for h in headers)
    for index, (label, header) in enumerate(zip(plan.labels, headers, strict=True)):
        assert (label != header) == (folded[fold_header(header)] > 1)
        if label != header:
            mapped = plan_columns(headers, {label: "custom_fields.elegida"})
            assert mapped.targets[index] == "custom_fields.elegida"
            assert mapped.targets.count("custom_fields.elegida") == 1
    by_target: dict[str, list[str]] = {}
    for header, target in zip(headers, plan.targets, strict=True):
        if target is not None:
            by_target.setdefault(target, []).append(fold_header(header))
    for target, keys in by_target.items():
        assert len(keys) == 1 or (target in MULTI_COLUMN_TARGETS and len(set(keys)) == len(keys))
