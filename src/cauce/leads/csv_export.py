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
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from operator import itemgetter
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
        # (the pattern first: it fails at once on most ids, where the digits are many)
        or (_MONTH_DATE.fullmatch(value) and any(c.isdigit() for c in value))
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


def _json_cell(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _int_cell(value: int) -> str:
    # `neutralise_cell(str(value))`: only a minus sign is a formula character here
    return "'" + str(value) if value < 0 else str(value)


def _float_cell(value: float) -> str:
    return neutralise_cell(str(value))  # `-0.0`, `-inf` and `nan` too


def _any_cell(value: Any) -> str:
    return neutralise_cell(cell_text(value))


# `neutralise_cell(cell_text(value))` by the value's exact type, for the types a lead's
# cells hold, without the calls that cannot change them: a truth value, a time (its year
# first) and JSON (`{`, `[`) never start with a formula character; a number may (`-3`).
_CELL_OF_TYPE: dict[type, Callable[[Any], str]] = {
    bool: lambda value: "true" if value else "false",
    int: _int_cell,
    float: _float_cell,
    datetime: datetime.isoformat,
    date: date.isoformat,
    dict: _json_cell,
    list: _json_cell,
}


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
_QUOTED_CHARACTERS = '",;\t\r\n'
_QUOTE_WHEN = re.compile(f"[{re.escape(_QUOTED_CHARACTERS)}]")
# A text cell's first characters after which `neutralise_cell` may change it: the formula
# characters, and the apostrophe of a text that reads as neutralised already.
_SUSPECT_START = FORMULA_PREFIXES | {"'"}


def _quoted(cell: str) -> str:
    if _QUOTE_WHEN.search(cell) is None:
        return cell
    return '"' + cell.replace('"', '""') + '"'


class _Writer:
    """CSV rows (`_quoted` cells) into a buffer that is handed out in chunks.

    A row is one pass over its cells (plain text, most of them, needs no call at all) and,
    to see whether any cell needs quoting, one search over the joined line rather than
    one a cell: an export writes tens of millions of cells."""

    def __init__(self, delimiter: str, bom: bool) -> None:
        self._parts: list[str] = [_BOM] if bom else []
        self._size = len(self._parts)
        self._delimiter = delimiter
        # The joined line has no cell to quote when it holds none of `_QUOTED_CHARACTERS`
        # but the delimiters themselves (a cell holding the delimiter adds one).
        others = "".join(c for c in _QUOTED_CHARACTERS if c not in delimiter)
        self._special = re.compile(f"[{re.escape(others)}]").search
        self._counted = delimiter in _QUOTED_CHARACTERS and len(delimiter) == 1
        self._plain = self._counted or not any(c in _QUOTED_CHARACTERS for c in delimiter)

    def row(self, cells: Iterable[Any], text: Sequence[int] = ()) -> None:
        """One row; the cells at the indexes `text` are identifiers' (`as_text`)."""
        values = cells if isinstance(cells, list | tuple) else list(cells)
        of_type = _CELL_OF_TYPE.get
        written = [
            (neutralise_cell(v) if v and v[0] in _SUSPECT_START else v)
            if v.__class__ is str
            else ""
            if v is None
            else of_type(v.__class__, _any_cell)(v)
            for v in values
        ]
        for i in text:
            if i < len(written) and values[i] is not None:  # (None is "" either way)
                written[i] = as_text(cell_text(values[i]))
        delimiter = self._delimiter
        line = delimiter.join(written)
        if (
            not self._plain
            or self._special(line) is not None
            or (self._counted and line.count(delimiter) != len(written) - 1)
        ):
            quote = _QUOTE_WHEN.search  # `_quoted`, without a call a cell
            line = delimiter.join(
                ['"' + cell.replace('"', '""') + '"' if quote(cell) else cell for cell in written]
            )
        self._parts.append(line + "\r\n")
        self._size += len(line) + 2

    def stream(self, rows: Iterable[Iterable[Any]], text: Sequence[int] = ()) -> Iterator[bytes]:
        """Write `rows` (`row`), handing out what is buffered as it fills, then the rest."""
        for cells in rows:
            self.row(cells, text)
            chunk = self.take()
            if chunk:
                yield chunk
        last = self.take(force=True)
        if last:
            yield last

    def take(self, *, force: bool = False) -> bytes | None:
        """What is buffered, encoded, once it reaches `_FLUSH_BYTES` characters (or
        whatever there is, with `force`)."""
        if not force and self._size < _FLUSH_BYTES:
            return None
        data = "".join(self._parts).encode("utf-8", "surrogatepass")
        self._parts.clear()
        self._size = 0
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
    text = tuple(i for i, column in enumerate(columns) if column in text_columns)
    if header:
        writer.row(columns)
    yield from writer.stream(
        ((_lookup(record, column) for column in columns) for record in records), text
    )


# The lead attribute an export column is read from, where the names differ: `id` is the
# public id. A dotted column (`utm.source`) reads a key of the attribute before the dot;
# `duplicate_of` is the public id of the live lead the lead is held against.
_ATTRIBUTE_OF = {"id": "uid", "is_disposable_email": "email_disposable",
                 "is_free_email": "email_free"}  # fmt: skip


def _export_reads() -> tuple[str, ...]:
    reads = ["id", "possible_duplicate_of"]
    for column in EXPORT_COLUMNS:
        name = _ATTRIBUTE_OF.get(column, column.partition(".")[0])
        if column != "duplicate_of" and name not in reads:
            reads.append(name)
    return tuple(reads)


# What `lead_export` reads of each lead (`Lead` attributes), in this order: its row id,
# the row id of the lead it is held against, then what `EXPORT_COLUMNS` show.
EXPORT_READS: tuple[str, ...] = _export_reads()


def _key_of(value: Any, key: str) -> Any:
    # `_lookup`'s step into a value that is not a dict (a JSON column holds any JSON)
    if value is None:
        return None
    return value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)


def lead_export(
    rows: Iterable[Sequence[Any]],
    live_uids: Mapping[int, str],
    *,
    delimiter: str = ",",
    bom: bool = True,
    header: bool = True,
) -> Iterator[bytes]:
    """The lead export's CSV byte chunks (`GET /v1/leads/export.csv`): what `csv_export`
    writes of the leads with `EXPORT_COLUMNS` and `EXPORT_TEXT_COLUMNS`, read from rows of
    `EXPORT_READS` rather than from ORM objects (an export reads every lead). A held
    lead's `duplicate_of` is its lead's public id in `live_uids` (none when that lead is
    not there: erased). A long export calls this per page with `header=False, bom=False`
    after the first."""
    index = {name: i for i, name in enumerate(EXPORT_READS)}
    # A row's values in this order: the columns it holds as they are, the keys of its
    # JSON values (`utm.source`), its other contacts and the lead it is held against;
    # `arrange` puts them in the order of the columns.
    contacts = ("other_emails", "other_phones")
    keyed = [column for column in EXPORT_COLUMNS if "." in column]
    given = [c for c in EXPORT_COLUMNS if c not in (*keyed, *contacts, "duplicate_of")]
    pick = itemgetter(*(index[_ATTRIBUTE_OF.get(column, column)] for column in given))
    keys = [(index[name], key) for name, _, key in (c.partition(".") for c in keyed)]
    place = {c: i for i, c in enumerate([*given, *keyed, *contacts, "duplicate_of"])}
    arrange = itemgetter(*(place[column] for column in EXPORT_COLUMNS))
    emails, phones = index["other_emails"], index["other_phones"]
    held_at = index["possible_duplicate_of"]
    text = tuple(i for i, column in enumerate(EXPORT_COLUMNS) if column in EXPORT_TEXT_COLUMNS)
    live_uid = live_uids.get
    writer = _Writer(delimiter, bom)
    if header:
        writer.row(EXPORT_COLUMNS)

    def cells(row: Sequence[Any]) -> Any:  # (`arrange`'s tuple)
        values = [
            value.get(key) if (value := row[i]).__class__ is dict else _key_of(value, key)
            for i, key in keys
        ]
        return arrange(
            (
                *pick(row),
                *values,
                contacts_cell(row[emails]),
                contacts_cell(row[phones]),
                None if row[held_at] is None else live_uid(row[held_at]),
            )
        )

    yield from writer.stream(map(cells, rows), text)


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
