"""The lead fields a CSV column can fill, and the headers that name them by default.

Headers are compared without case, accents or punctuation (`fold_header`: `Teléfono`,
`TELEFONO` and `teléfono:` are the same header). Targets are lead field names, dotted for
nested ones (`utm.source`, `consent.marketing`, `custom_fields.sector`). The defaults know
Spanish and English headers (`DEFAULT_HEADERS`); a column no default names may become a
custom field under a key made from its header (`custom_key`). How a file's columns are
given their targets is `cauce.leads.csv_columns`; an explicit mapping is checked by
`cauce.leads.csv_mapping`.
"""

from __future__ import annotations

import re
import unicodedata

CUSTOM_PREFIX = "custom_fields."

# Every target a column may fill (besides `custom_fields.<key>`).
LEAD_TARGETS: frozenset[str] = frozenset(
    """
    external_id source status email phone phone_extension first_name last_name full_name company
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
    "phone_extension": (
        "extension", "ext", "anexo", "extension telefonica", "extension del telefono",
        "phone extension", "phone ext",
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

# The fields whose columns are joined (see `cauce.leads.csv_columns`).
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
