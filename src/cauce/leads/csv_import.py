"""Streaming CSV reading for `POST /v1/leads/import`.

`CsvLeadReader` is a push parser: `feed(chunk)` returns the rows completed by that
chunk and `close()` the last ones, so the same code serves a file (`rows(file)`), byte
chunks (`rows(chunks)`) and an async upload or object-storage stream (`arows(chunks)`).
Memory stays bounded by the chunk size plus one record (at most `MAX_RECORD_CHARS`),
whatever the file size.

- **Encoding**, from the first 64 KiB: a UTF-8 or UTF-16 BOM wins; else UTF-8 if that
  sample has at least as many valid UTF-8 characters as bad bytes, else cp1252 (Excel's
  "CSV" on Spanish Windows; a superset of Latin-1's printable characters). In a cp1252
  file a line that is plainly UTF-8 (a row pasted from another file: valid UTF-8 whose
  characters a Western European row holds, such as `Á`, `€`, `“`) is read as UTF-8,
  every other line as cp1252. An ASCII-only sample is provisional: if a later chunk's
  lines are not all UTF-8, decoding switches to cp1252 (with UTF-8 lines, as above)
  from that chunk on (the text before was ASCII, the same in both). A character split
  across chunks is kept whole. Bytes invalid in the chosen encoding (in cp1252: 0x81,
  0x8D, 0x8F, 0x90, 0x9D) fail only their row, and only if the cell is in a column that
  is read; the report names that column. (A NUL past the first 4 KiB is left to the
  schema, which drops control characters from text as the JSON API does.)
- **Delimiter**: `,`, `;`, tab or `|`, whichever splits the header into the most
  columns while the sample rows keep the header's column count. Excel's `sep=;` first
  line names it (also `SEP=;`, `"sep=;"`, `sep=;;;` and trailing blanks); it is not a row.
- **Rows**: each row is a dict ready for `LeadIn.model_validate` (nested `utm`,
  `consent`, `custom_fields`, `source: "csv"`), blank cells left out; fully blank rows
  are skipped. A cell an export neutralised (`'` then `=`, `+`, `-`, `@`...: see
  `csv_export`) loses the apostrophe. `number` is the row's position in the file
  counting the header as row 1 (the row number a spreadsheet shows). Quoted cells may
  hold line breaks.
- **Broken rows fail alone**; reading goes on at the next physical line, so the rows
  after are read and counted. A quote never closed (or a quoted cell spanning more than
  `MAX_CELL_LINES` line breaks or `MAX_RECORD_CHARS` characters, or spanning lines to a
  "closing" quote followed by other text, which is the next cell's opening quote) fails
  the line it opened on. A row longer than `MAX_RECORD_CHARS` fails (the rest of its
  line is skipped unread). A cell longer than `MAX_CELL_CHARS` fails its row naming the
  column, unless the column is ignored (its cells are never read).
- **Consent dates** (`consent.given_at`) are read as a spreadsheet writes them:
  `2024-12-31`, `2024-12-31 10:30`, `31/12/2024`, `31/12/2024 10:30` (day first, never
  month first), `20241231`, or ISO 8601 with an offset; a time without an offset is UTC
  (midnight for a date alone). A bare number (a Unix time, an Excel serial) or other
  text fails the row naming the formats. The JSON API keeps its strict ISO 8601.
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
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple

import orjson

from cauce.leads.csv_columns import CUSTOM_FIELDS_JSON, ColumnPlan, UnknownColumns, plan_columns
from cauce.leads.csv_sniff import (
    DELIMITERS,
    MAX_CELL_LINES,
    SAMPLE_BYTES,
    CsvFormat,
    FaultKind,
    QuoteFault,
    StreamDecoder,
    detect_delimiter,
    detect_encoding,
    line_breaks,
    line_end,
    quote_fault,
    record_pattern,
    records_pattern,
    split_record,
)
from cauce.leads.errors import ImportFileInvalid, ImportTooLarge
from cauce.leads.schemas import ImportOptionsIn, IntakeOptions, LeadIn, validate_lead

__all__ = [
    "CHUNK_BYTES",
    "DELIMITERS",
    "FORMULA_PREFIXES",
    "MAX_CELL_CHARS",
    "MAX_CELL_LINES",
    "MAX_RECORD_CHARS",
    "SAMPLE_BYTES",
    "CsvFormat",
    "CsvLeadReader",
    "CsvRow",
    "ReportLine",
    "column_of",
    "detect_delimiter",
    "detect_encoding",
    "read_csv_datetime",
    "validate_row",
]

CHUNK_BYTES = 64 * 1024
# A cell's first characters that spreadsheets may evaluate (CSV injection, OWASP; the
# full-width forms too): an export puts an apostrophe before them, an import takes it off.
FORMULA_PREFIXES = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
# The longest row read (1 Mi characters): thousands of times a real lead's row, so it
# only stops a runaway record, and the most the reader buffers to re-read the lines after
# a quote never closed. A longer row fails alone; the rest of its line is skipped unread.
MAX_RECORD_CHARS = 1024 * 1024
# The longest cell (128 Ki characters), the csv module's own limit: every lead field is
# far shorter (a custom field's value holds at most 1 KiB), so a longer cell in a column
# that is read fails its row; in an ignored column it is not read at all.
MAX_CELL_CHARS = 128 * 1024
# Decoded text is parsed this much at a time, whatever the chunks fed: it bounds the
# buffer and makes the rows the same for any chunking.
_PIECE_CHARS = 64 * 1024

# Excel's first line naming the delimiter, as Excel and its users write it: any case,
# quoted, trailing delimiters (a sheet saved again) or blanks.
_EXCEL_SEP = re.compile(r'"?sep=([,;\t|])"?(?:\1|[ \t])*(?:\r\n|\r|\n)', re.IGNORECASE)
_TOO_LONG = (
    f"the row is longer than {MAX_RECORD_CHARS} characters, the limit of a row; the rest "
    "of its line was skipped"
)
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


# `consent.given_at` as a CSV cell (`read_csv_datetime`): ISO 8601 with an offset goes to
# the schema as it is; the others are read here.
_DATE_TARGETS = frozenset({"consent.given_at"})
_ISO_ZONED = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})"
)
_YEAR_FIRST = re.compile(
    r"(\d{4})([-/])(\d{1,2})\2(\d{1,2})"
    r"(?:[Tt ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?)?"
)
_DAY_FIRST = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:,? (\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)?")
_DATE_FORMATS = (
    "2024-12-31, 2024-12-31 10:30, 31/12/2024, 31/12/2024 10:30 (day first) or 20241231, "
    "a time without an offset being UTC; or ISO 8601 with an offset"
)


def read_csv_datetime(text: str) -> str:
    """A CSV cell's date or time as ISO 8601 with an offset, for the schema (see the
    module docstring). Raises `ValueError` saying why the cell is no date Cauce reads
    (the message never repeats the cell)."""
    if _ISO_ZONED.fullmatch(text):
        return text  # the JSON API's own form: the schema reads (and checks) it
    parts: tuple[str | None, ...]
    if found := _YEAR_FIRST.fullmatch(text):
        year, _, month, day, *clock = found.groups()
        parts = (year, month, day, *clock)
    elif found := _DAY_FIRST.fullmatch(text):
        day, _, month, year, *clock = found.groups()
        parts = (year, month, day, *clock, None)
    elif (found := _COMPACT.fullmatch(text)) and _real_date(*found.groups()):
        parts = (*found.groups(), None, None, None, None)
    elif _NUMBER.fullmatch(text):
        # Epoch seconds and Excel serials (days since 1900) are both bare numbers, and
        # the schema would read 45657 as 1970-01-01T12:40:57Z: a wrong date, silently.
        raise ValueError(
            "is a bare number, not a date (a Unix time or an Excel serial date cannot be "
            f"told apart): write it as {_DATE_FORMATS}"
        )
    else:
        raise ValueError(f"is not a date Cauce reads: write it as {_DATE_FORMATS}")
    year, month, day, hour, minute, second, fraction = parts
    try:
        value = datetime(
            int(year or 0), int(month or 0), int(day or 0), int(hour or 0), int(minute or 0),
            int(second or 0), int((fraction or "0").ljust(6, "0")), tzinfo=UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"is not a real date or time ({exc})") from None
    return value.isoformat()


def _real_date(year: str, month: str, day: str) -> bool:
    try:
        datetime(int(year), int(month), int(day), tzinfo=UTC)
    except ValueError:
        return False
    return True


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
        self._run: re.Pattern[str] | None = None
        self._text = ""
        self._parked: list[str] = []
        self._waiting = 0
        # Skipping the rest of a line too long to read; dropping the "\n" of a "\r\n"
        # whose "\r" ended what was skipped.
        self._skip_line = False
        self._skip_lf = False
        self._records = 0
        self._direct: list[tuple[int, str]] = []
        self._indirect: list[tuple[int, str]] = []
        self._dates: list[tuple[int, str]] = []
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
        return self._consume_text(self._decoder.decode(chunk, final=False), final=False)

    def close(self) -> list[CsvRow]:
        """End of input: return the last rows. A file without a header is invalid."""
        rows = self._start(at_eof=True) if self._decoder is None else []
        assert self._decoder is not None
        rows += self._consume_text(self._decoder.decode(b"", final=True), final=True)
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
            whole = at_eof and len(sample) <= SAMPLE_BYTES
            encoding, skip, confirmed = detect_encoding(sample[:SAMPLE_BYTES], at_eof=whole)
        try:
            self._decoder = StreamDecoder(encoding, confirmed)
        except LookupError as exc:
            raise ImportFileInvalid(f"unknown encoding '{encoding}'") from exc
        # Detection reads the sample's start whole; the rows come from the decoder, which
        # may hold back an unfinished last line.
        head = sample[skip : skip + SAMPLE_BYTES]
        preview = self._decoder.preview(head)
        text = self._decoder.decode(sample[skip:], final=False)
        if "\x00" in preview[:4096]:
            raise ImportFileInvalid("the file is binary, not CSV text")
        delimiter = self._delimiter
        hint = _EXCEL_SEP.match(preview)
        if hint:  # Excel's "sep=;" first line names the delimiter; it is not a row
            delimiter, preview = delimiter or hint.group(1), preview[hint.end() :]
            text = text[hint.end() :]
        delimiter = delimiter or detect_delimiter(
            preview, at_eof=at_eof and len(sample) - skip <= SAMPLE_BYTES
        )
        self._pattern = record_pattern(delimiter)
        self._run = records_pattern(delimiter)
        self._format = CsvFormat(encoding=encoding, bom=skip > 0, delimiter=delimiter)
        return self._consume_text(text, final=False, eager=True)

    def _consume_text(self, text: str, *, final: bool, eager: bool = False) -> list[CsvRow]:
        """Parse decoded text in pieces of at most `_PIECE_CHARS`; small texts (tiny
        chunks) wait until a quarter piece is in (unless `eager` or `final`), so that an
        unfinished record is not searched again for every few bytes."""
        if not (final or eager) and self._waiting + len(text) < _PIECE_CHARS // 4:
            self._parked.append(text)
            self._waiting += len(text)
            return []
        if self._parked:
            text = "".join([*self._parked, text])
            self._parked, self._waiting = [], 0
        if len(text) <= _PIECE_CHARS:
            return self._consume(text, final=final)
        rows: list[CsvRow] = []
        for start in range(0, len(text), _PIECE_CHARS):
            last = start + _PIECE_CHARS >= len(text)
            rows += self._consume(text[start : start + _PIECE_CHARS], final=final and last)
        return rows

    def _consume(self, text: str, *, final: bool) -> list[CsvRow]:
        rows: list[CsvRow] = []
        text = self._skipped(text)
        buffer = self._text + text if self._text else text
        if final and buffer and buffer[-1] not in "\r\n":
            buffer += "\n"  # the last record, unterminated, ends with the file
        pos = 0
        while True:
            cut, fault = self._scan(buffer, pos, final)
            if cut > pos:
                self._parse_block(buffer[pos:cut], rows)
            if fault is None:
                break
            pos = self._reject(buffer, fault, final, rows)
        rest = buffer[cut:]
        if len(rest) > MAX_RECORD_CHARS:
            # One physical line (a quoted cell spanning lines past the limit is a fault
            # above): fail it, skip the rest of it unread.
            self._fail(rows, _TOO_LONG)
            self._skip_lf = rest.endswith("\r")
            self._skip_line, rest = not self._skip_lf, ""
        self._text = rest
        return rows

    def _skipped(self, text: str) -> str:
        """`text` without what is left of a line being skipped."""
        if self._skip_lf and text and not self._skip_line:
            self._skip_lf = False
            return text[1:] if text[0] == "\n" else text
        if not self._skip_line:
            return text
        end = line_end(text, 0)
        if end < 0:
            return ""
        self._skip_line = False
        self._skip_lf = end == len(text) and text.endswith("\r")
        return text[end:]

    def _scan(self, buffer: str, pos: int, final: bool) -> tuple[int, QuoteFault | None]:
        """Where the complete records from `pos` end, and the fault of the record there
        if it is taken for a quote never closed (else it is unfinished: the tail)."""
        assert self._format is not None
        assert self._pattern is not None
        assert self._run is not None
        # A "\r" at the end may be the first half of a "\r\n": that record waits.
        end = len(buffer) - 1 if not final and buffer.endswith("\r") else len(buffer)
        if buffer.find('"', pos) < 0:  # no quotes: records end at line breaks
            cut = max(buffer.rfind("\n", pos, end), buffer.rfind("\r", pos, end)) + 1
            return max(pos, cut), None
        delimiter = self._format.delimiter
        while True:
            run = self._run.match(buffer, pos, end)
            assert run is not None  # it matches the empty string
            pos = run.end()
            found = self._pattern.match(buffer, pos, end) if pos < end else None
            if found is None:
                break
            # A record that one-line records do not match: a quoted cell spans lines.
            fault = _long_line(buffer, pos) or quote_fault(
                buffer, pos, found.end(), delimiter, closed=True,
                too_long=found.end() - pos > MAX_RECORD_CHARS,
            )  # fmt: skip
            if fault is not None:
                return pos, fault
            pos = found.end()
        if pos >= end:
            return pos, None
        if fault := _long_line(buffer, pos):
            return pos, fault
        # An unfinished record's line breaks are in a quoted cell: at the end of the
        # file, or past a limit, its quote is taken for one never closed.
        size = len(buffer) - pos
        breaks = line_breaks(buffer, pos, len(buffer), MAX_CELL_LINES)
        if final or breaks > MAX_CELL_LINES or (breaks and size > MAX_RECORD_CHARS):
            why: FaultKind = "many lines" if breaks > MAX_CELL_LINES else "too long"
            fault = quote_fault(
                buffer, pos, len(buffer), delimiter, closed=False,
                open_why="never closed" if final else why,
                too_long=size > MAX_RECORD_CHARS,
            )  # fmt: skip
            return pos, fault
        return pos, None

    def _reject(self, buffer: str, fault: QuoteFault, final: bool, rows: list[CsvRow]) -> int:
        """Fail the record where `_scan` stopped, read up to the end of the line its bad
        quote opened on (or its first line, too long); return where reading goes on (the
        next line)."""
        if fault.why == "long line":
            self._fail(rows, _TOO_LONG)
            return self._after_line(buffer, fault.at, final)
        why = {
            "never closed": "the file ends first",
            "too long": f"the row would be longer than {MAX_RECORD_CHARS} characters",
            "followed by text": "the next quote is followed by other text than a delimiter, "
            "so it opens a cell rather than closing this one",
        }.get(fault.why, f"a quoted cell may hold at most {MAX_CELL_LINES} line breaks")
        if self.plan is not None and fault.cell < len(self.plan.labels):
            column = f"column '{self.plan.labels[fault.cell]}'"
        else:
            column = f"column {fault.cell + 1}"
        self._fail(
            rows,
            f"a quote opened in {column} is never closed ({why}): the row was read up to "
            "the end of that line, and the next line as the next row (a quote inside a "
            "cell is written twice)",
            fault.cell,
        )
        return self._after_line(buffer, fault.at, final)

    def _after_line(self, buffer: str, at: int, final: bool) -> int:
        """Where the line holding `buffer[at]` ends (skipping the rest of it unread if it
        goes on past the buffer)."""
        end = line_end(buffer, at)
        if end < 0:  # the line goes on past the text: skip the rest of it
            self._skip_line = not final
            return len(buffer)
        if not final and end == len(buffer) and buffer.endswith("\r"):
            self._skip_lf = True  # its "\n" may come with the next text
        return end

    def _fail(self, rows: list[CsvRow], reason: str, cell: int | None = None) -> None:
        """One record that cannot be read: its row's error (the header's: the file's)."""
        self._records += 1
        if self.plan is None:
            raise ImportFileInvalid(f"the header row cannot be read: {reason}")
        rows.append(CsvRow(self._records, {}, reason, cell))

    def _parse_block(self, block: str, rows: list[CsvRow]) -> None:
        # One csv.reader over the block is the fast path; the block holds only complete
        # records, split exactly as the csv module splits them, so rows == records.
        assert self._format is not None
        assert self._pattern is not None
        first = self._records
        if len(block) <= MAX_RECORD_CHARS:
            try:
                for cells in csv.reader(
                    io.StringIO(block, newline=""), delimiter=self._format.delimiter
                ):
                    self._records += 1
                    self._take(cells, rows)
                return
            except csv.Error:
                pass  # a cell over the csv module's limit stops it: go on record by record
        # Record by record: a block this long may hold a row over the limit.
        done = self._records - first
        for found in list(self._pattern.finditer(block))[done:]:
            record = found.group()
            if len(record) > MAX_RECORD_CHARS:
                self._fail(rows, _TOO_LONG)
            else:
                self._parse_record(record, rows)

    def _parse_record(self, record: str, rows: list[CsvRow]) -> None:
        assert self._format is not None
        self._records += 1
        delimiter = self._format.delimiter
        try:
            cells = next(csv.reader((record,), delimiter=delimiter), [])
        except csv.Error:
            cells = split_record(record, delimiter)
            for index, cell in enumerate(cells):
                if len(cell) <= MAX_CELL_CHARS:
                    continue
                if self.plan is None:
                    raise ImportFileInvalid(
                        f"the header row cannot be read: its column {index + 1} is longer "
                        f"than {MAX_CELL_CHARS} characters"
                    ) from None
                targets = self.plan.targets
                if index < len(targets) and targets[index] is None:
                    cells[index] = ""  # an ignored column: the cell is never read
                elif index < len(targets):
                    error = (
                        f"the cell is longer than {MAX_CELL_CHARS} characters, the limit of a cell"
                    )
                    rows.append(CsvRow(self._records, {}, error, index))
                    return
        self._take(cells, rows)

    def _take(self, cells: list[str], rows: list[CsvRow]) -> None:
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
        rows.append(self._row(self._records, cells))

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
        # nested, joined or translated fields go through _put, dates are read after them
        # (a cell that is no date fails the row), and an export's custom fields (JSON)
        # last (`_row`).
        self._json = [i for i, t in enumerate(plan.targets) if t == CUSTOM_FIELDS_JSON]
        self._dates = [(i, t) for i, t in enumerate(plan.targets) if t in _DATE_TARGETS]
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
            if t is not None
            and i not in self._json
            and (i, t) not in self._direct
            and t not in _DATE_TARGETS
        ]

    def _row(self, number: int, cells: list[str]) -> CsvRow:
        assert self.plan is not None
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
        for index, target in self._dates:
            if value := _cell(cells[index]):
                try:
                    _put(data, target, read_csv_datetime(value))
                except ValueError as exc:
                    return CsvRow(number, {}, str(exc), index)
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


def _long_line(buffer: str, start: int) -> QuoteFault | None:
    """A fault for the record at `start` if its first line, complete in the buffer, is
    longer than a row may be (whatever its quotes: a row fails the same way however the
    file arrives in chunks)."""
    end = line_end(buffer, start)
    return QuoteFault(0, start, "long line") if end - start > MAX_RECORD_CHARS else None


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
