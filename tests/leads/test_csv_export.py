"""CSV export and the import's error report: streaming, BOM, neutralised formulas."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cauce.leads.csv_columns import EXPORT_HEADER_PREFIX
from cauce.leads.csv_export import (
    EXPORT_COLUMNS,
    ErrorReportWriter,
    contacts_cell,
    csv_export,
    neutralise_cell,
)
from cauce.leads.csv_import import FORMULA_PREFIXES, CsvLeadReader, ReportLine


def test_error_report_is_a_neutralised_csv_in_the_imports_delimiter() -> None:
    """The report has a BOM, the import's delimiter, and no live formulas."""
    out = io.BytesIO()
    report = ErrorReportWriter(out, delimiter=";")
    report.write([ReportLine(3, "=HYPERLINK()", "email", "is not valid; really")])
    report.close()
    text = out.getvalue().decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=";"))
    assert rows == [
        ["row", "column", "field", "reason"],
        ["3", "'=HYPERLINK()", "email", "is not valid; really"],
    ]
    assert report.count == 1


@pytest.mark.parametrize("first", sorted(FORMULA_PREFIXES))
def test_every_dangerous_first_character_is_neutralised(first: str) -> None:
    """A cell starting with =, +, -, @, tab, CR (or full-width forms) gets an apostrophe."""
    assert neutralise_cell(first + "cmd|' /C calc'!A0") == "'" + first + "cmd|' /C calc'!A0"


def test_formula_prefix_set_covers_owasp_list() -> None:
    """The OWASP CSV-injection characters are all in the neutralised set."""
    assert {"=", "+", "-", "@", "\t", "\r"} <= FORMULA_PREFIXES


@given(st.text(max_size=30))
@settings(deadline=None)
def test_neutralised_cells_never_start_a_formula(text: str) -> None:
    """After neutralising, no cell starts with a dangerous character."""
    cell = neutralise_cell(text)
    if text and text[0] in FORMULA_PREFIXES:
        assert cell == "'" + text
    else:
        assert cell == text


@pytest.mark.parametrize("number", ["+34612345678", "-12.5", "-3", "+1"])
def test_numbers_with_a_sign_are_neutralised_too(number: str) -> None:
    """The issue's rule has no exception: a spreadsheet would read `+34612345678` as the
    number 34612345678 (its `+` lost) and `-3` may open a formula (`-3+cmd|...`)."""
    assert neutralise_cell(number) == "'" + number


def test_an_import_reads_an_export_back() -> None:
    """The apostrophes an export adds come off on import: phones, formulas, numbers."""
    leads = [
        {
            "email": "ana@empresa.es",
            "phone": "+34612345678",
            "company": '=HYPERLINK("http://x")',
            "job_title": "@jefa",
            "city": "-3",
            "region": "'Madrid",
        }
    ]
    columns = ["email", "phone", "company", "job_title", "city", "region"]
    exported = b"".join(csv_export(leads, columns, delimiter=";"))
    assert b";'+34612345678;" in exported
    rows = list(CsvLeadReader().rows([exported]))
    assert rows[0].error is None
    data = rows[0].data
    assert {name: data[name] for name in columns} == leads[0]


def test_csv_export_streams_neutralised_rows() -> None:
    """Export writes a BOM, dotted columns, JSON for dicts and neutralised cells."""
    leads = [
        {
            "id": "l1",
            "email": "a@b.es",
            "company": "=1+2",
            "utm": {"source": "@google"},
            "custom_fields": {"b": 1, "a": "x"},
            "is_free_email": True,
        },
        {"id": "l2", "email": None, "company": "Ñandú", "utm": None, "custom_fields": {}},
    ]
    columns = ["id", "email", "company", "utm.source", "custom_fields", "is_free_email"]
    chunks = list(csv_export(leads, columns, delimiter=";"))
    text = b"".join(chunks).decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=";"))
    assert rows == [
        columns,
        ["l1", "a@b.es", "'=1+2", "'@google", '{"a":"x","b":1}', "true"],
        ["l2", "", "Ñandú", "", "{}", ""],
    ]


def test_csv_export_yields_chunks_as_it_goes() -> None:
    """A large export comes out in several chunks rather than one buffer."""

    def many() -> Iterator[dict[str, str]]:
        for i in range(20_000):
            yield {"id": f"lead_{i}", "email": f"user{i}@empresa.es"}

    chunks = list(csv_export(many(), ["id", "email"], bom=False))
    assert len(chunks) > 5
    assert b"".join(chunks).count(b"\r\n") == 20_001


def test_the_export_keeps_its_first_columns_and_ends_with_the_other_contacts() -> None:
    """The fifteen first columns an import knows the export by stay first; the other
    contacts come after the earlier columns (then the phone extension, the team, the
    lead a held one is held against and the model that gave the score, added later),
    listed with `; ` and neutralised like every cell."""
    assert EXPORT_COLUMNS[: len(EXPORT_HEADER_PREFIX)] == EXPORT_HEADER_PREFIX
    assert EXPORT_COLUMNS[-6:] == (
        "other_emails", "other_phones", "phone_extension", "team", "duplicate_of", "score_model"
    )  # fmt: skip
    assert (contacts_cell(None), contacts_cell("")) == ("", "")
    phones = contacts_cell("+34612345678 +34699000111")
    assert phones == "+34612345678; +34699000111"
    out = b"".join(csv_export([{"other_phones": phones}], ["other_phones"], bom=False))
    # Quoted: a Spanish Excel would split the list on its `;` (see below).
    assert out == b'other_phones\r\n"\'+34612345678; +34699000111"\r\n'


@given(
    st.text(alphabet=st.sampled_from('ab =+-@;,\t"\r\n'), max_size=12),
    st.sampled_from([",", ";"]),
    st.sampled_from([",", ";"]),
)
@settings(max_examples=300, deadline=None)
def test_no_separator_in_a_cell_lets_a_spreadsheet_start_a_formula(
    value: str, delimiter: str, spreadsheet_separator: str
) -> None:
    """Excel opens a `.csv` on the locale's list separator (`;` in Spain), not the file's:
    a cell holding either separator is quoted, so whichever one the spreadsheet splits
    on, every cell it sees is one the export wrote, neutralised, and reads back intact."""
    leads = [{"company": value, "city": "=1+1"}]
    text = b"".join(csv_export(leads, ["company", "city"], delimiter=delimiter, bom=False))
    rows = list(csv.reader(io.StringIO(text.decode(), newline=""), delimiter=spreadsheet_separator))
    cells = [cell for row in rows[1:] for cell in row]
    assert not [cell for cell in cells if cell[:1] in FORMULA_PREFIXES]
    if spreadsheet_separator == delimiter:
        assert rows[1] == [neutralise_cell(value), "'=1+1"]


def test_a_cell_with_the_other_separator_is_quoted() -> None:
    """The audit's case: `a;=1+1;b` in a comma export would be `=1+1` in a cell of its own
    in a Spanish Excel."""
    text = b"".join(csv_export([{"owner": "a;=1+1;b"}], ["owner"], bom=False)).decode()
    assert text == 'owner\r\n"a;=1+1;b"\r\n'
