"""How `CsvLeadReader` (`csv_import`, whose docstring has the rules) turns decoded text
into rows: the text parsed in pieces of bounded size, whole records read with the csv
module, broken ones failed alone (`csv_records` finds where records end), the header row
planned into columns and every other row mapped to a lead (`csv_rows`).

`csv_import` holds the other half: the bytes taken in (files, chunks, async streams), the
encoding and delimiter detected, a reader configured from the import options, the probe.
"""

from __future__ import annotations

import codecs
import csv
import io
import unicodedata
from collections.abc import Mapping

from cauce.leads.csv_columns import ColumnPlan, UnknownColumns, plan_columns
from cauce.leads.csv_records import MAX_RECORD_CHARS, TOO_LONG, RecordScanner
from cauce.leads.csv_rows import MAX_CELL_CHARS, CsvRow, RowMapper
from cauce.leads.csv_sniff import CsvFormat, QuoteFault, StreamDecoder, split_record
from cauce.leads.errors import ImportFileInvalid

# The fields a lead needs one of (the schema's rule): a file without a column for either
# is refused at its first data row, rather than every row failing for want of one.
CONTACT_TARGETS = frozenset({"email", "phone"})
# A refused file's reason names at most this many of its columns, each clipped.
_SHOWN_HEADERS = 30
_SHOWN_CHARS = 60


def _clipped(label: str) -> str:
    return label if len(label) <= _SHOWN_CHARS else label[: _SHOWN_CHARS - 1] + "…"


# Decoded text is parsed this much at a time, whatever the chunks fed: it bounds the
# buffer and makes the rows the same for any chunking.
_PIECE_CHARS = 64 * 1024


class CsvTextParser:
    """Decoded CSV text to `CsvRow`s: the half of `CsvLeadReader` (its subclass) after
    decoding. The reader sets `_decoder`, `_format` and `_scanner` once it has detected
    the file's format, then feeds the text its decoder gives to `_consume_text`.
    """

    def __init__(
        self,
        mapping: Mapping[str, str | None] | None,
        unknown_columns: UnknownColumns,
        source: str,
        row_defaults: Mapping[str, str] | None,
    ) -> None:
        self._mapping = mapping
        self._unknown_columns: UnknownColumns = unknown_columns
        self._source = source
        self._row_defaults = dict(row_defaults or {})
        self._decoder: StreamDecoder | None = None
        self._scanner: RecordScanner | None = None
        self._text = ""
        self._parked: list[str] = []
        self._waiting = 0
        self._records = 0
        self._mapper: RowMapper | None = None
        self._format: CsvFormat | None = None
        self.plan: ColumnPlan | None = None
        self._no_contact = False

    @property
    def encoding(self) -> str | None:
        """The codec in use (it may change once, from a provisional UTF-8 to cp1252)."""
        return self._decoder.encoding if self._decoder is not None else None

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
        assert self._scanner is not None
        rows: list[CsvRow] = []
        text = self._scanner.skipped(text)
        buffer = self._text + text if self._text else text
        if final and buffer and buffer[-1] not in "\r\n":
            buffer += "\n"  # the last record, unterminated, ends with the file
        pos = 0
        while True:
            cut, fault = self._scanner.scan(buffer, pos, final)
            if cut > pos:
                self._parse_block(buffer[pos:cut], rows)
            if fault is None:
                break
            pos = self._reject(buffer, fault, final, rows)
        rest = buffer[cut:]
        if len(rest) > MAX_RECORD_CHARS:
            # One physical line (a quoted cell spanning lines past the limit is a fault
            # above): fail it, skip the rest of it unread.
            self._fail(rows, TOO_LONG)
            self._scanner.skip_rest(rest)
            rest = ""
        self._text = rest
        return rows

    def _reject(self, buffer: str, fault: QuoteFault, final: bool, rows: list[CsvRow]) -> int:
        """Fail the record where the scan stopped, read up to the end of the line its bad
        quote opened on (or its first line, too long); return where reading goes on (the
        next line)."""
        assert self._scanner is not None
        labels = self.plan.labels if self.plan is not None else ()
        self._fail(rows, *self._scanner.refusal(fault, labels))
        return self._scanner.after_line(buffer, fault.at, final)

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
        assert self._scanner is not None
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
        for found in list(self._scanner.pattern.finditer(block))[done:]:
            record = found.group()
            if len(record) > MAX_RECORD_CHARS:
                self._fail(rows, TOO_LONG)
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
            if self._mapper is not None:
                if (failed := self._mapper.long_cell(self._records, cells)) is not None:
                    rows.append(failed)
                    return
            elif long := [i for i, cell in enumerate(cells) if len(cell) > MAX_CELL_CHARS]:
                raise ImportFileInvalid(
                    f"the header row cannot be read: its column {long[0] + 1} is longer "
                    f"than {MAX_CELL_CHARS} characters"
                ) from None
        self._take(cells, rows)

    def _refuse_without_contact(self, plan: ColumnPlan) -> None:
        """Refuse, at its first data row, a file no column of which gives an email or a
        phone: every row would fail for want of one. (A file with a header row only is
        read, with no rows.)"""
        shown = [f"'{_clipped(label)}'" for label in plan.labels[:_SHOWN_HEADERS]]
        if len(plan.labels) > _SHOWN_HEADERS:
            shown.append(f"{len(plan.labels) - _SHOWN_HEADERS} more")
        mapped = " as mapped" if self._mapping else ""
        raise ImportFileInvalid(
            f"no column of the file{mapped} gives an email or a phone, and every lead needs "
            f"one; its columns are {', '.join(shown)}. Head the email column `Email` or "
            "`Correo electrónico` and the phone column `Teléfono` or `Phone` (the leads "
            "guide lists the headers Cauce knows), or map one in the options: "
            '{"mapping": {"<header>": "email"}}'
        )

    def _undecodable(self) -> str:
        """Why a cell with bytes the file's encoding cannot read fails its row."""
        encoding = self.encoding or ""
        reason = f"the cell has bytes that are not valid {encoding}"
        if codecs.lookup(encoding).name != "utf-8":
            return reason
        if self._format is not None and self._format.bom:
            return reason + (
                " (the file starts with a UTF-8 byte order mark, so it is read as UTF-8 "
                "whatever the options say: save it again as CSV UTF-8)"
            )
        # UTF-8 in its first 64 KiB, cp1252 further on (rows added in Excel on
        # Windows): cp1252 asked for reads both, a line of UTF-8 in it as UTF-8.
        return reason + (
            '; if the file was saved by Excel on Windows, send the option "encoding": '
            '"cp1252" (a line of Western European UTF-8 in it is still read as UTF-8)'
        )

    def _take(self, cells: list[str], rows: list[CsvRow]) -> None:
        mapper = self._mapper
        if mapper is None:
            headers = [unicodedata.normalize("NFC", c.strip().lstrip("\ufeff")) for c in cells]
            if any(headers):
                self.plan = plan_columns(headers, self._mapping, self._unknown_columns)
                self._mapper = RowMapper(self.plan, self._source, self._row_defaults)
                self._no_contact = not CONTACT_TARGETS.intersection(self.plan.targets)
            return
        joined = "".join(cells)
        if not joined.strip():
            return
        if self._no_contact:  # refused at its first row (`_refuse_without_contact`)
            self._refuse_without_contact(mapper.plan)
        if "\ufffd" in joined:
            cell = mapper.undecodable_cell(cells)
            if cell is not None:
                rows.append(CsvRow(self._records, {}, self._undecodable(), cell))
                return
        rows.append(mapper.row(self._records, cells))
