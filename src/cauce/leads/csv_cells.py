"""What one cell of an imported CSV says, for `csv_rows` (the rules: `csv_import`).

- `cell_value`: the cell's text, trimmed, without the apostrophe an export put before a
  formula character (`FORMULA_PREFIXES`, see `csv_export`).
- `put_value`: stores a cell's value at its lead field: nested fields (`utm.source`),
  name fields filled by several columns (joined), consent yes/no words and Spanish
  status words.
- `read_csv_datetime`: a consent date as a spreadsheet writes it (`DATE_TARGETS`).
- `json_object`: the members of a Cauce export's `custom_fields` cell.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

# A cell's first characters that spreadsheets may evaluate (CSV injection, OWASP; the
# full-width forms too): an export puts an apostrophe before them, an import takes it off.
FORMULA_PREFIXES = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")

_TRUE = frozenset({"si", "sí", "s", "yes", "y", "true", "verdadero", "1", "x", "ok", "acepta"})
_FALSE = frozenset({"no", "n", "false", "falso", "0", "no acepta"})
_STATUS_WORDS = {
    "nuevo": "new", "nueva": "new", "en curso": "working", "trabajando": "working",
    "en proceso": "working", "contactado": "working", "cualificado": "qualified",
    "calificado": "qualified", "ganado": "won", "ganada": "won", "cerrado ganado": "won",
    "perdido": "lost", "perdida": "lost", "cerrado perdido": "lost", "basura": "junk",
    "descartado": "junk", "spam": "junk",
}  # fmt: skip


def cell_value(raw: str) -> str:
    """The cell's text as a lead field takes it ("" for a blank cell)."""
    value = raw.strip()
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_PREFIXES:
        return value[1:].strip()  # neutralised by an export (`csv_export`)
    return value


def _parse_bool(text: str) -> bool | str:
    folded = text.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    return text  # left as text: the schema rejects it, naming consent.marketing


def put_value(data: dict[str, Any], target: str, value: str) -> None:
    """Store `value` at the lead field `target` of the raw lead `data`."""
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
DATE_TARGETS = frozenset({"consent.given_at"})
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
    `csv_import` docstring). Raises `ValueError` saying why the cell is no date Cauce
    reads (the message never repeats the cell)."""
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


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}


def json_object(text: str) -> dict[str, Any] | str:
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
