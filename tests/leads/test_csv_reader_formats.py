"""The CSV reader's audit, continued (reproductions R3-R5, R9): how the reader reads what
spreadsheets write. A UTF-8 row inside a cp1252 file is read as UTF-8, each line in its
own encoding; consent dates are read as spreadsheets write them (and the JSON API keeps
strict ISO 8601); Excel's `sep=` line is known in the forms Excel and its users give it.
Rows that fail alone (a quote never closed, a row or a cell past its limit) are in
test_csv_reader_audit.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cauce.leads import csv_import
from cauce.leads.csv_import import CsvLeadReader, CsvRow, validate_row
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_batch import validate_lead
from cauce.leads.schemas_requests import ImportOptionsIn
from tests.leads.test_csv_reader_audit import read_all, report_lines

# --- 1. encodings -------------------------------------------------------------------------------


def test_a_utf8_row_in_a_cp1252_file_is_read_as_utf8_and_the_file_as_cp1252() -> None:
    """R3: bytes cp1252 leaves undefined (the 0x81 of a UTF-8 "Á") no longer turn the
    file to Latin-1: €, smart quotes and dashes stay, and the UTF-8 row reads right."""
    head = b"Nombre;Correo;Empresa;Presupuesto\r\n"
    rows_1252 = "".join(
        f"Begoña{i};b{i}@ejmixe.es;Peña “La Buena” \u2013 Bar{i};5.000 €\r\n" for i in range(3)
    ).encode("cp1252")
    row_utf8 = "Álvaro;alvaro@ejmixe.es;Ávila S.A.;1.000 €\r\n".encode()
    reader, rows = read_all(head + rows_1252 + row_utf8)
    assert reader.encoding == "cp1252"
    companies = [f"Peña “La Buena” \u2013 Bar{i}" for i in range(3)] + ["Ávila S.A."]
    assert [r.data["company"] for r in rows] == companies
    assert rows[3].data["first_name"] == "Álvaro"
    assert [r.data["custom_fields"]["presupuesto"] for r in rows] == ["5.000 €"] * 3 + ["1.000 €"]


def test_a_cp1252_file_s_undefined_byte_fails_its_row_naming_the_encoding() -> None:
    """A byte cp1252 leaves undefined outside a UTF-8 line fails its row, naming the
    column and the encoding; the other rows keep their €."""
    data = "email;nombre;importe\na@b.es;Begoña;5 €\n".encode("cp1252") + b"c@d.es;Jos\x81;7 \x80\n"
    reader, rows = read_all(data)
    assert reader.encoding == "cp1252"
    assert rows[0].data["custom_fields"] == {"importe": "5 €"}
    assert (rows[1].error, rows[1].cell) == ("the cell has bytes that are not valid cp1252", 1)


def test_an_ascii_start_then_a_utf8_and_a_cp1252_row_in_one_chunk_read_right() -> None:
    """R4: after 64 KiB of ASCII, a UTF-8 row and a cp1252 row in one chunk: the file
    turns cp1252, and the UTF-8 row is still read as UTF-8 (it was "JosÃ©")."""
    pad = "".join(f"Pad{i} Gil,pad{i}@ejmf{i}.es,Co{i}x\r\n" for i in range(2500)).encode()
    data = (
        b"Nombre,Correo,Empresa\r\n" + pad + "José,jose@ejmixf.es,Peña\r\n".encode()
        + "Begoña,begona@ejmixf.es,Muñoz\r\n".encode("cp1252")
    )  # fmt: skip
    reader, rows = read_all(data)
    assert reader.encoding == "cp1252"
    assert [(r.data["first_name"], r.data["company"]) for r in rows[-2:]] == [
        ("José", "Peña"),
        ("Begoña", "Muñoz"),
    ]


def test_a_utf8_row_past_the_sample_of_a_cp1252_file_is_read_as_utf8() -> None:
    """The check is per line, not only in the sample: a UTF-8 row 100 KiB in is read
    right, split across chunks or not."""
    rows_1252 = "".join(f"r{i}@b.es;Peña {i}\n" for i in range(7000)).encode("cp1252")
    data = (
        b"email;empresa\n"
        + rows_1252
        + "u@b.es;Núñez \u2013 “Cía”\n".encode()
        + "z@b.es;Peña 0\n".encode("cp1252")
    )
    for chunk in (1000, 65536):
        _, rows = read_all(data, chunk)
        assert rows[7000].data["company"] == "Núñez \u2013 “Cía”"
        assert rows[0].data["company"] == rows[-1].data["company"] == "Peña 0"


def test_a_cp1252_line_that_happens_to_be_valid_utf8_stays_cp1252() -> None:
    """ "ADIÓS”" is valid UTF-8 (for "ADIӔS"); a character no Western European row holds
    keeps the line cp1252."""
    _, rows = read_all("email;empresa\na@b.es;Peña\nb@c.es;ADIÓS”\n".encode("cp1252"))
    assert rows[1].data["company"] == "ADIÓS”"


SPANISH = st.text(alphabet=st.sampled_from(list("aeñoáéíóúüÁÉÍÓÚÑ¿¡€“”\u2013ºª …;x")), max_size=12)


@given(
    lines=st.lists(st.tuples(SPANISH, st.booleans()), min_size=1, max_size=20),
    chunk=st.integers(min_value=1, max_value=50),
)
@settings(max_examples=200, deadline=None)
def test_each_line_of_a_cp1252_file_reads_back_in_its_own_encoding(
    lines: list[tuple[str, bool]], chunk: int
) -> None:
    """Spanish text, each line written in cp1252 or UTF-8, reads back as written."""
    data = b"email;notas\n" + b"".join(
        f"a{i}@b.es;{text.replace(';', ',')}\n".encode("utf-8" if utf8 else "cp1252")
        for i, (text, utf8) in enumerate(lines)
    )
    _, rows = read_all(data, chunk, encoding="cp1252")
    notes = [r.data.get("custom_fields", {}).get("notas", "") for r in rows]
    assert notes == [text.replace(";", ",").strip() for text, _ in lines]


# --- 2. consent dates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("31/12/2024", datetime(2024, 12, 31, tzinfo=UTC)),
        ("5/1/2024", datetime(2024, 1, 5, tzinfo=UTC)),
        ("31/12/2024 10:30", datetime(2024, 12, 31, 10, 30, tzinfo=UTC)),
        ("31-12-2024 10:30:15", datetime(2024, 12, 31, 10, 30, 15, tzinfo=UTC)),
        ("2024-12-31", datetime(2024, 12, 31, tzinfo=UTC)),
        ("2024-12-31 10:30", datetime(2024, 12, 31, 10, 30, tzinfo=UTC)),
        ("2024-12-31T10:30:00.250", datetime(2024, 12, 31, 10, 30, 0, 250000, tzinfo=UTC)),
        ("20241231", datetime(2024, 12, 31, tzinfo=UTC)),
        ("2024-12-31T10:30:00+01:00", datetime(2024, 12, 31, 9, 30, tzinfo=UTC)),
        ("2024-12-31T10:30:00Z", datetime(2024, 12, 31, 10, 30, tzinfo=UTC)),
    ],
)
def test_consent_dates_are_read_as_spreadsheets_write_them(cell: str, expected: datetime) -> None:
    """R5: day-first, ISO without a zone (UTC) and yyyymmdd dates are the instant they
    say, not 1970 nor a rejection; ISO with an offset is read as before."""
    reader = CsvLeadReader.from_options(ImportOptionsIn(consent_wording_version="v1"))
    rows = list(
        reader.rows(
            [f"Correo,Consentimiento,Fecha consentimiento\r\nd@ejdate.es,Sí,{cell}\r\n".encode()]
        )
    )
    assert reader.plan is not None
    lead = validate_row(rows[0], reader.plan)
    assert isinstance(lead, LeadIn), lead
    assert lead.consent is not None
    assert lead.consent.given_at == expected


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("45657", "is a bare number, not a date"),
        ("1735603200", "is a bare number, not a date"),
        ("20241331", "is a bare number, not a date"),
        ("31/02/2024", "is not a real date or time"),
        ("12/31/2024", "is not a real date or time"),
        ("31/12/24", "is not a date Cauce reads"),
        ("ayer", "is not a date Cauce reads"),
    ],
)
def test_consent_dates_that_are_numbers_or_unknown_fail_their_row_naming_the_formats(
    cell: str, reason: str
) -> None:
    """An epoch or Excel serial (a bare number) or text in no known format fails its row,
    the report naming the column, the field and what to write instead; month-first is
    never guessed."""
    data = f"Correo,Consentimiento,Fecha consentimiento\r\nd@ejdate.es,Sí,{cell}\r\n".encode()
    reader, rows = read_all(data, row_defaults={"consent.wording_version": "v1"})
    [line] = report_lines(rows[0], reader)
    assert (line.row, line.column, line.field) == (2, "Fecha consentimiento", "consent.given_at")
    assert line.reason.startswith(reason)
    if "not a real" not in reason:
        assert "31/12/2024" in line.reason
        assert "20241231" in line.reason
        assert cell not in line.reason


@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    form=st.sampled_from(
        ["%d/%m/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d.%m.%Y %H:%M:%S"]
    ),
)
def test_a_consent_time_without_an_offset_is_that_time_in_utc(moment: datetime, form: str) -> None:
    """Any time written in an accepted form reads back as that time in UTC."""
    moment = moment.replace(microsecond=0)
    read = datetime.fromisoformat(csv_import.read_csv_datetime(moment.strftime(form)))
    assert read == moment.replace(tzinfo=UTC)


def test_the_json_api_keeps_its_strict_iso_8601_consent_time() -> None:
    """Only the CSV reader reads spreadsheet dates: the JSON API still wants an offset."""
    outcome = validate_lead(
        {
            "email": "a@b.es",
            "consent": {"marketing": True, "wording_version": "v1", "given_at": "2024-12-31"},
        }
    )
    assert isinstance(outcome, list)
    assert outcome[0]["pointer"] == "/consent/given_at"


# --- 3. Excel's sep= line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line", ["sep=;", "sep=;;;", '"sep=;"', '"sep=;";;', "SEP=;", "Sep=; ", "sep=;\t"]
)
@pytest.mark.parametrize("terminator", ["\r\n", "\n"])
def test_excel_s_sep_line_is_known_in_its_variants(line: str, terminator: str) -> None:
    """R9: `sep=;;;` (a sheet saved again), `"sep=;"`, `SEP=;`, trailing blanks: each
    names the delimiter and is not the header."""
    data = (
        f"{line}{terminator}Nombre;Correo;Ciudad{terminator}Ana;ana.sep@ejsep.es;Lima{terminator}"
    )
    reader, rows = read_all(data.encode())
    assert reader.format is not None
    assert reader.format.delimiter == ";"
    assert rows == [
        CsvRow(
            2, {"source": "csv", "first_name": "Ana", "email": "ana.sep@ejsep.es", "city": "Lima"}
        )
    ]
