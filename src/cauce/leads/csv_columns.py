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
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cauce.leads.errors import FieldError, ImportMappingInvalid
from cauce.leads.schemas import MAX_CUSTOM_FIELDS

UnknownColumns = Literal["custom_fields", "ignore"]
CUSTOM_PREFIX = "custom_fields."

# Every target a column may fill (besides `custom_fields.<key>`).
LEAD_TARGETS: frozenset[str] = frozenset(
    """
    external_id source status email phone first_name last_name full_name company
    job_title country region city language owner utm.source utm.medium utm.campaign
    utm.term utm.content consent.marketing consent.given_at consent.wording_version
    consent.source
    """.split()  # noqa: SIM905
)

_DEFAULTS: dict[str, tuple[str, ...]] = {
    "email": (
        "email", "e mail", "mail", "correo", "correo electronico", "email address",
        "e mail address", "direccion de correo", "direccion de correo electronico",
    ),
    "phone": (
        "telefono", "tel", "tlf", "tfno", "telf", "phone", "phone number", "movil",
        "telefono movil", "celular", "mobile", "mobile phone", "whatsapp",
        "numero de telefono",
    ),
    "first_name": ("nombre", "first name", "firstname", "given name", "nombre de pila"),
    "last_name": (
        "apellidos", "apellido", "last name", "lastname", "surname", "family name",
        "primer apellido", "segundo apellido", "apellido 1", "apellido 2", "apellido1",
        "apellido2",
    ),
    "full_name": (
        "nombre completo", "nombre y apellidos", "full name", "name", "contact name",
        "contacto", "nombre del contacto",
    ),
    "company": (
        "empresa", "compania", "company", "company name", "organizacion", "organization",
        "organisation", "razon social", "nombre de la empresa", "cuenta", "account",
    ),
    "job_title": ("cargo", "puesto", "job title", "title", "position", "role", "titulo"),
    "country": ("pais", "country", "country code", "codigo de pais"),
    "region": (
        "provincia", "region", "comunidad autonoma", "comunidad", "estado", "state",
        "province", "departamento",
    ),
    "city": ("ciudad", "localidad", "municipio", "poblacion", "city", "town"),
    "language": ("idioma", "lengua", "language", "lang", "locale"),
    "external_id": ("id", "external id", "id externo", "record id", "codigo", "code"),
    "owner": ("propietario", "comercial", "owner", "responsable", "asesor", "vendedor"),
    "status": ("estado del lead", "estado lead", "lead status", "status"),
    "utm.source": ("utm source",),
    "utm.medium": ("utm medium",),
    "utm.campaign": ("utm campaign", "campana", "campaign"),
    "utm.term": ("utm term",),
    "utm.content": ("utm content",),
    "consent.marketing": (
        "consentimiento", "consentimiento marketing", "acepta comunicaciones",
        "acepta publicidad", "opt in", "optin", "marketing consent", "consent",
        "gdpr consent", "rgpd", "consent marketing",
    ),
    "consent.given_at": (
        "fecha consentimiento", "fecha del consentimiento", "consent date", "consent given at",
    ),
    "consent.wording_version": (
        "version consentimiento", "version texto consentimiento", "consent version",
        "consent wording version",
    ),
    "consent.source": ("origen consentimiento", "origen del consentimiento", "consent source"),
}  # fmt: skip

# The fields whose columns are joined (see the module docstring).
MULTI_COLUMN_TARGETS = frozenset({"last_name", "full_name", "first_name"})


def fold_header(text: str) -> str:
    """A header compared without case, accents or punctuation: `E-mail:` → `e mail`."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain).split())


DEFAULT_HEADERS: dict[str, str] = {
    fold_header(alias): target for target, aliases in _DEFAULTS.items() for alias in aliases
}


def custom_key(header: str) -> str:
    """A custom-field key from a header: lower-case ASCII letters, digits and `_`."""
    key = fold_header(header).replace(" ", "_")[:64].strip("_")
    if not key:
        return ""
    return key if key[0].isalpha() else f"c_{key}"[:64]


@dataclass(slots=True)
class ColumnPlan:
    """The target of each column (by position; None: ignored) and the ignored headers."""

    headers: list[str]
    targets: list[str | None]
    ignored: list[str] = field(default_factory=list)

    def columns(self) -> list[tuple[str, str | None]]:
        """(header, target) pairs, in file order, for the import status."""
        return list(zip(self.headers, self.targets, strict=True))

    def column_for(self, target: str, *, prefix: bool = False) -> str | None:
        """The header(s) that fill `target` (`consent.marketing`), joined with ` + `;
        with `prefix`, those filling any field under it (`consent` → `consent.*`)."""
        names = [
            h
            for h, t in zip(self.headers, self.targets, strict=True)
            if t == target or (prefix and t is not None and t.startswith(target + "."))
        ]
        return " + ".join(names) if names else None


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
    return "/mapping/" + header.replace("~", "~0").replace("/", "~1")


def _quoted(names: Sequence[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1] if len(quoted) > 1 else quoted[0]


def _repeated_target(headers: Sequence[str], target: str) -> str:
    return (
        f"columns {_quoted(headers)} would fill one field, '{target}', which takes one "
        "column: map all but one to another field or to null (only "
        f"{', '.join(sorted(MULTI_COLUMN_TARGETS))} join their columns)"
    )


def _check_entries(
    mapping: Mapping[str, str | None], folded_headers: Sequence[str] | None
) -> tuple[dict[str, str | None], list[FieldError]]:
    """The mapping's entries, folded, and one error per bad entry (in mapping order)."""
    explicit: dict[str, str | None] = {}
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
        if folded_headers is not None and key not in folded_headers:
            errors.append(
                FieldError(
                    pointer=_pointer(header),
                    detail=f"the file has no column named '{header}'",
                    type="mapping_column_unknown",
                )
            )
            continue
        try:
            resolved = explicit[key] = _resolve_target(target)
        except ValueError as exc:
            errors.append(
                FieldError(pointer=_pointer(header), detail=str(exc), type="mapping_target_unknown")
            )
            continue
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
    `ImportMappingInvalid`, each error pointing at `/mapping/<header>`."""
    _, errors = _check_entries(mapping or {}, None)
    if errors:
        raise ImportMappingInvalid(errors)


def plan_columns(
    headers: Sequence[str],
    mapping: Mapping[str, str | None] | None = None,
    unknown_columns: UnknownColumns = "custom_fields",
) -> ColumnPlan:
    """Decide each column's target: explicit `mapping` first (headers compared folded),
    then the defaults, then `unknown_columns`. Raises `ImportMappingInvalid`, each error
    pointing at `/mapping/<header>`, for unknown targets, headers the file lacks, and
    two columns sent to a field that takes one (see the module docstring).
    """
    folded = [fold_header(h) for h in headers]
    explicit, errors = _check_entries(mapping or {}, folded)
    if not errors:
        # One mapping entry for a header the file repeats: two columns, one entry.
        columns: dict[str, list[str]] = {}
        for header, key in zip(headers, folded, strict=True):
            target = explicit.get(key)
            if key in explicit and target is not None:
                columns.setdefault(target, []).append(header)
        for target, names in columns.items():
            if len(names) > 1 and target not in MULTI_COLUMN_TARGETS:
                entry = next(h for h in (mapping or {}) if explicit.get(fold_header(h)) == target)
                errors.append(
                    FieldError(
                        pointer=_pointer(entry),
                        detail=_repeated_target(names, target),
                        type="mapping_target_repeated",
                    )
                )
    if errors:
        raise ImportMappingInvalid(errors)

    targets: list[str | None] = []
    ignored: list[str] = []
    used_keys = {
        t[len(CUSTOM_PREFIX) :] for t in explicit.values() if t and t.startswith(CUSTOM_PREFIX)
    }
    # A field the mapping names is the mapping's alone; default headers for it yield.
    taken = {t for t in explicit.values() if t is not None}
    joinable = MULTI_COLUMN_TARGETS - taken
    for header, key in zip(headers, folded, strict=True):
        if key in explicit:
            target = explicit[key]
        else:
            target = DEFAULT_HEADERS.get(key)
            # Two default columns for a name field are joined ("Primer apellido" +
            # "Segundo apellido"); for any other field the first column wins.
            if target is not None and target in taken and target not in joinable:
                target = None
            if target is None and unknown_columns == "custom_fields":
                target = _custom_target(header, used_keys)
            if target is not None:
                taken.add(target)
        if target is None:
            ignored.append(header)
        targets.append(target)
    return ColumnPlan(headers=list(headers), targets=targets, ignored=ignored)


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
