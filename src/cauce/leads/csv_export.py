"""CSV out: `GET /v1/leads/export.csv` and the per-row error report of an import.

Both stream (an iterator of byte chunks, for a streaming response or an object-store
upload) and both neutralise spreadsheet formulas (CSV injection, OWASP): a cell that
starts with `=`, `+`, `-`, `@`, a tab or a carriage return (or their full-width forms,
which some spreadsheets also evaluate) gets a leading apostrophe, so Excel, LibreOffice
and Google Sheets show it as text. Numbers too: an E.164 phone (`+34612345678`) would
otherwise be read as the number 34612345678, its `+` lost. An import reads the
apostrophe back off (`csv_import`), so an export imports as it was (how its columns are
read back: `csv_columns`); a text that starts with apostrophes before such a character
gets one more, so it too comes back as it was.

Identifiers are text however they look: in the export's `EXPORT_TEXT_COLUMNS` a cell a
spreadsheet would change by taking it for a number, a date or a time (`000123` losing its
zeros, `1234567890123456789` rounded, `12/05` becoming a date, `5E3` the number 5000, an
extension `007` becoming 7) starts with a tab (`as_text`), which makes Excel keep it as
text and which an import trims off as it trims every cell (`csv_cells.cell_value`), so it
too comes back as it was. A whole number a spreadsheet keeps as it is (`12`) is left so.
An apostrophe would not do there: an import takes one off only before a formula
character, and `'000123` would come back with it.

Output is UTF-8 with a BOM by default: without it Excel reads UTF-8 as cp1252 and
mangles accents.
"""

from __future__ import annotations

import io
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any

import orjson

from cauce.leads.csv_cells import is_neutralised
from cauce.leads.csv_columns import EXPORT_HEADER_PREFIX
from cauce.leads.csv_import import FORMULA_PREFIXES, ReportLine

_BOM = "\ufeff"
_FLUSH_BYTES = 64 * 1024

REPORT_COLUMNS = ("row", "column", "field", "reason")

# The export's columns: every lead field a person would put in a spreadsheet. The first
# fifteen come first and in this order, as they did before the others were added: an
# import knows the export by them (`csv_columns.is_cauce_export`). New columns go last:
# `score_model` (the model that gave `score`, `points` or `learned-v<N>`: while a learned
# model is active, leads stored before keep their points scores, another scale) too, not
# beside `score`, where it would break those fifteen.
EXPORT_COLUMNS: tuple[str, ...] = (
    *EXPORT_HEADER_PREFIX,
    "external_id", "language", "is_disposable_email", "is_free_email", "utm.source",
    "utm.medium", "utm.campaign", "utm.term", "utm.content", "consent.marketing",
    "consent.given_at", "consent.wording_version", "consent.source", "custom_fields",
    "updated_at", "other_emails", "other_phones", "phone_extension", "team", "duplicate_of",
    "score_model",
)  # fmt: skip
# How `other_emails` and `other_phones` list a lead's other contacts in a cell: a person
# reads `+34612345678; +34699000111` where the stored list is space-separated.
CONTACTS_SEPARATOR = "; "
# The export's columns of identifiers, text however they look (`as_text`). A lead's `id`
# (a UUID) hardly ever looks like a number, but nothing makes it unable to.
EXPORT_TEXT_COLUMNS: frozenset[str] = frozenset({"id", "external_id", "phone_extension"})


def contacts_cell(spaced: str | None) -> str:
    """A stored list of other contacts (space-separated) as an export cell."""
    return CONTACTS_SEPARATOR.join((spaced or "").split())


def neutralise_cell(value: str) -> str:
    """The cell as text a spreadsheet will not evaluate (see the module docstring). A
    text that already reads as neutralised (`'=x`, its apostrophe typed by a person) gets
    one more (`''=x`): an import takes exactly one off (`csv_cells.cell_value`), so
    every text comes back as it was stored."""
    if value and (value[0] in FORMULA_PREFIXES or is_neutralised(value)):
        return "'" + value
    return value


# What a spreadsheet opening a CSV reads as a number, a date, a time or a truth value
# rather than text: digits with number and date punctuation (`000123`, `1.5`, `1,5`,
# `12/05`, `10:30`, `5E3`, `50%`, `(5)`, `$5`), a month name beside digits (`MAR1`,
# `1-ene`, `Sept 2`) and TRUE or FALSE. Broad on purpose: a cell it takes for one needlessly
# only gains a tab.
_NUMBER_LIKE = re.compile(r"[\s.,:/()%$€£+\-]*\d[\d\s.,:/()%$€£+\-eE]*")
# (English, Spanish and Portuguese abbreviations: the spreadsheets of Spain and the Americas)
_MONTHS = "jan|ene|feb|fev|mar|apr|abr|may|mai|jun|jul|aug|ago|sep|set|oct|out|nov|dec|dic|dez"
_MONTH_DATE = re.compile(
    rf"(?:\d{{1,4}}[\s./-]*)?(?:{_MONTHS})[a-zé]*\.?(?:[\s./-]*\d{{1,4}}){{0,2}}", re.IGNORECASE
)
_TRUTH = frozenset({"true", "false", "verdadero", "falso"})
# A whole number a spreadsheet shows and saves back as it was: no leading zero, and at
# most 11 digits (Excel's General format shows 12 or more in scientific notation, and a
# CSV saved from it keeps that: `1.23457E+11`).
_KEPT_NUMBER = re.compile(r"0|[1-9]\d{0,10}")


def as_text(value: str) -> str:
    """A cell of an identifier column (`EXPORT_TEXT_COLUMNS`): neutralised as any cell,
    and else, when a spreadsheet would read it as a number, a date, a time or a truth
    value and change it (a whole number it keeps as it is aside), after a tab that keeps
    it text (see the module docstring)."""
    neutralised = neutralise_cell(value)
    if neutralised != value or not value or _KEPT_NUMBER.fullmatch(value):
        return neutralised
    looks = (
        _NUMBER_LIKE.fullmatch(value)
        or (any(c.isdigit() for c in value) and _MONTH_DATE.fullmatch(value))
        or value.casefold() in _TRUTH
    )
    return "\t" + value if looks else value


def cell_text(value: Any) -> str:
    """A Python value as CSV cell text (before neutralising)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
    return str(value)


def _lookup(record: Mapping[str, Any] | object, column: str) -> Any:
    value: Any = record
    for part in column.split("."):
        if value is None:
            return None
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
    return value


# A cell holding any of these is quoted, whatever the file's delimiter. The csv module
# quotes only for the delimiter it writes, but Excel splits a `.csv` opened by double
# click on the locale's list separator: `;` in Spain and most of Latin America. There an
# unquoted `a;=1+1;b` in a comma file becomes three cells, the middle one a formula that
# `neutralise_cell`, which sees the cell's start only, never saw.
_QUOTE_WHEN = re.compile(r'[",;\t\r\n]')


def _quoted(cell: str) -> str:
    if _QUOTE_WHEN.search(cell) is None:
        return cell
    return '"' + cell.replace('"', '""') + '"'


class _Writer:
    """CSV rows (`_quoted` cells) into a buffer that is handed out in chunks."""

    def __init__(self, delimiter: str, bom: bool) -> None:
        self._buffer = io.StringIO()
        self._delimiter = delimiter
        if bom:
            self._buffer.write(_BOM)

    def row(self, cells: Iterable[Any], text: Sequence[bool] = ()) -> None:
        """One row; a cell whose `text` flag is set is an identifier's (`as_text`)."""
        written = (
            as_text(cell_text(c)) if i < len(text) and text[i] else neutralise_cell(cell_text(c))
            for i, c in enumerate(cells)
        )
        self._buffer.write(self._delimiter.join(_quoted(cell) for cell in written) + "\r\n")

    def take(self, *, force: bool = False) -> bytes | None:
        if not force and self._buffer.tell() < _FLUSH_BYTES:
            return None
        data = self._buffer.getvalue().encode("utf-8", "surrogatepass")
        self._buffer.seek(0)
        self._buffer.truncate()
        return data


def csv_export(
    records: Iterable[Mapping[str, Any] | object],
    columns: Sequence[str] = EXPORT_COLUMNS,
    *,
    delimiter: str = ",",
    bom: bool = True,
    header: bool = True,
    text_columns: Collection[str] = (),
) -> Iterator[bytes]:
    """Stream records (dicts, ORM rows, pydantic models) as CSV byte chunks.

    A column may be dotted (`utm.source`) to reach a nested value; dicts and lists become
    JSON text (`custom_fields`). Every cell, header included, is neutralised; a cell of
    one of `text_columns` is kept text however it looks (`as_text`; the lead export
    passes `EXPORT_TEXT_COLUMNS`). A long export read page by page calls this per page
    with `header=False, bom=False` after the first.
    """
    writer = _Writer(delimiter, bom)
    text = tuple(column in text_columns for column in columns)
    if header:
        writer.row(columns)
    for record in records:
        writer.row((_lookup(record, column) for column in columns), text)
        chunk = writer.take()
        if chunk:
            yield chunk
    last = writer.take(force=True)
    if last:
        yield last


class ErrorReportWriter:
    """Writes the per-row error report (`row, column, field, reason`) to a binary file.

    `GET /v1/leads/import/{id}/errors.csv` writes it page by page as it reads the stored
    lines, handing on what each page wrote, so the report never sits in memory; `count`
    says how many lines it holds. It uses the import's delimiter, so the spreadsheet that
    opened the upload opens the report the same way: a Spanish Excel splits a `.csv` on
    `;`, where a comma report would open in one column.
    """

    # The delimiters whose cells `_quoted` always quotes when they hold one. Any other
    # (`|`), or none (the import failed before its format was known), gives commas.
    DELIMITERS = (",", ";", "\t")

    def __init__(
        self, out: io.BufferedIOBase | Any, *, delimiter: str | None = ",", bom: bool = True
    ):
        self._out = out
        self.delimiter = delimiter if delimiter in self.DELIMITERS else ","
        self._writer = _Writer(self.delimiter, bom)
        self._writer.row(REPORT_COLUMNS)
        self.count = 0

    def write(self, lines: Iterable[ReportLine]) -> None:
        """Append report lines."""
        for line in lines:
            self._writer.row((line.row, line.column, line.field, line.reason))
            self.count += 1
        chunk = self._writer.take()
        if chunk:
            self._out.write(chunk)

    def close(self) -> None:
        """Flush what is buffered (the caller closes the file)."""
        chunk = self._writer.take(force=True)
        if chunk:
            self._out.write(chunk)
