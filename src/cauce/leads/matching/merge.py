"""Merge policy: fold a duplicate into the existing record without losing anything.

Works on plain mappings (a lead's column values as a dict), independent of the ORM:
- an empty existing field is filled from the incoming record;
- a non-empty existing field is never overwritten, unless it is listed in
  `overwrite_fields` (names or shell patterns such as ``custom_fields.*``); the incoming value
  that lost is reported as ``kept`` so the history can record it;
- list fields in `accumulate_fields` (``sources`` by default) are unioned, so every
  source that ever sent the lead stays;
- nested mappings (custom fields) are merged key by key with the same rules;
- a consent is one record of proof, never pieced together from two (a "no" with the
  wording of someone else's "yes" proves nothing): the later one, by `given_at`, is
  kept whole, so a withdrawal sent through a later form is honoured; the same consent
  given again keeps its first time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Literal

from cauce.leads.matching.record import fold
from cauce.leads.matching.settings import DedupeSettings

Action = Literal["filled", "overwritten", "appended", "kept"]


@dataclass(frozen=True, slots=True)
class FieldChange:
    """What merging did to one field; nested fields are dotted ("custom.industry").

    ``kept`` means the existing value stayed and the incoming one differed: not a
    change to the record, but worth a line in its history.
    """

    field: str
    action: Action
    old: object
    new: object

    @property
    def changed(self) -> bool:
        """True when the merged record differs from the existing one in this field."""
        return self.action != "kept"


def is_empty(value: object) -> bool:
    """None, a blank string or an empty collection: a field with nothing to keep."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return len(value) == 0
    return False


def _same(a: object, b: object) -> bool:
    # "José" and "Jose" are one value typed twice, not a conflict worth reporting.
    if isinstance(a, str) and isinstance(b, str):
        return fold(a) == fold(b)
    return a == b


# Mapping fields kept whole, the later by the named time member winning (see above).
_LATEST_WINS = {"consent": "given_at"}


def _time(record: Mapping[str, object], member: str) -> datetime | None:
    value = record.get(member)
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def consent_time(consent: Mapping[str, object]) -> datetime | None:
    """When a stored consent was given (its `given_at`, with a zone), None if unknown."""
    at = _time(consent, "given_at")
    return at if at is not None and at.tzinfo is not None else None


def consent_stands_after(old: Mapping[str, object], new: Mapping[str, object]) -> bool:
    """Whether consent `new` replaces stored consent `old` (given at or after it), as a
    merge decides it."""
    return _later(old, new, "given_at")


def _later(old: Mapping[str, object], new: Mapping[str, object], member: str) -> bool:
    """Whether `new` is at least as recent as `old` (a record without a time is the
    older one; the incoming wins a tie: it arrived later)."""
    old_at, new_at = _time(old, member), _time(new, member)
    if old_at is None or new_at is None:
        return old_at is None
    if (old_at.tzinfo is None) != (new_at.tzinfo is None):
        return True  # not comparable: a stored time without zone is a legacy record
    return new_at >= old_at


def _as_list(value: object) -> list[object]:
    if is_empty(value):
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return [value]


def _merge(
    existing: Mapping[str, object],
    incoming: Mapping[str, object],
    overwrite: tuple[str, ...],
    accumulate: tuple[str, ...],
    prefix: str,
    changes: list[FieldChange],
) -> dict[str, object]:
    merged = dict(existing)
    for key, new in incoming.items():
        path = prefix + key
        old = existing.get(key)
        if path in accumulate:
            current = _as_list(old)
            added = [v for v in _as_list(new) if v not in current]
            if added:
                merged[key] = current + added
                changes.append(FieldChange(path, "appended", old, added))
            continue
        if is_empty(new):
            continue
        if is_empty(old):
            merged[key] = new
            changes.append(FieldChange(path, "filled", old, new))
        elif path in _LATEST_WINS and isinstance(old, Mapping) and isinstance(new, Mapping):
            at = _LATEST_WINS[path]
            if {k: v for k, v in old.items() if k != at} == {
                k: v for k, v in new.items() if k != at
            }:
                continue  # the same consent given again: its first proof stands
            if _later(old, new, at):
                merged[key] = new
                changes.append(FieldChange(path, "overwritten", old, new))
            else:
                changes.append(FieldChange(path, "kept", old, new))
        elif isinstance(old, Mapping) and isinstance(new, Mapping):
            merged[key] = _merge(old, new, overwrite, accumulate, path + ".", changes)
        elif _same(old, new):
            continue
        elif any(fnmatchcase(path, pattern) for pattern in overwrite):
            merged[key] = new
            changes.append(FieldChange(path, "overwritten", old, new))
        else:
            changes.append(FieldChange(path, "kept", old, new))
    return merged


def merge(
    existing: Mapping[str, object],
    incoming: Mapping[str, object],
    settings: DedupeSettings | None = None,
) -> tuple[dict[str, object], list[FieldChange]]:
    """Merge `incoming` into `existing`; return the merged record and what changed.

    Neither input is modified. Fields absent from `incoming` are left as they are.
    """
    settings = settings or DedupeSettings()
    changes: list[FieldChange] = []
    merged = _merge(
        existing, incoming, settings.overwrite_fields, settings.accumulate_fields, "", changes
    )
    return merged, changes
