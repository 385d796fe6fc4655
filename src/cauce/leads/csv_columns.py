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
        "gdpr consent", "rgpd",
    ),
    "consent.given_at": ("fecha consentimiento", "fecha del consentimiento", "consent date"),
    "consent.wording_version": (
        "version consentimiento", "version texto consentimiento", "consent version",
        "consent wording version",
    ),
    "consent.source": ("origen consentimiento", "origen del consentimiento", "consent source"),
}  # fmt: skip

_MULTI_COLUMN = frozenset({"last_name", "full_name", "first_name"})


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


def plan_columns(
    headers: Sequence[str],
    mapping: Mapping[str, str | None] | None = None,
    unknown_columns: UnknownColumns = "custom_fields",
) -> ColumnPlan:
    """Decide each column's target: explicit `mapping` first (headers compared folded),
    then the defaults, then `unknown_columns`. Raises `ImportMappingInvalid`, each error
    pointing at `/mapping/<header>`, for unknown targets or headers the file lacks.
    """
    folded = [fold_header(h) for h in headers]
    explicit: dict[str, str | None] = {}
    errors: list[FieldError] = []
    for header, target in (mapping or {}).items():
        pointer = "/mapping/" + header.replace("~", "~0").replace("/", "~1")
        if fold_header(header) not in folded:
            errors.append(
                FieldError(
                    pointer=pointer,
                    detail=f"the file has no column named '{header}'",
                    type="mapping_column_unknown",
                )
            )
            continue
        try:
            explicit[fold_header(header)] = _resolve_target(target)
        except ValueError as exc:
            errors.append(
                FieldError(pointer=pointer, detail=str(exc), type="mapping_target_unknown")
            )
    if errors:
        raise ImportMappingInvalid(errors)

    targets: list[str | None] = []
    ignored: list[str] = []
    used_keys = {
        t[len(CUSTOM_PREFIX) :] for t in explicit.values() if t and t.startswith(CUSTOM_PREFIX)
    }
    taken: set[str] = set()
    for header, key in zip(headers, folded, strict=True):
        if key in explicit:
            target = explicit[key]
        else:
            target = DEFAULT_HEADERS.get(key)
            # Two columns for one field are joined ("Primer apellido" + "Segundo
            # apellido"); for any other field the first column wins.
            if target is not None and target in taken and target not in _MULTI_COLUMN:
                target = None
            if target is None and unknown_columns == "custom_fields":
                target = _custom_target(header, used_keys)
        if target is None:
            ignored.append(header)
        else:
            taken.add(target)
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
