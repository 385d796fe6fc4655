"""From a CSV record's cells to a lead, for `csv_import` (the rules are in its docstring).

- `CsvRow`: one data row as the reader gives it (a raw lead, or the row's error).
- `RowMapper`: the cells of a row to a raw lead, by the header's `ColumnPlan` (the hot
  loop of an import), with the row's defaults.
- `validate_row` / `column_of` / `ReportLine`: a row validated as a `LeadIn`, or the
  lines of the error report naming the CSV column and the lead field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from cauce.leads.csv_cells import (
    CELL_READERS,
    WORDING_MISSING_HINT,
    cell_value,
    json_object,
    put_value,
)
from cauce.leads.csv_columns import CUSTOM_FIELDS_JSON, ColumnPlan
from cauce.leads.csv_headers import SECOND_SURNAMES, fold_header
from cauce.leads.schemas import IntakeOptions, LeadIn
from cauce.leads.schemas_batch import validate_lead

# The longest cell (128 Ki characters), the csv module's own limit: every lead field is
# far shorter (a custom field's value holds at most 1 KiB), so a longer cell in a column
# that is read fails its row; in an ignored column it is not read at all.
MAX_CELL_CHARS = 128 * 1024


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


class RowMapper:
    """Maps a data row's cells to a raw lead (`source` and the `row_defaults` added),
    following the header's `plan`."""

    def __init__(self, plan: ColumnPlan, source: str, row_defaults: Mapping[str, str]) -> None:
        self.plan = plan
        self._source = source
        self._row_defaults = row_defaults
        counts: dict[str, int] = {}
        for target in plan.targets:
            if target is not None:
                counts[target] = counts.get(target, 0) + 1
        # The hot loop: a plain top-level field filled by one column is a dict store;
        # nested or joined fields go through put_value, the cells that are read first
        # (dates, statuses, phones: `CELL_READERS`) after them (a cell that cannot be read
        # fails the row), and an export's custom fields (JSON) last (`row`).
        self._json = [i for i, t in enumerate(plan.targets) if t == CUSTOM_FIELDS_JSON]
        self._read = [(i, t) for i, t in enumerate(plan.targets) if t in CELL_READERS]
        self._direct = [
            (i, t)
            for i, t in enumerate(plan.targets)
            if t is not None
            and "." not in t
            and t not in CELL_READERS
            and t != CUSTOM_FIELDS_JSON
            and counts[t] == 1
        ]
        # Joined name columns: a second surname (`Apellido materno`, `Segundo apellido`)
        # after the first, wherever it stands in the file.
        self._indirect = sorted(
            (
                (i, t)
                for i, t in enumerate(plan.targets)
                if t is not None
                and i not in self._json
                and (i, t) not in self._direct
                and t not in CELL_READERS
            ),
            key=lambda column: fold_header(plan.headers[column[0]]) in SECOND_SURNAMES,
        )

    def undecodable_cell(self, cells: list[str]) -> int | None:
        """The first cell with undecodable bytes in a column that is read (a cell of an
        ignored column is never read, so it fails nothing)."""
        targets = self.plan.targets
        for index, cell in enumerate(cells):
            if "\ufffd" in cell and (index >= len(targets) or targets[index] is not None):
                return index
        return None

    def long_cell(self, number: int, cells: list[str]) -> CsvRow | None:
        """The row's error if a cell of a column that is read is longer than a cell may
        be; such a cell of an ignored column is blanked (it is never read)."""
        targets = self.plan.targets
        for index, cell in enumerate(cells):
            if len(cell) <= MAX_CELL_CHARS or index >= len(targets):
                continue
            if targets[index] is None:
                cells[index] = ""  # an ignored column: the cell is never read
            else:
                error = f"the cell is longer than {MAX_CELL_CHARS} characters, the limit of a cell"
                return CsvRow(number, {}, error, index)
        return None

    def row(self, number: int, cells: list[str]) -> CsvRow:
        """Row `number` of the file from its cells: a raw lead, or the row's error."""
        width = len(self.plan.headers)
        if len(cells) > width and "".join(cells[width:]).strip():
            return CsvRow(number, {}, f"the row has {len(cells)} cells but the header {width}")
        if len(cells) < width:
            cells = cells + [""] * (width - len(cells))
        data: dict[str, Any] = {"source": self._source}
        for index, target in self._direct:
            if value := cell_value(cells[index]):
                data[target] = value
        for index, target in self._indirect:
            if value := cell_value(cells[index]):
                put_value(data, target, value)
        for index, target in self._read:
            if value := cell_value(cells[index]):
                try:
                    put_value(data, target, CELL_READERS[target](value))
                except ValueError as exc:
                    return CsvRow(number, {}, str(exc), index)
        # After the columns: a custom field a column of its own fills keeps that value.
        for index in self._json:
            if value := cell_value(cells[index]):
                members = json_object(value)
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
        detail = error["detail"]
        if error["type"] == "consent_wording_missing":
            detail += WORDING_MISSING_HINT  # the import's option can give it
        lines.append(ReportLine(row.number, column_of(plan, field), field, detail))
    return lines
