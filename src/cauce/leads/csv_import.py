"""Streaming CSV reading for `POST /v1/leads/import`.

`CsvLeadReader` is a push parser: `feed(chunk)` returns the rows completed by that
chunk and `close()` the last ones, so the same code serves a file (`rows(file)`), byte
chunks (`rows(chunks)`) and an async upload or object-storage stream (`arows(chunks)`).
Memory stays bounded by the chunk size plus one record, whatever the file size.

- **Encoding**, from the first 64 KiB: a UTF-8 or UTF-16 BOM wins; else UTF-8 if that
  sample has at least as many valid UTF-8 characters as bad bytes, else cp1252 (Excel's
  "CSV" on Spanish Windows; a superset of Latin-1's printable characters), else Latin-1.
  An ASCII-only sample is provisional: if a later byte is not UTF-8, decoding switches to
  cp1252 from that chunk on (the text before was ASCII, the same in both). A character
  split across chunks is kept whole by incremental decoders. Bytes invalid in the chosen
  encoding fail only their row, and only if the cell is in a column that is read; the
  report names that column. (A NUL past the first 4 KiB is left to the schema, which
  drops control characters from text as the JSON API does.)
- **Delimiter**: `,`, `;`, tab or `|`, whichever splits the header into the most
  columns while the sample rows keep the header's column count.
- **Rows**: each row is a dict ready for `LeadIn.model_validate` (nested `utm`,
  `consent`, `custom_fields`, `source: "csv"`), blank cells left out; fully blank rows
  are skipped. A cell an export neutralised (`'` then `=`, `+`, `-`, `@`...: see
  `csv_export`) loses the apostrophe. `number` is the row's position in the file
  counting the header as row 1 (the row number a spreadsheet shows). Quoted cells may
  hold line breaks.
- **Cauce's export** (see `csv_columns`): its `custom_fields` cell, a JSON object, fills
  the row's custom fields; a column of the file that fills a custom field of the same
  name wins over the JSON's member. A cell that is not JSON, or not an object, fails its
  row (naming the column); the members' names and values are checked as any custom
  field's.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import orjson

from cauce.leads.csv_columns import CUSTOM_FIELDS_JSON, ColumnPlan, UnknownColumns, plan_columns
from cauce.leads.csv_sniff import (
    DELIMITERS,
    SAMPLE_BYTES,
    CsvFormat,
    StreamDecoder,
    detect_delimiter,
    detect_encoding,
    record_pattern,
)
from cauce.leads.errors import ImportFileInvalid, ImportTooLarge
from cauce.leads.schemas import ImportOptionsIn, IntakeOptions, LeadIn, validate_lead

__all__ = [
    "CHUNK_BYTES",
    "DELIMITERS",
    "FORMULA_PREFIXES",
    "MAX_RECORD_CHARS",
    "SAMPLE_BYTES",
    "CsvFormat",
    "CsvLeadReader",
    "CsvRow",
    "ReportLine",
    "column_of",
    "detect_delimiter",
    "detect_encoding",
    "validate_row",
]

CHUNK_BYTES = 64 * 1024
# A cell's first characters that spreadsheets may evaluate (CSV injection, OWASP; the
# full-width forms too): an export puts an apostrophe before them, an import takes it off.
FORMULA_PREFIXES = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
MAX_RECORD_CHARS = 1024 * 1024

_EXCEL_SEP = re.compile(r"sep=([,;\t|])(?:\r\n|\r|\n)")
_TRUE = frozenset({"si", "sí", "s", "yes", "y", "true", "verdadero", "1", "x", "ok", "acepta"})
_FALSE = frozenset({"no", "n", "false", "falso", "0", "no acepta"})
_STATUS_WORDS = {
    "nuevo": "new", "nueva": "new", "en curso": "working", "trabajando": "working",
    "en proceso": "working", "contactado": "working", "cualificado": "qualified",
    "calificado": "qualified", "ganado": "won", "ganada": "won", "cerrado ganado": "won",
    "perdido": "lost", "perdida": "lost", "cerrado perdido": "lost", "basura": "junk",
    "descartado": "junk", "spam": "junk",
}  # fmt: skip


class CsvRow(NamedTuple):
    """One data row: its spreadsheet row number and either a raw lead or a row error
    (with the position of the cell at fault, when one is)."""

    number: int
    data: dict[str, Any]
    error: str | None = None
    cell: int | None = None


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One line of the per-row error report."""

    row: int
    column: str
    field: str
    reason: str


def _parse_bool(text: str) -> bool | str:
    folded = text.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    return text  # left as text: the schema rejects it, naming consent.marketing


def _put(data: dict[str, Any], target: str, value: str) -> None:
    if target == "consent.marketing":
        data.setdefault("consent", {})["marketing"] = _parse_bool(value)
        return
    if target == "status":
        value = _STATUS_WORDS.get(" ".join(value.casefold().split()), value)
    head, dot, tail = target.partition(".")
    holder = data.setdefault(head, {}) if dot else data
    key = tail if dot else head
    # Several columns for one name field ("Primer apellido", "Segundo apellido") are
    # joined; `plan_columns` gives no other field more than one column.
    holder[key] = f"{holder[key]} {value}" if key in holder else value


class CsvLeadReader:
    """Turns a CSV byte stream into `CsvRow`s; see the module docstring.

    `mapping` maps headers to lead fields (overriding the defaults; None ignores a
    column), `unknown_columns` says what happens to unmapped columns, `encoding` and
    `delimiter` skip detection, `max_bytes` refuses larger files (`ImportTooLarge`).
    `row_defaults` fill fields a row leaves empty (`{"consent.wording_version": "v3"}`;
    a nested default only applies when the row has that object, e.g. a consent column).
    After the first rows, `format` and `plan` say what was detected; `bytes_read` gives
    progress. Format errors that make the whole file unreadable raise `ImportFileInvalid`.
    """

    def __init__(
        self,
        *,
        mapping: Mapping[str, str | None] | None = None,
        unknown_columns: UnknownColumns = "custom_fields",
        encoding: str | None = None,
        delimiter: str | None = None,
        max_bytes: int | None = None,
        source: str = "csv",
        row_defaults: Mapping[str, str] | None = None,
    ) -> None:
        self._mapping = mapping
        self._unknown_columns: UnknownColumns = unknown_columns
        self._encoding = encoding
        self._delimiter = delimiter
        self._max_bytes = max_bytes
        self._source = source
        self._row_defaults = dict(row_defaults or {})
        self._sample: list[bytes] = []
        self._sample_size = 0
        self._decoder: StreamDecoder | None = None
        self._pattern: re.Pattern[str] | None = None
        self._text = ""
        self._records = 0
        self._direct: list[tuple[int, str]] = []
        self._indirect: list[tuple[int, str]] = []
        self._json: list[int] = []
        self._format: CsvFormat | None = None
        self.plan: ColumnPlan | None = None
        self.bytes_read = 0

    @classmethod
    def from_options(
        cls, options: ImportOptionsIn, *, max_bytes: int | None = None
    ) -> CsvLeadReader:
        """A reader configured from the import request's options."""
        defaults = {}
        if options.consent_wording_version:
            defaults["consent.wording_version"] = options.consent_wording_version
        return cls(
            mapping=options.mapping,
            unknown_columns=options.unknown_columns,
            encoding=options.encoding,
            delimiter=options.delimiter,
            max_bytes=max_bytes,
            row_defaults=defaults,
        )

    # -- feeding ---------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[CsvRow]:
        """Take the next bytes; return the rows they complete."""
        self.bytes_read += len(chunk)
        if self._max_bytes is not None and self.bytes_read > self._max_bytes:
            raise ImportTooLarge(f"the file is larger than {self._max_bytes} bytes")
        if self._decoder is None:
            self._sample.append(chunk)
            self._sample_size += len(chunk)
            if self._sample_size < SAMPLE_BYTES:
                return []
            return self._start(at_eof=False)
        return self._consume(self._decoder.decode(chunk), final=False)

    def close(self) -> list[CsvRow]:
        """End of input: return the last rows. A file without a header is invalid."""
        rows = self._start(at_eof=True) if self._decoder is None else []
        assert self._decoder is not None
        rows += self._consume(self._decoder.decode(b"", final=True), final=True)
        if self.plan is None:
            raise ImportFileInvalid("the file is empty: there is no header row")
        return rows

    def rows(self, source: IO[bytes] | Iterable[bytes]) -> Iterator[CsvRow]:
        """Iterate over a binary file (read in `CHUNK_BYTES` pieces) or byte chunks."""
        read = getattr(source, "read", None)
        chunks = iter(lambda: read(CHUNK_BYTES), b"") if callable(read) else source
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.close()

    async def arows(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[CsvRow]:
        """Iterate over an async byte stream (an upload, an object-storage read).

        Parsing is CPU work between awaits, one chunk's worth (a few ms per 64 KiB).
        """
        async for chunk in chunks:
            for row in self.feed(chunk):
                yield row
        for row in self.close():
            yield row

    def probe(self, head: bytes, *, at_eof: bool) -> tuple[CsvFormat, ColumnPlan | None]:
        """Detect the format and plan the columns from the start of an upload (ideally
        `SAMPLE_BYTES` of it; `at_eof` if that is the whole file), so the endpoint can
        answer 422 for an unreadable file or a bad mapping before queueing the job.

        Raises `ImportFileInvalid` / `ImportMappingInvalid`; the plan is None only if the
        header row is longer than `head`. Use a fresh reader for the import itself.
        """
        self.feed(head)
        if self._decoder is None:
            self._start(at_eof=at_eof)
        if at_eof:
            self.close()
        assert self.format is not None
        return self.format, self.plan

    @property
    def encoding(self) -> str | None:
        """The codec in use (it may change once, from a provisional UTF-8 to cp1252)."""
        return self._decoder.encoding if self._decoder is not None else None

    @property
    def format(self) -> CsvFormat | None:
        """What detection decided, once the first 64 KiB (or the whole file) are in."""
        if self._format is None or self._decoder is None:
            return None
        if self._format.encoding != self._decoder.encoding:
            self._format = CsvFormat(
                self._decoder.encoding, self._format.bom, self._format.delimiter
            )
        return self._format

    # -- internals -------------------------------------------------------------------

    def _start(self, *, at_eof: bool) -> list[CsvRow]:
        sample = b"".join(self._sample)
        self._sample = []
        if self._encoding is not None:
            encoding, skip, confirmed = self._encoding, 0, True
            if encoding.replace("_", "-").lower() in ("utf-8", "utf8"):
                encoding = "utf-8"
                skip = len(codecs.BOM_UTF8) if sample.startswith(codecs.BOM_UTF8) else 0
        else:
            encoding, skip, confirmed = detect_encoding(sample, at_eof=at_eof)
        try:
            self._decoder = StreamDecoder(encoding, confirmed)
        except LookupError as exc:
            raise ImportFileInvalid(f"unknown encoding '{encoding}'") from exc
        text = self._decoder.decode(sample[skip:], final=False)
        if "\x00" in text[:4096]:
            raise ImportFileInvalid("the file is binary, not CSV text")
        delimiter = self._delimiter
        hint = _EXCEL_SEP.match(text)
        if hint:  # Excel's "sep=;" first line names the delimiter; it is not a row
            delimiter, text = delimiter or hint.group(1), text[hint.end() :]
        delimiter = delimiter or detect_delimiter(text, at_eof=at_eof)
        self._pattern = record_pattern(delimiter)
        self._format = CsvFormat(encoding=encoding, bom=skip > 0, delimiter=delimiter)
        return self._consume(text, final=False)

    def _consume(self, text: str, *, final: bool) -> list[CsvRow]:
        buffer = self._text + text if self._text else text
        cut = self._complete_prefix(buffer, final)
        rows: list[CsvRow] = []
        if cut:
            self._parse_block(buffer[:cut], rows)
        rest = buffer[cut:]
        if final and rest:
            assert self._pattern is not None
            unterminated = self._pattern.match(rest + "\n") is None
            self._parse_record(rest, rows, unterminated=unterminated)
            rest = ""
        if len(rest) > MAX_RECORD_CHARS:
            raise ImportFileInvalid(
                f"row {self._records + 1} is longer than {MAX_RECORD_CHARS} characters "
                "(a quote that is never closed?)"
            )
        self._text = rest
        return rows

    def _complete_prefix(self, buffer: str, final: bool) -> int:
        """Where the last complete record of the buffer ends."""
        end = len(buffer)
        if '"' not in buffer:  # no quotes: records end at line breaks
            cut = max(buffer.rfind("\n"), buffer.rfind("\r")) + 1
            if cut == end and buffer.endswith("\r") and not final:  # "\r" + next "\n"?
                cut = max(buffer.rfind("\n", 0, end - 1), buffer.rfind("\r", 0, end - 1)) + 1
            return cut
        assert self._pattern is not None
        match, pos = self._pattern.match, 0
        while pos < end:
            found = match(buffer, pos)
            if found is None or (found.end() == end and buffer[end - 1] == "\r" and not final):
                break  # incomplete (or a \r whose \n may come in the next chunk)
            pos = found.end()
        return pos

    def _parse_block(self, block: str, rows: list[CsvRow]) -> None:
        # One csv.reader over the block is the fast path; the block holds only complete
        # records, split exactly as the csv module splits them, so rows == records.
        assert self._format is not None
        assert self._pattern is not None
        first = self._records
        try:
            for cells in csv.reader(
                io.StringIO(block, newline=""), delimiter=self._format.delimiter
            ):
                self._records += 1
                self._take(cells, rows)
        except csv.Error:
            # A bad record (a cell over the csv module's size limit) stops the reader:
            # go on record by record, so that record alone fails.
            done = self._records - first
            for record in [m.group() for m in self._pattern.finditer(block)][done:]:
                self._parse_record(record, rows)

    def _parse_record(self, record: str, rows: list[CsvRow], *, unterminated: bool = False) -> None:
        assert self._format is not None
        self._records += 1
        try:
            cells = next(csv.reader((record,), delimiter=self._format.delimiter), [])
        except csv.Error as exc:
            if self.plan is None:
                raise ImportFileInvalid(f"the header row cannot be read: {exc}") from exc
            rows.append(CsvRow(self._records, {}, f"the row cannot be read as CSV: {exc}"))
            return
        self._take(cells, rows, unterminated=unterminated)

    def _take(self, cells: list[str], rows: list[CsvRow], *, unterminated: bool = False) -> None:
        if self.plan is None:
            headers = [unicodedata.normalize("NFC", c.strip().lstrip("\ufeff")) for c in cells]
            if any(headers):
                self._set_plan(plan_columns(headers, self._mapping, self._unknown_columns))
            return
        joined = "".join(cells)
        if not joined.strip():
            return
        if "\ufffd" in joined:
            cell = self._undecodable_cell(cells)
            if cell is not None:
                error = f"the cell has bytes that are not valid {self.encoding}"
                rows.append(CsvRow(self._records, {}, error, cell))
                return
        rows.append(self._row(self._records, cells, unterminated))

    def _undecodable_cell(self, cells: list[str]) -> int | None:
        """The first cell with undecodable bytes in a column that is read (a cell of an
        ignored column is never read, so it fails nothing)."""
        assert self.plan is not None
        targets = self.plan.targets
        for index, cell in enumerate(cells):
            if "\ufffd" in cell and (index >= len(targets) or targets[index] is not None):
                return index
        return None

    def _set_plan(self, plan: ColumnPlan) -> None:
        self.plan = plan
        counts: dict[str, int] = {}
        for target in plan.targets:
            if target is not None:
                counts[target] = counts.get(target, 0) + 1
        # The hot loop: a plain top-level field filled by one column is a dict store;
        # nested, joined or translated fields go through _put, and an export's custom
        # fields (JSON) are read last (`_row`).
        self._json = [i for i, t in enumerate(plan.targets) if t == CUSTOM_FIELDS_JSON]
        self._direct = [
            (i, t)
            for i, t in enumerate(plan.targets)
            if t is not None
            and "." not in t
            and t not in ("status", CUSTOM_FIELDS_JSON)
            and counts[t] == 1
        ]
        self._indirect = [
            (i, t)
            for i, t in enumerate(plan.targets)
            if t is not None and i not in self._json and (i, t) not in self._direct
        ]

    def _row(self, number: int, cells: list[str], unterminated: bool) -> CsvRow:
        assert self.plan is not None
        if unterminated:
            return CsvRow(number, {}, "the row ends inside a quoted cell (a missing quote)")
        width = len(self.plan.headers)
        if len(cells) > width and "".join(cells[width:]).strip():
            return CsvRow(number, {}, f"the row has {len(cells)} cells but the header {width}")
        if len(cells) < width:
            cells = cells + [""] * (width - len(cells))
        data: dict[str, Any] = {"source": self._source}
        for index, target in self._direct:
            if value := _cell(cells[index]):
                data[target] = value
        for index, target in self._indirect:
            if value := _cell(cells[index]):
                _put(data, target, value)
        # After the columns: a custom field a column of its own fills keeps that value.
        for index in self._json:
            if value := _cell(cells[index]):
                members = _json_object(value)
                if isinstance(members, str):
                    return CsvRow(number, {}, members, index)
                custom = data.setdefault("custom_fields", {})
                for key, member in members.items():
                    custom.setdefault(key, member)
        for target, value in self._row_defaults.items():
            head, dot, tail = target.partition(".")
            if not dot:
                data.setdefault(head, value)
            elif isinstance(data.get(head), dict):
                data[head].setdefault(tail, value)
        return CsvRow(number, data)


def _cell(raw: str) -> str:
    value = raw.strip()
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_PREFIXES:
        return value[1:].strip()  # neutralised by an export (`csv_export`)
    return value


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}


def _json_object(text: str) -> dict[str, Any] | str:
    """The members of an export's `custom_fields` cell, or why it has none (the row's
    error; the message never repeats the cell, which may be personal)."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"is not valid JSON ({exc}); an object of custom fields was expected"
    if not isinstance(parsed, dict):
        kind = "true or false" if isinstance(parsed, bool) else _JSON_KINDS.get(type(parsed))
        return f"is {kind or 'null'} in JSON, not an object of custom fields"
    return parsed


def column_of(plan: ColumnPlan, field: str) -> str:
    """The label(s) of the CSV column(s) an error about `field` comes from (`consent` →
    the consent columns), or "" when no column fills it. Every column fills a field of
    its own but the joined name columns, so the label names the cell's column."""
    if not field:
        return ""
    head = field.partition(".")[0]
    found = plan.column_for(field)
    if found is None and head == CUSTOM_FIELDS_JSON:
        # A custom field no column of its own fills came from the export's JSON column.
        found = plan.column_for(CUSTOM_FIELDS_JSON)
    return found or plan.column_for(head, prefix=True) or ""


def validate_row(
    row: CsvRow, plan: ColumnPlan, options: IntakeOptions | None = None
) -> LeadIn | list[ReportLine]:
    """Validate one row as a `LeadIn`; its errors become report lines naming the CSV
    column (`Teléfono`, or `Teléfono (column 4)` for a header the file repeats) and the
    lead field (`phone`). A row error names the column of the cell at fault, if any (and
    its field, if the column fills one)."""
    if row.error is not None:
        if row.cell is None or row.cell >= len(plan.headers):
            return [ReportLine(row.number, "", "", row.error)]
        column, target = plan.labels[row.cell], plan.targets[row.cell]
        return [ReportLine(row.number, column, target or "", row.error)]
    outcome = validate_lead(row.data, options or IntakeOptions())
    if isinstance(outcome, LeadIn):
        return outcome
    lines: list[ReportLine] = []
    for error in outcome:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in error["pointer"].split("/")[1:]]
        field = ".".join(parts)
        lines.append(ReportLine(row.number, column_of(plan, field), field, error["detail"]))
    return lines
