"""The CSV reader's audit (reproductions R1, R2, R10): a broken row fails alone and
reading goes on at the next line (a quote never closed, a row or a cell past its limit),
in the reader and through an import on both databases. How the reader reads what
spreadsheets write (encodings, consent dates, Excel's `sep=` line) is in
test_csv_reader_formats.py."""

from __future__ import annotations

import csv
import io
import tracemalloc
from contextlib import ExitStack
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cauce.core.jobs.factory import JobWorker
from cauce.leads import csv_import, csv_parse, csv_records, csv_sniff
from cauce.leads.csv_import import (
    MAX_RECORD_CHARS,
    CsvLeadReader,
    CsvRow,
    ReportLine,
    validate_row,
)
from cauce.leads.errors import ImportFileInvalid


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
        for name in ("MAX_RECORD_CHARS", "MAX_CELL_LINES", "SAMPLE_BYTES"):
            stack.enter_context(patch.object(csv_import, name, small[name]))
        for name in ("MAX_RECORD_CHARS", "_PIECE_CHARS"):
            stack.enter_context(patch.object(csv_parse, name, small[name]))
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
