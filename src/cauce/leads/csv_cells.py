"""What one cell of an imported CSV says, for `csv_rows` (the rules: `csv_import`).

- `cell_value`: the cell's text, trimmed, without the apostrophe an export put before a
  formula character (`FORMULA_PREFIXES`, `is_neutralised`; see `csv_export`).
- `put_value`: stores a cell's value at its lead field: nested fields (`utm.source`),
  name fields filled by several columns (joined) and the consent as a boolean.
- `CELL_READERS`: the fields whose cells are read before they are stored, or fail their
  row saying why: a consent's yes or no (`read_consent`: the general yes/no words and
  consent-only ones, a placeholder being no consent), a consent date as a spreadsheet
  writes it (`read_csv_datetime`), a status word of a CRM or a person (`read_status`,
  `STATUS_WORDS`), a phone a spreadsheet turned into a number (`read_phone_cell`).
- `json_object`: the members of a Cauce export's `custom_fields` cell.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from cauce.leads.csv_headers import fold_header
from cauce.leads.phones import spreadsheet_number
from cauce.leads.placeholders import says_none
from cauce.leads.schemas import LeadStatus

# A cell's first characters that spreadsheets may evaluate (CSV injection, OWASP; the
# full-width forms too): an export puts an apostrophe before them, an import takes it off.
FORMULA_PREFIXES = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def is_neutralised(value: str) -> bool:
    """Whether a cell reads as neutralised by an export: apostrophes, then a formula
    character (`'=1+1`, `''=1+1`). An import takes one apostrophe off such a cell, so an
    export adds one to every text that reads so (`csv_export.neutralise_cell`), its own
    apostrophes included (`'=x` is written `''=x`): what was stored comes back as it was."""
    quotes = len(value) - len(value.lstrip("'"))
    return 0 < quotes < len(value) and value[quotes] in FORMULA_PREFIXES


# The general yes and no of a cell, as `scoring.TRUE_WORDS` / `FALSE_WORDS` (a test
# keeps them equal): what a spreadsheet's yes/no column says.
_TRUE = frozenset({"si", "sí", "s", "yes", "y", "true", "verdadero", "1", "x", "ok", "acepta"})
_FALSE = frozenset({"no", "n", "false", "falso", "0", "no acepta"})
# Words that say yes or no to marketing consent only (a form's checkbox text, an opt-in
# or unsubscribe list), not to any yes/no question: scoring and routing do not read them.
# `Baja` (unsubscribed) is a no. `Alta` is not read: signed up, but also "high", and a
# consent must be unambiguous (GDPR art. 4(11)); such a word fails its row saying which
# words are read. Compared as `_consent_key` folds a cell.
_CONSENT_ONLY_YES = frozenset({"acepto", "aceptado", "aceptada", "si acepto", "opt in", "optin"})
_CONSENT_ONLY_NO = frozenset(
    {
        "no acepto", "no aceptado", "no aceptada", "opt out", "optout", "baja", "de baja",
        "dado de baja", "dada de baja",
    }
)  # fmt: skip
# Check marks (a form's ticked box) are a yes. A cross is not read: in a Spanish form an
# X (read: `_TRUE`) ticks a box, and ✗ may mean either.
_CHECK_MARKS = frozenset("✓✔☑✅")
_VARIATION_SELECTOR = "\ufe0f"  # ✔️: the emoji form of the mark


def _consent_key(text: str) -> str:
    """A consent cell as the consent words are compared: without case or accents, an
    opening `¿`/`¡` and trailing punctuation dropped, the words inside kept apart by one
    space (`Sí, acepto.` → `si acepto`, `Opt-In` → `opt in`). A leading sign stays
    (`-1` is no `1`)."""
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lstrip("¿¡")
    while plain and (plain[-1].isspace() or unicodedata.category(plain[-1])[0] == "P"):
        plain = plain[:-1]
    return " ".join(re.split(r"[\W_]+", plain)) if plain else ""


_CONSENT_WORDS: dict[str, bool] = {
    **{_consent_key(word): True for word in _TRUE | _CONSENT_ONLY_YES},
    **{_consent_key(word): False for word in _FALSE | _CONSENT_ONLY_NO},
}
_CONSENT_HELP = (
    "is not a consent Cauce reads: write Sí, Si, S, Yes, Acepto, Sí, acepto, Opt-in, "
    "True, 1, X, OK or ✓ for a yes; No, N, No acepto, Opt-out, Baja, False or 0 for a no "
    "(in any case, accents and trailing punctuation aside); or leave the cell blank, or "
    "write -, n/a or N/A, when no consent was recorded"
)


# What a row's "yes" without a wording version is told besides the schema's words: the
# file cannot prove which text the person accepted unless the import says it.
WORDING_MISSING_HINT = (
    ": set the import option `consent_wording_version` to the version of the consent "
    "text the file's people accepted (or add a column with it, such as `Versión "
    "consentimiento`)"
)


def read_consent(text: str) -> str:
    """A consent cell as `"true"` or `"false"` (`put_value` stores it as the boolean),
    or `""` for a value that stands for none (`-`, `n/a`: `placeholders.says_none`),
    which records no consent, as a blank cell. Raises `ValueError` listing the words read
    (the message never repeats the cell)."""
    mark = text.strip().replace(_VARIATION_SELECTOR, "")
    if mark in _CHECK_MARKS:
        return "true"
    found = _CONSENT_WORDS.get(_consent_key(text))
    if found is not None:
        return "true" if found else "false"
    if says_none(text.strip()):
        return ""
    raise ValueError(_CONSENT_HELP)


# Status words of a CRM or a spreadsheet, as `fold_header` folds them (no case, accents or
# punctuation: `IN_PROGRESS`, `In progress` and `in-progress` are one word), and the
# status each one is. Cauce's own values are read in any case too. HubSpot's lead status
# (`hs_lead_status`: NEW, OPEN, IN_PROGRESS, OPEN_DEAL, UNQUALIFIED, ATTEMPTED_TO_CONTACT,
# CONNECTED, BAD_TIMING, exported as the codes or their labels) and Salesforce's
# (`Open - Not Contacted`, `Working - Contacted`, `Closed - Converted`, `Closed - Not
# Converted`) are here; docs/leads.md (section 6) shows the table.
STATUS_WORDS: dict[str, str] = {
    # new: not worked yet
    "nuevo": "new", "nueva": "new", "open": "new", "abierto": "new", "abierta": "new",
    "open not contacted": "new", "sin contactar": "new", "no contactado": "new",
    # working: being worked
    "en curso": "working", "trabajando": "working", "en proceso": "working",
    "en progreso": "working", "contactado": "working", "contactada": "working",
    "contacted": "working", "in progress": "working", "working contacted": "working",
    "attempted to contact": "working", "intento de contacto": "working",
    "connected": "working", "conectado": "working", "conectada": "working",
    # qualified: worth a deal, one may be open
    "cualificado": "qualified", "cualificada": "qualified", "calificado": "qualified",
    "calificada": "qualified", "open deal": "qualified", "oportunidad": "qualified",
    "oportunidad abierta": "qualified", "negocio abierto": "qualified",
    "closed converted": "qualified", "converted": "qualified", "convertido": "qualified",
    "convertida": "qualified",
    # won
    "ganado": "won", "ganada": "won", "cerrado ganado": "won", "cerrada ganada": "won",
    "closed won": "won", "vendido": "won", "vendida": "won", "cliente": "won",
    "customer": "won",
    # lost: a real contact that did not buy
    "perdido": "lost", "perdida": "lost", "cerrado perdido": "lost",
    "cerrada perdida": "lost", "closed lost": "lost", "unqualified": "lost",
    "disqualified": "lost", "no cualificado": "lost", "no calificado": "lost",
    "descalificado": "lost", "closed not converted": "lost", "bad timing": "lost",
    "mal momento": "lost",
    # junk: not a real contact
    "basura": "junk", "descartado": "junk", "descartada": "junk", "spam": "junk",
    "invalido": "junk", "invalida": "junk", "invalid": "junk",
    **{status.value: status.value for status in LeadStatus},
}  # fmt: skip
_STATUSES = ", ".join(status.value for status in LeadStatus)


def cell_value(raw: str) -> str:
    """The cell's text as a lead field takes it ("" for a blank cell)."""
    value = raw.strip()
    if is_neutralised(value):
        return value[1:]  # neutralised by an export (`csv_export`)
    return value


def put_value(data: dict[str, Any], target: str, value: str) -> None:
    """Store `value` at the lead field `target` of the raw lead `data`."""
    if target == "consent.marketing":
        # As `read_consent` gives it: "" (no consent recorded) stores nothing.
        if value:
            data.setdefault("consent", {})["marketing"] = value == "true"
        return
    head, dot, tail = target.partition(".")
    holder = data.setdefault(head, {}) if dot else data
    key = tail if dot else head
    # Several columns for one name field ("Primer apellido", "Segundo apellido") are
    # joined; `plan_columns` gives no other field more than one column.
    holder[key] = f"{holder[key]} {value}" if key in holder else value


def read_status(text: str) -> str:
    """A status cell as one of Cauce's statuses: the value itself or a word of
    `STATUS_WORDS`, compared without case, accents or punctuation. Raises `ValueError`
    saying which words are read (the message never repeats the cell)."""
    status = STATUS_WORDS.get(fold_header(text))
    if status is None:
        raise ValueError(
            f"is not a lead status Cauce reads: write {_STATUSES} (in any case), or a "
            "CRM's word for one (Nuevo, Open, En curso, In progress, Attempted to contact, "
            "Cualificado, Open deal, Ganado, Closed won, Perdido, Unqualified, Bad timing, "
            "Descartado, Spam...: the table is in the leads guide, section 6)"
        )
    return status


# A phone a spreadsheet saved as a number: a float (`612345681.0`, `612345681,0`) or in
# scientific notation (`6.12345681E+08`, `6,12345681E+8`).
def read_phone_cell(text: str) -> str:
    """A phone (or extension) cell a spreadsheet saved as a number, as its digits
    (`phones.spreadsheet_number`, which the API uses too): `612345681.0` and
    `6.12345681E+08` are `612345681`. Raises `NormalisationError` (a `ValueError`) when
    the scientific form has fewer digits than the number (`6.12E+08`): the spreadsheet
    rounded it, and the digits it dropped are gone."""
    return spreadsheet_number(text)


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
DATE_FORMATS = (
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
            f"told apart): write it as {DATE_FORMATS}"
        )
    else:
        raise ValueError(f"is not a date Cauce reads: write it as {DATE_FORMATS}")
    year, month, day, hour, minute, second, fraction = parts
    try:
        value = datetime(
            int(year or 0), int(month or 0), int(day or 0), int(hour or 0), int(minute or 0),
            int(second or 0), int((fraction or "0").ljust(6, "0")), tzinfo=UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"is not a real date or time ({exc})") from None
    return value.isoformat()


# The fields whose cells are read before they are stored (`csv_rows`): each reader
# returns the value for the schema, or raises `ValueError` saying why the cell fails its
# row.
CELL_READERS: dict[str, Callable[[str], str]] = {
    **dict.fromkeys(DATE_TARGETS, read_csv_datetime),
    "consent.marketing": read_consent,
    "status": read_status,
    "phone": read_phone_cell,
    "phone_extension": read_phone_cell,
}


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
