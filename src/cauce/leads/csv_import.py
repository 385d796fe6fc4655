"""Streaming CSV reading for `POST /v1/leads/import`.

`CsvLeadReader` is a push parser: `feed(chunk)` returns the rows completed by that
chunk and `close()` the last ones, so the same code serves a file (`rows(file)`), byte
chunks (`rows(chunks)`) and an async upload or object-storage stream (`arows(chunks)`).
Memory stays bounded by the chunk size plus one record (at most `MAX_RECORD_CHARS`),
whatever the file size.

- **Encoding**, from the first 64 KiB: a UTF-8 or UTF-16 BOM wins (over an encoding
  the options ask for too); else the encoding asked for; else UTF-8 if that sample has
  at least as many valid UTF-8 characters as bad bytes, else cp1252 (Excel's "CSV" on
  Spanish Windows; a superset of Latin-1's printable characters). In a cp1252 file a
  line that is plainly UTF-8 (a row pasted from another file: valid UTF-8 whose
  characters a Western European row holds, such as `Á`, `€`, `“`) is read as UTF-8,
  every other line as cp1252. An ASCII-only sample is provisional: the 64 KiB from the
  first byte that is not ASCII decide, whatever the chunks: if they are not all UTF-8,
  decoding switches to cp1252 (with UTF-8 lines, as above) from that byte on (the text
  before was ASCII, the same in both). A character split across chunks is kept whole.
  Bytes invalid in the chosen encoding (in cp1252: 0x81, 0x8D, 0x8F, 0x90, 0x9D) fail
  only their row, and only if the cell is in a column that is read; the report names
  that column. (A NUL past the first 4 KiB is left to the
  schema, which drops control characters from text as the JSON API does.)
- **Delimiter**: `,`, `;`, tab or `|`, whichever splits the header into the most
  columns while the sample rows keep the header's column count. Excel's `sep=;` first
  line names it (also `SEP=;`, `"sep=;"`, `sep=;;;` and trailing blanks); it is not a row.
- **Rows**: each row is a dict ready for `LeadIn.model_validate` (nested `utm`,
  `consent`, `custom_fields`, `source: "csv"`), blank cells left out; fully blank rows
  are skipped. A cell an export neutralised (`'` then `=`, `+`, `-`, `@`...: see
  `csv_export`) loses one apostrophe (`''=x`, an export of `'=x`, gives `'=x`).
  `number` is the row's position in the file counting the header as row 1 (the row
  number a spreadsheet shows). Quoted cells may hold line breaks.
- **Broken rows fail alone**; reading goes on at the next physical line, so the rows
  after are read and counted. A quote never closed (or a quoted cell spanning more than
  `MAX_CELL_LINES` line breaks or `MAX_RECORD_CHARS` characters, or spanning lines to a
  "closing" quote followed by other text, which is the next cell's opening quote) fails
  the line it opened on. A row longer than `MAX_RECORD_CHARS` fails (the rest of its
  line is skipped unread). A cell longer than `MAX_CELL_CHARS` fails its row naming the
  column, unless the column is ignored (its cells are never read).
- **A file without an email or a phone column** (as mapped) gives no lead: it is
  refused (`ImportFileInvalid`, naming its columns) at its first data row, not row by
  row; `probe` lets it through, so the import fails at once with that reason.
- **Status cells** are read without case, accents or punctuation, as Cauce's values or a
  CRM's words (HubSpot's lead statuses, `Cerrado - Ganado`...: `csv_cells.STATUS_WORDS`);
  another word fails the row, listing the statuses.
- **Phone cells a spreadsheet turned into numbers** (`612345681.0`, `6.12345681E+08`)
  are read as their digits; a scientific number that lost digits (`6.12E+08`) fails the
  row, saying the spreadsheet rounded it.
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

Mechanics: `csv_sniff` (encoding, delimiter, quotes), `csv_parse` (decoded text to rows),
`csv_records` (where records end, broken ones), `csv_rows` (cells to a lead; the error
report), `csv_cells` (a cell's value).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import IO

from cauce.leads.csv_cells import FORMULA_PREFIXES, read_csv_datetime
from cauce.leads.csv_columns import ColumnPlan, UnknownColumns
from cauce.leads.csv_parse import CsvTextParser
from cauce.leads.csv_records import MAX_RECORD_CHARS, RecordScanner
from cauce.leads.csv_rows import (
    MAX_CELL_CHARS,
    CsvRow,
    ReportLine,
    column_of,
    validate_row,
)
from cauce.leads.csv_sniff import (
    MAX_CELL_LINES,
    SAMPLE_BYTES,
    CsvFormat,
    StreamDecoder,
    byte_order_mark,
    detect_delimiter,
    detect_encoding,
)
from cauce.leads.errors import ImportFileInvalid, ImportTooLarge
from cauce.leads.schemas_requests import ImportOptionsIn

__all__ = [
    "CHUNK_BYTES",
    "FORMULA_PREFIXES",
    "MAX_CELL_CHARS",
    "MAX_CELL_LINES",
    "MAX_RECORD_CHARS",
    "SAMPLE_BYTES",
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

# Excel's first line naming the delimiter, as Excel and its users write it: any case,
# quoted, trailing delimiters (a sheet saved again) or blanks.
_EXCEL_SEP = re.compile(r'"?sep=([,;\t|])"?(?:\1|[ \t])*(?:\r\n|\r|\n)', re.IGNORECASE)


class CsvLeadReader(CsvTextParser):
    """Turns a CSV byte stream into `CsvRow`s; see the module docstring. This class takes
    the bytes in and detects the format; `CsvTextParser` (`csv_parse`) parses the text.

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
        super().__init__(mapping, unknown_columns, source, row_defaults)
        self._encoding = encoding
        self._delimiter = delimiter
        self._max_bytes = max_bytes
        self._sample: list[bytes] = []
        self._sample_size = 0
        self.bytes_read = 0

    @classmethod
    def from_options(
        cls, options: ImportOptionsIn, *, max_bytes: int | None = None
    ) -> CsvLeadReader:
        """A reader configured from the import request's options."""
        defaults = {}
        if options.consent_wording_version:
            defaults["consent.wording_version"] = options.consent_wording_version
        if options.consent_given_at:
            defaults["consent.given_at"] = options.consent_given_at
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

        A file with rows and no column for the email or the phone is refused here, at its
        first row (`CsvTextParser._refuse_without_contact`); one whose first row is past
        `head` fails in its import, saying the same.
        """
        self.feed(head)
        if self._decoder is None:
            self._start(at_eof=at_eof)
        if at_eof:
            self.close()
        assert self.format is not None
        return self.format, self.plan

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
        bom = byte_order_mark(sample)
        if bom is not None:
            # A BOM wins over an encoding asked for: `cp1252` would read a UTF-8 BOM as
            # `ï»¿` before the first header, and UTF-16 as text full of NULs.
            encoding, skip, confirmed = *bom, True
        elif self._encoding is not None:
            encoding, skip, confirmed = self._encoding, 0, True
            if encoding.replace("_", "-").lower() in ("utf-8", "utf8"):
                encoding = "utf-8"
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
        self._scanner = RecordScanner(delimiter)
        self._format = CsvFormat(encoding=encoding, bom=skip > 0, delimiter=delimiter)
        return self._consume_text(text, final=False, eager=True)
