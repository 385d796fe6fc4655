"""Which lead field each CSV column fills: Spanish and English header defaults, an
explicit mapping that overrides them, and what happens to the columns left over.

Headers are compared without case, accents or punctuation (`Teléfono`, `TELEFONO` and
`teléfono:` are the same header). Targets are lead field names, dotted for nested ones
(`utm.source`, `consent.marketing`, `custom_fields.sector`).

Unknown columns go into `custom_fields` under a key made from the header (`Sector
económico` → `sector_economico`), because an import should not silently drop data the
customer chose to send; `unknown_columns="ignore"` drops them instead. At most
`MAX_CUSTOM_FIELDS` columns become custom fields (the schema's bound); the rest are
ignored and listed in `ColumnPlan.ignored`, so the import status can say so.

One field, several columns: only the name fields (`first_name`, `last_name`,
`full_name`) join their columns, in file order with a space ("Primer apellido" +
"Segundo apellido"), whether the columns came from the defaults or the mapping. Every
other field holds one value: among default headers the first column wins (the others
fall to `unknown_columns`), and an explicit mapping that sends two columns to such a
field (an email, a phone, a consent flag, one custom field...) is refused with a 422
naming the columns and the field, rather than joining them into a value that cannot be
right. A field the mapping names is filled only by the columns the mapping sends to it:
a column whose header would default to it falls to `unknown_columns` instead.

One header, several columns (Excel exports with two `Teléfono` or `Notas` columns, or
`Notas` and `notas`, equal once folded): each column keeps its own identity by position.
Among the columns left to the defaults, only the first of a repeated header may fill its
default field (so two `Apellidos` columns are not joined); the others fall to
`unknown_columns`, each a custom field of its own (`telefono`, `notas`, `notas_2`), never
merged into or overwriting another. Each such column is labelled with its position
(`Teléfono (column 4)`, counting from 1) in the plan's `labels`, which the import status
and the error report use. A mapping entry naming a repeated header cannot say which
column it means and is refused (`mapping_column_ambiguous`, giving the columns); an entry
may name one of them by its label instead (`{"Teléfono (column 4)": "custom_fields.fijo"}`).

Cauce's own export (`GET /v1/leads/export.csv`) imports back as it was, without a
mapping. A file is taken for one when its header starts with `EXPORT_HEADER_PREFIX`, the
fifteen columns every version of the export has begun with, in that order and spelt as
the export writes them (`is_cauce_export`). Then, for the columns the mapping does not
name: the columns Cauce computes (`EXPORT_COMPUTED`: its own id, the score, the email
flags, the times, the other contacts) are ignored, not made custom fields; `source` fills
the lead's source; and `custom_fields`, a JSON object, fills the custom fields
(`CUSTOM_FIELDS_JSON`, read by `csv_import`). `owner` is kept, as in any file.

The header vocabulary (folding, the defaults, custom-field keys) is in
`cauce.leads.csv_headers`; the checks of an explicit mapping in `cauce.leads.csv_mapping`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cauce.leads.csv_headers import (
    CUSTOM_PREFIX,
    DEFAULT_HEADERS,
    MULTI_COLUMN_TARGETS,
    custom_key,
    fold_header,
)
from cauce.leads.csv_mapping import FileColumns, check_entries
from cauce.leads.errors import ImportMappingInvalid
from cauce.leads.schemas import MAX_CUSTOM_FIELDS

UnknownColumns = Literal["custom_fields", "ignore"]

# The columns Cauce's export has always begun with, in this order (`csv_export` builds
# `EXPORT_COLUMNS` from them). Fifteen exact names in this order are Cauce's signature:
# a CRM's or a spreadsheet's file with an `id`, a `score` and a `created_at` of its own
# does not start so, and its `id` must still fill `external_id`. A file missing one of
# them (a column deleted in a spreadsheet) is read as any other file: nothing is dropped,
# the computed columns become custom fields, and a mapping can say otherwise.
EXPORT_HEADER_PREFIX: tuple[str, ...] = (
    "id", "status", "email", "phone", "first_name", "last_name", "company", "job_title",
    "country", "region", "city", "source", "score", "owner", "created_at",
)  # fmt: skip
# The export's columns that are Cauce's, not the lead's: its id (a new lead gets its
# own), the score and the model that gave it, the email flags and the times (computed
# again at intake), the other contacts (kept by merges; a lead given to intake has no
# such fields), the team (routing's) and the lead a held one is held against
# (de-duplication's). In an export they are ignored unless the mapping names them.
# `owner` is not among them: the lead input takes one and intake keeps it, so an export
# restores who works each lead (map it to null to let routing choose again).
EXPORT_COMPUTED: frozenset[str] = frozenset(
    fold_header(name)
    for name in (
        "id", "score", "is_disposable_email", "is_free_email", "created_at", "updated_at",
        "other_emails", "other_phones", "team", "duplicate_of", "score_model",
    )
)  # fmt: skip
# The target of the export's `custom_fields` column: a JSON object whose members are the
# lead's custom fields. Only the export has it; a mapping cannot name it.
CUSTOM_FIELDS_JSON = "custom_fields"
# The default headers of an export: those of any file, `source` (not a default
# elsewhere: another file's "source" is rarely one of Cauce's source codes) and the JSON.
_EXPORT_HEADERS: dict[str, str] = {
    **DEFAULT_HEADERS,
    "source": "source",
    "custom fields": CUSTOM_FIELDS_JSON,
}


def is_cauce_export(headers: Sequence[str]) -> bool:
    """Whether a header row is Cauce's export's: it starts with `EXPORT_HEADER_PREFIX`
    (each header compared as read, without surrounding blanks)."""
    start = tuple(header.strip() for header in headers[: len(EXPORT_HEADER_PREFIX)])
    return start == EXPORT_HEADER_PREFIX


def column_labels(headers: Sequence[str]) -> list[str]:
    """One label per column: its header, or for a header the file repeats (compared
    folded) the header and its position, `Teléfono (column 4)`. Folded, a positioned
    label differs from every other label and from every header of the file (one that
    would read like a header gets its position again), so a mapping entry may name it."""
    folded = [fold_header(h) for h in headers]
    counts = Counter(folded)
    labels = []
    for index, (header, key) in enumerate(zip(headers, folded, strict=True)):
        label = header
        if counts[key] > 1:
            label = _positioned(header, index)
            while fold_header(label) in counts:
                label = _positioned(label, index)
        labels.append(label)
    return labels


def _positioned(header: str, index: int) -> str:
    return f"{header} (column {index + 1})".lstrip()


@dataclass(slots=True)
class ColumnPlan:
    """The target of each column (by position; None: ignored), the labels of the ignored
    columns, and each column's label (see `column_labels`; made from the headers when not
    given)."""

    headers: list[str]
    targets: list[str | None]
    ignored: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.headers):
            self.labels = column_labels(self.headers)

    def columns(self) -> list[tuple[str, str | None]]:
        """(label, target) pairs, one per column in file order, for the import status."""
        return list(zip(self.labels, self.targets, strict=True))

    def column_for(self, target: str, *, prefix: bool = False) -> str | None:
        """The label(s) of the column(s) that fill `target` (`consent.marketing`), joined
        with ` + `; with `prefix`, those filling any field under it (`consent` →
        `consent.*`)."""
        names = [
            label
            for label, t in zip(self.labels, self.targets, strict=True)
            if t == target or (prefix and t is not None and t.startswith(target + "."))
        ]
        return " + ".join(names) if names else None


def plan_columns(
    headers: Sequence[str],
    mapping: Mapping[str, str | None] | None = None,
    unknown_columns: UnknownColumns = "custom_fields",
) -> ColumnPlan:
    """Decide each column's target: explicit `mapping` first (headers compared folded),
    then, in Cauce's export, its own defaults (the computed columns ignored, `source`,
    the `custom_fields` JSON), then the defaults, then `unknown_columns`. Raises
    `ImportMappingInvalid`, each error pointing at `/options/mapping/<header>`, for unknown
    targets, headers the file lacks or repeats, and two columns sent to a field that
    takes one (see the module docstring).
    """
    labels = column_labels(headers)
    explicit, errors = check_entries(mapping or {}, FileColumns.of(headers, labels))
    if errors:
        raise ImportMappingInvalid(errors)
    export = is_cauce_export(headers)
    defaults = _EXPORT_HEADERS if export else DEFAULT_HEADERS

    targets: list[str | None] = []
    ignored: list[str] = []
    used_keys = {
        t[len(CUSTOM_PREFIX) :] for t in explicit.values() if t and t.startswith(CUSTOM_PREFIX)
    }
    # A field the mapping names is the mapping's alone; default headers for it yield.
    taken = {t for t in explicit.values() if t is not None}
    joinable = MULTI_COLUMN_TARGETS - taken
    defaulted: set[str] = set()  # headers (folded) already offered to the defaults
    for index, header in enumerate(headers):
        key = fold_header(header)
        if index in explicit:
            target = explicit[index]
        elif export and key in EXPORT_COMPUTED:
            target = None  # Cauce's, not the lead's (a repeated one too)
        else:
            # Of a header the file repeats, only the first column left to the defaults
            # may fill its field: the others are columns of their own, not joined.
            target = defaults.get(key) if key not in defaulted else None
            defaulted.add(key)
            # Two default columns for a name field are joined ("Primer apellido" +
            # "Segundo apellido"); for any other field the first column wins.
            if target is not None and target in taken and target not in joinable:
                target = None
            if target is None and unknown_columns == "custom_fields":
                target = _custom_target(header, used_keys)
            if target is not None:
                taken.add(target)
        if target is None:
            ignored.append(labels[index])
        targets.append(target)
    return ColumnPlan(headers=list(headers), targets=targets, ignored=ignored, labels=labels)


def _custom_target(header: str, used: set[str]) -> str | None:
    key = custom_key(header)
    if not key or len(used) >= MAX_CUSTOM_FIELDS:
        return None
    candidate, n = key, 2
    while candidate in used:
        suffix = f"_{n}"
        candidate, n = key[: 64 - len(suffix)] + suffix, n + 1
    used.add(candidate)
    return CUSTOM_PREFIX + candidate
