"""The CSV reader's audit (reproductions R1-R11): a broken row fails alone and reading
goes on at the next line (a quote never closed, a row or a cell past its limit), a UTF-8
row inside a cp1252 file is read as UTF-8, consent dates are read as spreadsheets write
them, and Excel's `sep=` line is known in the forms Excel and its users give it."""

from __future__ import annotations

import csv
import io
import tracemalloc
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cauce.core.jobs.factory import JobWorker
from cauce.leads import csv_import, csv_records, csv_sniff
from cauce.leads.csv_import import (
    MAX_RECORD_CHARS,
    CsvLeadReader,
    CsvRow,
    ReportLine,
    validate_row,
)
from cauce.leads.errors import ImportFileInvalid
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_batch import validate_lead
from cauce.leads.schemas_requests import ImportOptionsIn


def read_all(data: bytes, chunk: int = 65536, **options: Any) -> tuple[CsvLeadReader, list[CsvRow]]:
    reader = CsvLeadReader(**options)
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return reader, list(reader.rows(chunks))


def report_lines(row: CsvRow, reader: CsvLeadReader) -> list[ReportLine]:
    assert reader.plan is not None
    outcome = validate_row(row, reader.plan)
    assert isinstance(outcome, list), outcome
    return outcome


def errors_of(rows: list[CsvRow]) -> list[tuple[int, str, int | None]]:
    return [(r.number, r.error, r.cell) for r in rows if r.error is not None]


def stray_quote_file(rows: int, stray: int, filler: str = "") -> bytes:
    """The audit's R1: a comma CSV whose data row `stray` (0-based) has a company cell
    opening a quote it never closes."""
    lines = ["Nombre,Correo,Empresa"] + [
        f"Persona{i} Stray,stray{i}@ejst{i}.es,"
        + ('"Bar El Tío' if i == stray else f"Empresa{i}{filler}")
        for i in range(rows)
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


# --- 1. a quote never closed ------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [7, 1000, 65536, 1 << 30])
def test_a_quote_never_closed_fails_its_line_and_every_other_row_is_read(chunk: int) -> None:
    """R1: 8,000 rows, row 51's company opening a quote never closed: row 51 alone fails,
    naming the column, and rows 2-8001 all come out with their spreadsheet numbers,
    however the file is chunked."""
    _, rows = read_all(stray_quote_file(8000, 49), chunk)
    assert [r.number for r in rows] == list(range(2, 8002))
    [(number, error, cell)] = errors_of(rows)
    assert (number, cell) == (51, 2)
    assert error.startswith("a quote opened in column 'Empresa' is never closed")
    assert rows[50].data["company"] == "Empresa50"
    assert rows[-1].data["email"] == "stray7999@ejst7999.es"


def test_a_quote_the_file_never_closes_fails_its_line_only() -> None:
    """R1b: in a small file the rows after the stray quote (fewer than the line limit)
    are read too; the reason says the file ends first."""
    _, rows = read_all(stray_quote_file(8, 2))
    assert [r.number for r in rows] == list(range(2, 10))
    [(number, error, _)] = errors_of(rows)
    assert number == 4
    assert "is never closed (the file ends first)" in error


def test_a_stray_quote_with_megabytes_after_it_fails_its_line_only() -> None:
    """R1 with more than a row's limit of text after the stray quote: the import used to
    fail at row 1; now the stray line fails and the rest is read."""
    data = stray_quote_file(8000, 49, filler="x" * 200)
    assert len(data) > 1.5 * MAX_RECORD_CHARS
    _, rows = read_all(data)
    assert len(rows) == 8000
    assert [number for number, _, _ in errors_of(rows)] == [51]


def test_a_stray_quote_closed_by_a_later_cell_s_opening_quote_fails_its_line_only() -> None:
    """A later quoted cell's opening quote (followed by text, not a delimiter) does not
    close the stray one: the rows between are read, and that cell too."""
    lines = ["email;empresa;notas", 'a@b.es;"Bar El Tío;x']
    lines += [f"r{i}@b.es;Empresa {i};x" for i in range(5)]
    lines += ['z@b.es;"Foo; S.L.";"dos\r\nlíneas"', "y@b.es;Fin;x"]
    _, rows = read_all(("\r\n".join(lines) + "\r\n").encode(), chunk=16)
    assert [r.number for r in rows] == list(range(2, 10))
    assert [number for number, _, _ in errors_of(rows)] == [2]
    assert "followed by other text" in (rows[0].error or "")
    assert rows[6].data["company"] == "Foo; S.L."
    assert rows[6].data["custom_fields"] == {"notas": "dos\r\nlíneas"}


def test_quoted_cells_of_a_few_lines_are_read_and_one_past_the_line_limit_is_not() -> None:
    """A note of `MAX_CELL_LINES` lines is one cell; one line more and its quote is taken
    for one never closed: the row fails and the note's lines are read as rows."""
    limit = csv_import.MAX_CELL_LINES
    for lines, failed in ((limit, False), (limit + 1, True)):
        note = "\n".join(f"línea {i}" for i in range(lines + 1))
        data = f'email;notas\na@b.es;"{note}"\nz@b.es;fin\n'.encode()
        _, rows = read_all(data, chunk=100)
        if not failed:
            assert errors_of(rows) == []
            assert rows[0].data["custom_fields"] == {"notas": note}
            assert [r.number for r in rows] == [2, 3]
        else:
            assert rows[0].error is not None
            assert f"at most {limit} line breaks" in rows[0].error
            assert rows[-1].data == {
                "source": "csv",
                "email": "z@b.es",
                "custom_fields": {"notas": "fin"},
            }


def test_a_header_with_a_quote_never_closed_makes_the_file_unreadable() -> None:
    """The header row cannot be skipped: a quote it never closes fails the file."""
    with pytest.raises(ImportFileInvalid, match="header row cannot be read: a quote opened"):
        read_all(b'email;"notas\na@b.es;x\n')


NOTE = st.text(alphabet=st.sampled_from(list('ab ñ"')), max_size=6)


@given(
    table=st.lists(st.lists(NOTE, min_size=3, max_size=3), min_size=1, max_size=15),
    stray=st.integers(min_value=0, max_value=15),
    chunk=st.integers(min_value=1, max_value=60),
    terminator=st.sampled_from(["\r\n", "\n", "\r"]),
)
@settings(max_examples=200, deadline=None)
def test_a_stray_quote_fails_only_its_own_line_property(
    table: list[list[str]], stray: int, chunk: int, terminator: str
) -> None:
    """Whatever the rows around it (cells with quotes of their own, written as a
    spreadsheet writes them), a line opening a quote it never closes fails alone, and
    every other row comes out as written, numbered as a spreadsheet numbers it."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";", lineterminator=terminator)
    writer.writerow(["email", "nombre", "empresa"])
    for cells in table[:stray]:
        writer.writerow(cells)
    out.write(f'stray@b.es;Ana;"Bar El Tío{terminator}')
    for cells in table[stray:]:
        writer.writerow(cells)
    _, rows = read_all(out.getvalue().encode(), chunk=chunk, delimiter=";")
    stray = min(stray, len(table))
    expected = []
    for index, cells in enumerate(table):
        number = index + 2 if index < stray else index + 3
        if "".join(cells).strip():
            fields = dict(
                zip(["email", "first_name", "company"], [c.strip() for c in cells], strict=True)
            )
            expected.append((number, {"source": "csv", **{k: v for k, v in fields.items() if v}}))
    got = [(r.number, r.data) for r in rows if r.error is None]
    assert got == expected
    assert [(number, cell) for number, _, cell in errors_of(rows)] == [(stray + 2, 2)]


PIECES = st.sampled_from(
    [b'"', b'""', b";", b"\r\n", b"\n", b"\r", b"a", b"b@c.es", b"x" * 50, b"y" * 130, b" ",
     "ñ".encode(), "ñ".encode("cp1252"), "€".encode("cp1252"), b"\x81"]
)  # fmt: skip


@given(
    parts=st.lists(PIECES, max_size=60),
    chunk=st.integers(min_value=1, max_value=90),
    encoding=st.sampled_from([None, "utf-8", "cp1252"]),
)
# A quote never closed past the row limit and the end of the file: read whole, it was
# "the file ends first"; in chunks, "longer than 300 characters" (the limit it reached
# first, which both now say).
@example(parts=[b'"', b"\r\n", b"x" * 50, b"y" * 130, b"y" * 130], chunk=1, encoding="utf-8")
# Past both limits (4 line breaks, then 300 characters): the first reached, in either way.
@example(
    parts=[b'"', b"\n", b"\n", b"\n", b"\n", b"y" * 130, b"y" * 130, b"y" * 130],
    chunk=7,
    encoding=None,
)
@example(
    parts=[b'"', b"\n", b"y" * 130, b"y" * 130, b"y" * 130, b"\n", b"\n", b"\n"],
    chunk=90,
    encoding=None,
)
# A "\r\n" split between two chunks is one line break, not two, when the limits are checked.
@example(parts=[b'"a\r\nb";"q\r\n' + b"y" * 286 + b"\r\n\r\n"], chunk=83, encoding="utf-8")
@settings(max_examples=300, deadline=None)
def test_the_rows_do_not_depend_on_how_the_file_is_chunked(
    parts: list[bytes], chunk: int, encoding: str | None
) -> None:
    """With the limits made small (a row of 300 characters, 3 line breaks in a quoted
    cell, a 40-byte sample), any mix of quotes, line breaks, long runs and bytes of
    either encoding gives the same rows whether the file comes whole or in any chunks,
    numbered in order."""
    small = {
        "MAX_RECORD_CHARS": 300, "MAX_CELL_LINES": 3, "_PIECE_CHARS": 64, "SAMPLE_BYTES": 40,
    }  # fmt: skip
    data = b"email;nombre\n" + b"".join(parts)

    def read(size: int) -> tuple[str, str] | list[CsvRow]:
        try:
            return read_all(data, size, delimiter=";", encoding=encoding)[1]
        except ImportFileInvalid as exc:
            return ("invalid", str(exc))

    with ExitStack() as stack:
        for name, value in small.items():
            stack.enter_context(patch.object(csv_import, name, value))
        for name in ("MAX_RECORD_CHARS", "MAX_CELL_LINES"):
            stack.enter_context(patch.object(csv_records, name, small[name]))
        stack.enter_context(patch.object(csv_sniff, "MAX_CELL_LINES", 3))
        whole = read(len(data))
        assert read(chunk) == whole
    if isinstance(whole, list):
        numbers = [r.number for r in whole]
        assert numbers == sorted(set(numbers))


# --- 2. rows and cells past their limits ------------------------------------------------------


def long_row_file(cell: str) -> bytes:
    rows = "".join(f"Persona{i},lce{i}@ejlce{i}.es\r\n" for i in range(300))
    tail = "Tail,tail@ejlcetail.es,\r\n"
    return f"Nombre,Correo,Notas\r\n{rows}Huge,huge@ejlce.es,{cell}\r\n{tail}".encode()


@pytest.mark.parametrize("chunk", [333, 65536, 1 << 30])
@pytest.mark.parametrize("quoted", [False, True])
def test_a_row_over_the_limit_fails_alone(chunk: int, quoted: bool) -> None:
    """R2: a 2,000,000-character cell (in a column mapped to null) fails its row, naming
    the limit; the rows before and after it are read."""
    cell = '"' + "H" * 2_000_000 + '"' if quoted else "H" * 2_000_000
    _, rows = read_all(long_row_file(cell), chunk, mapping={"Notas": None})
    assert [r.number for r in rows] == list(range(2, 304))
    [(number, error, _)] = errors_of(rows)
    assert number == 302
    assert f"longer than {MAX_RECORD_CHARS} characters, the limit of a row" in error
    assert rows[-1].data == {"source": "csv", "first_name": "Tail", "email": "tail@ejlcetail.es"}


def test_a_row_over_the_limit_is_read_in_bounded_memory() -> None:
    """A 6 MB line is skipped as it streams, never held whole."""
    data = long_row_file("H" * 6_000_000)
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    tracemalloc.start()
    try:
        rows = list(CsvLeadReader().rows(chunks))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rows) == 302
    assert peak < 5 * MAX_RECORD_CHARS


def test_a_cell_over_the_cell_limit_fails_its_row_naming_the_column_unless_ignored() -> None:
    """R10: a 200,000-character cell fails its row naming its column when the column is
    read, and fails nothing when the column is mapped to null."""
    data = (
        "Nombre,Correo,Notas\r\nAna,ana.big@ejbig.es," + "B" * 200_000 + "\r\nEva,eva@b.es,x\r\n"
    ).encode()
    reader, rows = read_all(data)
    [line] = report_lines(rows[0], reader)
    assert (line.row, line.column, line.field) == (2, "Notas", "custom_fields.notas")
    assert (
        line.reason
        == f"the cell is longer than {csv_import.MAX_CELL_CHARS} characters, the limit of a cell"
    )
    assert rows[1].error is None
    _, rows = read_all(data, mapping={"Notas": None})
    assert [r.data for r in rows] == [
        {"source": "csv", "first_name": "Ana", "email": "ana.big@ejbig.es"},
        {"source": "csv", "first_name": "Eva", "email": "eva@b.es"},
    ]


# --- 3. encodings -------------------------------------------------------------------------------


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


# --- 4. consent dates -------------------------------------------------------------------------


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


# --- 5. Excel's sep= line ------------------------------------------------------------------------


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


# --- through the app, on both databases ------------------------------------------------------


async def _run(
    api: httpx.AsyncClient, worker: JobWorker, data: bytes, options: str | None = None
) -> dict[str, Any]:
    form = {"options": options} if options else None
    response = await api.post(
        "/v1/leads/import", files={"file": ("r.csv", data, "text/csv")}, data=form
    )
    assert response.status_code == 202, response.text
    await worker.run_until_idle(120)
    status: dict[str, Any] = (await api.get(f"/v1/leads/import/{response.json()['id']}")).json()
    return status


async def _report(api: httpx.AsyncClient, status: dict[str, Any]) -> list[list[str]]:
    report = (await api.get(status["error_report_url"])).content.decode("utf-8-sig")
    delimiter = report[len("row")]  # the report's delimiter follows the file's
    return list(csv.reader(io.StringIO(report, newline=""), delimiter=delimiter))[1:]


async def test_an_import_with_a_stray_quote_imports_every_other_row(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """R1 through the job: it used to end `succeeded` with 50 rows read and the rest
    gone; now every row is read, the stray line is the one rejected, the others stored."""
    status = await _run(api, worker, stray_quote_file(400, 49))
    assert (status["state"], status["rows_read"], status["rows_rejected"]) == ("succeeded", 400, 1)
    assert status["rows_created"] + status["rows_merged"] + status["rows_held"] == 399
    [[row, column, field, reason]] = await _report(api, status)
    assert (row, column, field) == ("51", "Empresa", "company")
    assert reason.startswith("a quote opened in column 'Empresa' is never closed")
    found = await api.get("/v1/leads", params={"q": "stray399@ejst399.es"})
    assert [lead["company"] for lead in found.json()["items"]] == ["Empresa399"]


async def test_an_import_with_a_row_over_the_limit_imports_the_rows_around_it(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """R2 through the job: it used to fail with 200 rows read; now the long row alone is
    rejected and the 301 others imported."""
    status = await _run(api, worker, long_row_file("H" * 2_000_000), '{"mapping": {"Notas": null}}')
    assert (status["state"], status["rows_read"], status["rows_rejected"]) == ("succeeded", 302, 1)
    [[row, _, _, reason]] = await _report(api, status)
    assert row == "302"
    assert f"longer than {MAX_RECORD_CHARS} characters" in reason
    found = await api.get("/v1/leads", params={"q": "tail@ejlcetail.es"})
    assert len(found.json()["items"]) == 1
