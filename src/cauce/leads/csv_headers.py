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

# The headers of the two surnames of Spain and Latin America, each filling `last_name`:
# joined, the father's (first) before the mother's (second) whatever their order in the
# file (`csv_rows`). As folded: `2º apellido` is `2o apellido`.
_FIRST_SURNAME = (
    "primer apellido", "apellido 1", "apellido1", "1er apellido", "1o apellido",
    "1 apellido", "apellido paterno",
)  # fmt: skip
_SECOND_SURNAME = (
    "segundo apellido", "apellido 2", "apellido2", "2o apellido", "2do apellido",
    "2 apellido", "apellido materno",
)  # fmt: skip

_DEFAULTS: dict[str, tuple[str, ...]] = {
    "email": (
        "email", "e mail", "mail", "correo", "correo electronico", "email address",
        "e mail address", "direccion de correo", "direccion de correo electronico",
        "correo e", "email 1", "e mail 1", "correo 1", "email corporativo",
        "correo corporativo", "email de contacto", "correo de contacto",
        # Google Contacts
        "e mail 1 value",
    ),
    "phone": (
        "telefono", "tel", "tlf", "tfno", "tlfno", "telf", "phone", "phone number",
        "movil", "telefono movil", "celular", "mobile", "mobile phone", "whatsapp",
        "numero de telefono", "numero telefono", "telefono 1", "telefono de contacto",
        "no telefono", "n telefono", "num telefono", "nro telefono", "no de telefono",
        "num de telefono",
        # Google Contacts; HubSpot
        "phone 1 value", "mobile phone number",
    ),
    "phone_extension": (
        "extension", "ext", "anexo", "extension telefonica", "extension del telefono",
        "phone extension", "phone ext",
    ),
    "first_name": (
        "nombre", "first name", "firstname", "given name", "nombre de pila",
        # Google Contacts (the middle name is a given name: `Juan` + `Carlos`)
        "additional name", "middle name",
    ),
    "last_name": (
        "apellidos", "apellido", "last name", "lastname", "surname", "family name",
        *_FIRST_SURNAME, *_SECOND_SURNAME,
    ),
    "full_name": (
        "nombre completo", "nombre y apellidos", "full name", "name", "contact name",
        "contacto", "nombre del contacto",
    ),
    "company": (
        "empresa", "compania", "company", "company name", "organizacion", "organization",
        "organisation", "razon social", "nombre de la empresa", "cuenta", "account",
        # Google Contacts (older and newer exports)
        "organization 1 name", "organization name",
    ),
    "job_title": (
        "cargo", "puesto", "job title", "title", "position", "role", "titulo",
        "organization 1 title", "organization title",
    ),
    "country": (
        "pais", "country", "country code", "codigo de pais", "country region",
        "address 1 country",
    ),
    # `Estado` and `Departamento` are regions (Mexico, Colombia, Peru...), not a status.
    "region": (
        "provincia", "region", "comunidad autonoma", "comunidad", "estado", "state",
        "province", "departamento", "state region", "address 1 region",
    ),
    "city": ("ciudad", "localidad", "municipio", "poblacion", "city", "town", "address 1 city"),
    "language": ("idioma", "lengua", "language", "lang", "locale"),
    "external_id": ("id", "external id", "id externo", "record id", "codigo", "code"),
    "owner": (
        "propietario", "comercial", "owner", "responsable", "asesor", "vendedor",
        "contact owner", "lead owner", "propietario del contacto", "propietario del lead",
    ),
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
# The second surname's headers, folded: its column goes after the first's.
SECOND_SURNAMES: frozenset[str] = frozenset(fold_header(alias) for alias in _SECOND_SURNAME)


def custom_key(header: str) -> str:
    """A custom-field key from a header: lower-case ASCII letters, digits and `_`."""
    key = fold_header(header).replace(" ", "_")[:64].strip("_")
    if not key:
        return ""
    return key if key[0].isalpha() else f"c_{key}"[:64]
