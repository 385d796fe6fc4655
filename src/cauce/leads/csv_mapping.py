"""Checking an explicit mapping of a CSV import (`{"Teléfono": "phone", "Notas": null}`),
before the file is read (`check_mapping`, when the import is requested) and against the
file's columns (`check_entries`, when `cauce.leads.csv_columns` plans them).

Each bad entry is one error pointing at `/options/mapping/<header>`, raised together as
`ImportMappingInvalid` (a 422): a target that is not a lead field, two entries naming one
column (headers are compared folded, see `cauce.leads.csv_headers`), a header the file
lacks, a header the file repeats (the entry cannot say which column it means: it may name
one by its label, `Teléfono (column 4)`), and two columns sent to a field that takes one
(only the name fields join their columns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cauce.leads.csv_headers import (
    CUSTOM_PREFIX,
    LEAD_TARGETS,
    MULTI_COLUMN_TARGETS,
    custom_key,
    fold_header,
)
from cauce.leads.errors import FieldError, ImportMappingInvalid


def _resolve_target(target: str | None) -> str | None:
    if target is None or target == "":
        return None
    if target in LEAD_TARGETS:
        return target
    if target.startswith(CUSTOM_PREFIX):
        key = target[len(CUSTOM_PREFIX) :]
        if key and custom_key(key) == key:
            return target
    raise ValueError(
        f"'{target}' is not a lead field (e.g. email, utm.source, custom_fields.sector)"
    )


def _pointer(header: str) -> str:
    return "/options/mapping/" + header.replace("~", "~0").replace("/", "~1")


def _listed(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _quoted(names: Sequence[str]) -> str:
    return _listed([f"'{name}'" for name in names])


def _repeated_target(headers: Sequence[str], target: str) -> str:
    return (
        f"columns {_quoted(headers)} would fill one field, '{target}', which takes one "
        "column: map all but one to another field or to null (only "
        f"{', '.join(sorted(MULTI_COLUMN_TARGETS))} join their columns)"
    )


@dataclass(frozen=True, slots=True)
class FileColumns:
    """The file's columns as a mapping entry may name them: by header (folded), or, for
    a header the file repeats, by the column's label (`Teléfono (column 4)`)."""

    headers: Sequence[str]
    labels: Sequence[str]
    by_header: dict[str, list[int]]
    by_label: dict[str, int]

    @classmethod
    def of(cls, headers: Sequence[str], labels: Sequence[str]) -> FileColumns:
        by_header: dict[str, list[int]] = {}
        for index, header in enumerate(headers):
            by_header.setdefault(fold_header(header), []).append(index)
        by_label = {
            fold_header(label): index
            for index, (label, header) in enumerate(zip(labels, headers, strict=True))
            if label != header
        }
        return cls(headers, labels, by_header, by_label)

    def find(self, key: str) -> list[int]:
        """The positions of the columns a folded mapping key names."""
        found = set(self.by_header.get(key, ()))
        if key in self.by_label:
            found.add(self.by_label[key])
        return sorted(found)

    def ambiguous(self, positions: Sequence[int]) -> str:
        """Why an entry naming these columns cannot be followed, and what to send."""
        names = [self.headers[i] for i in positions]
        if len(set(names)) == 1:
            where = f"'{names[0]}' in columns " + _listed([str(i + 1) for i in positions])
        else:
            where = _listed([f"'{self.headers[i]}' in column {i + 1}" for i in positions])
            where += " (headers are compared without case, accents or punctuation)"
        labels = _quoted([self.labels[i] for i in positions])
        return (
            f"the file has {where}, so this entry cannot tell which column it means: name "
            f"a column by its label ({labels}), or give the columns distinct headers in "
            "the file"
        )


def check_entries(
    mapping: Mapping[str, str | None], columns: FileColumns | None
) -> tuple[dict[int, str | None], list[FieldError]]:
    """The mapping's targets by column position (none without the file's columns), and
    one error per bad entry (in mapping order)."""
    explicit: dict[int, str | None] = {}
    first_key: dict[str, str] = {}
    by_target: dict[str, list[str]] = {}
    errors: list[FieldError] = []
    for header, target in mapping.items():
        key = fold_header(header)
        if key in first_key:
            errors.append(
                FieldError(
                    pointer=_pointer(header),
                    detail=f"'{header}' and '{first_key[key]}' name the same column "
                    "(headers are compared without case, accents or punctuation)",
                    type="mapping_column_repeated",
                )
            )
            continue
        first_key[key] = header
        position: int | None = None
        if columns is not None:
            found = columns.find(key)
            if not found:
                errors.append(
                    FieldError(
                        pointer=_pointer(header),
                        detail=f"the file has no column named '{header}'",
                        type="mapping_column_unknown",
                    )
                )
                continue
            if len(found) > 1:
                errors.append(
                    FieldError(
                        pointer=_pointer(header),
                        detail=columns.ambiguous(found),
                        type="mapping_column_ambiguous",
                    )
                )
                continue
            position = found[0]
        try:
            resolved = _resolve_target(target)
        except ValueError as exc:
            errors.append(
                FieldError(pointer=_pointer(header), detail=str(exc), type="mapping_target_unknown")
            )
            continue
        if position is not None:
            explicit[position] = resolved
        if resolved is not None:
            by_target.setdefault(resolved, []).append(header)
    for target, headers in by_target.items():
        if len(headers) > 1 and target not in MULTI_COLUMN_TARGETS:
            errors.extend(
                FieldError(
                    pointer=_pointer(header),
                    detail=_repeated_target(headers, target),
                    type="mapping_target_repeated",
                )
                for header in headers
            )
    return explicit, errors


def check_mapping(mapping: Mapping[str, str | None] | None) -> None:
    """Check an explicit mapping without the file: every target is a lead field, no two
    entries name one column, no two columns go to a field that takes one. Raises
    `ImportMappingInvalid`, each error pointing at `/options/mapping/<header>`."""
    _, errors = check_entries(mapping or {}, None)
    if errors:
        raise ImportMappingInvalid(errors)
