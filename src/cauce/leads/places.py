"""Countries (ISO 3166-1 alpha-2) and languages (ISO 639-1 / BCP 47 tags) from what
people type: codes in any case, and names in Spanish, English, Catalan, Portuguese,
French, German and Italian.

Country names come from `cauce.leads.country_names` (generated from the locale data that
ships inside `phonenumbers`); only the aliases people use that no locale spells (`EEUU`,
`UK`, `Inglaterra`...) and common alpha-3 codes are hand-kept here.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from cauce.leads.country_names import COUNTRY_NAMES
from cauce.leads.errors import NormalisationError

COUNTRY_CODES: frozenset[str] = frozenset(COUNTRY_NAMES)

_COUNTRY_ALIASES = {
    "eeuu": "US", "ee uu": "US", "usa": "US", "u s a": "US", "u s": "US",
    "estados unidos de america": "US", "united states of america": "US",
    "uk": "GB", "u k": "GB", "great britain": "GB", "gran bretana": "GB",
    "england": "GB", "inglaterra": "GB", "scotland": "GB", "escocia": "GB",
    "wales": "GB", "gales": "GB", "northern ireland": "GB", "irlanda del norte": "GB",
    "mejico": "MX", "holland": "NL", "paises bajos": "NL", "the netherlands": "NL",
    "czechia": "CZ", "republica checa": "CZ", "north macedonia": "MK",
    "macedonia del norte": "MK", "eswatini": "SZ", "turkiye": "TR", "ivory coast": "CI",
    "russian federation": "RU", "vatican city": "VA", "korea": "KR", "corea": "KR",
    "republica argentina": "AR", "peru": "PE", "espana": "ES", "spain": "ES",
    "reino de espana": "ES", "estados unidos mexicanos": "MX", "rep dominicana": "DO",
    "rep dom": "DO", "rd": "DO", "r d": "DO", "republica de chile": "CL",
    "republica de colombia": "CO",
    "republica del peru": "PE", "republica bolivariana de venezuela": "VE",
    "estado plurinacional de bolivia": "BO", "brasil": "BR",
    # ISO 3166-1 alpha-3 codes of the countries Cauce's users sell to most.
    "esp": "ES", "mex": "MX", "arg": "AR", "col": "CO", "chl": "CL", "per": "PE",
    "ven": "VE", "ecu": "EC", "ury": "UY", "pry": "PY", "bol": "BO", "cri": "CR",
    "pan": "PA", "gtm": "GT", "hnd": "HN", "slv": "SV", "nic": "NI", "dom": "DO",
    "cub": "CU", "pri": "PR", "prt": "PT", "bra": "BR", "and": "AD", "fra": "FR",
    "deu": "DE", "ita": "IT", "gbr": "GB", "irl": "IE", "nld": "NL", "bel": "BE",
    "che": "CH", "aut": "AT", "can": "CA",
}  # fmt: skip

# Regions that name one country only: Spain's autonomous communities, Mexico's states,
# and Latin American capitals (most of them a region of their own: Bogotá's capital
# district, Lima's region, Montevideo's department). Typed into the country box, one is
# read as its country, and kept as the lead's region when none was sent; in the region,
# one gives a lead without a country that country (`country_of_region`). Not La Rioja
# (also an Argentine province), Valencia (a Venezuelan city), Durango (a
# Basque town), nor Córdoba, Guadalajara, Granada, León, Mérida or Santa Cruz, names
# places of several countries share; nor a country's own name (Georgia is a US state).
_REGION_ALIASES = {
    "cataluna": "ES", "catalunya": "ES", "catalonia": "ES", "euskadi": "ES",
    "pais vasco": "ES", "andalucia": "ES", "andalusia": "ES", "galiza": "ES",
    "galicia": "ES", "comunidad de madrid": "ES", "comunitat valenciana": "ES",
    "comunidad valenciana": "ES", "valencian community": "ES", "islas canarias": "ES",
    "canarias": "ES", "canary islands": "ES", "aragon": "ES", "asturias": "ES",
    "principado de asturias": "ES", "cantabria": "ES", "castilla y leon": "ES",
    "castilla la mancha": "ES", "extremadura": "ES", "region de murcia": "ES",
    "murcia": "ES", "navarra": "ES", "nafarroa": "ES", "comunidad foral de navarra": "ES",
    "islas baleares": "ES", "illes balears": "ES", "baleares": "ES",
    "balearic islands": "ES", "ceuta": "ES", "melilla": "ES", "madrid": "ES",
    "cdmx": "MX", "ciudad de mexico": "MX", "mexico city": "MX", "mexico df": "MX",
    "mexico d f": "MX", "estado de mexico": "MX", "edomex": "MX", "nuevo leon": "MX",
    "jalisco": "MX", "aguascalientes": "MX", "baja california": "MX",
    "baja california sur": "MX", "campeche": "MX", "chiapas": "MX", "chihuahua": "MX",
    "coahuila": "MX", "colima": "MX", "guanajuato": "MX", "guerrero": "MX",
    "hidalgo": "MX", "michoacan": "MX", "morelos": "MX", "nayarit": "MX", "oaxaca": "MX",
    "puebla": "MX", "queretaro": "MX", "quintana roo": "MX", "san luis potosi": "MX",
    "sinaloa": "MX", "sonora": "MX", "tabasco": "MX", "tamaulipas": "MX",
    "tlaxcala": "MX", "veracruz": "MX", "yucatan": "MX", "zacatecas": "MX",
    "buenos aires": "AR", "bogota": "CO", "lima": "PE", "quito": "EC", "caracas": "VE",
    "montevideo": "UY", "asuncion": "PY",
}  # fmt: skip


_CODE_IN_PUNCTUATION = re.compile(r"[\W_]*[A-Za-z]{2}[\W_]*", re.ASCII)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain).split())


def _country_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for code, names in COUNTRY_NAMES.items():
        for name in names:
            index.setdefault(_fold(name), code)
    index.update(_COUNTRY_ALIASES)
    index.update(_REGION_ALIASES)
    return index


_COUNTRY_BY_NAME = _country_index()


def normalise_country(value: str) -> str:
    """ISO 3166-1 alpha-2, upper case: `es`, `ESP`, `España`, `Spain` all give `ES`.

    Raises `NormalisationError` (`country_unknown`) for anything not recognised.
    """
    text = value.strip()
    if len(text) == 2 and text.upper() in COUNTRY_CODES:
        return text.upper()
    folded = _fold(text[:100])
    if _CODE_IN_PUNCTUATION.fullmatch(text) and folded.upper() in COUNTRY_CODES:
        return folded.upper()  # "MX.", "(ES)"; not "Sí"
    code = _COUNTRY_BY_NAME.get(folded)
    if code is None:
        raise NormalisationError(
            "country_unknown", "is not a country (use an ISO 3166-1 code such as ES or MX)"
        )
    return code


def country_of_region(value: str) -> str | None:
    """The country a region names when it names one only (`_REGION_ALIASES`), in any
    case, with or without accents: `Andalucía` and `CATALUNYA` are `ES`, `CDMX` and
    `Nuevo León` `MX`. None for any other text: a region several countries' places share
    (`Valencia`, `La Rioja`, `Córdoba`), one not listed, a country's name or code."""
    return _REGION_ALIASES.get(_fold(value[:100]))


# Country names that also name regions of other countries: in Spanish, Grenada is
# "Granada", also a Spanish province and a Nicaraguan department; Georgia is a US state.
# Typed into the country box they name the country, unless the lead's phone or region
# says it is in one of these (`shared_country_name`).
_SHARED_COUNTRY_NAMES = {
    "granada": frozenset({"ES", "NI"}),
    "georgia": frozenset({"US"}),
}


_NO_COUNTRIES: frozenset[str] = frozenset()


def shared_country_name(value: str) -> frozenset[str]:
    """The countries with a region named as the country `value` names (`Granada`: Spain
    and Nicaragua, besides Grenada), in any case, with or without accents; empty for any
    other text (asked of every lead's country box: the names it knows are long, and most
    boxes hold a code)."""
    return _NO_COUNTRIES if len(value) < 6 else _shared_name(value[:100])


@lru_cache(maxsize=4096)
def _shared_name(value: str) -> frozenset[str]:
    return _SHARED_COUNTRY_NAMES.get(_fold(value), _NO_COUNTRIES)


def country_name(code: str) -> str | None:
    """The country's Spanish name (for exports and the console), None if unknown."""
    names = COUNTRY_NAMES.get(code.upper())
    return names[0] if names else None


# ISO 639-1, current codes (the withdrawn in/iw/ji/mo/bh are mapped below).
LANGUAGE_CODES: frozenset[str] = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu
    cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he
    hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko
    kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd
    ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se
    sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty
    ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    """.split()  # noqa: SIM905
)

_LANGUAGE_ALIASES = {
    "in": "id", "iw": "he", "ji": "yi", "mo": "ro",
    "spa": "es", "eng": "en", "cat": "ca", "eus": "eu", "baq": "eu", "glg": "gl",
    "por": "pt", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "ita": "it",
    "espanol": "es", "castellano": "es", "spanish": "es", "english": "en", "ingles": "en",
    "catalan": "ca", "catala": "ca", "valenciano": "ca", "valencia": "ca",
    "euskera": "eu", "euskara": "eu", "vasco": "eu", "basque": "eu", "gallego": "gl",
    "galego": "gl", "galician": "gl", "portugues": "pt", "portuguese": "pt",
    "frances": "fr", "francais": "fr", "french": "fr", "aleman": "de", "deutsch": "de",
    "german": "de", "italiano": "it", "italian": "it", "neerlandes": "nl",
    "holandes": "nl", "dutch": "nl", "nederlands": "nl", "chino": "zh", "chinese": "zh",
    "japones": "ja", "japanese": "ja", "arabe": "ar", "arabic": "ar", "ruso": "ru",
    "russian": "ru", "rumano": "ro", "romanian": "ro", "romana": "ro", "polaco": "pl",
    "polish": "pl", "quechua": "qu", "guarani": "gn", "aimara": "ay", "aymara": "ay",
}  # fmt: skip
_TAG = re.compile(r"^([a-z]{2,3})(?:[-_]([a-z]{4}))?(?:[-_]([a-z]{2}|[0-9]{3}))?$", re.I)


def normalise_language(value: str) -> str:
    """A BCP 47 tag with an ISO 639-1 language: `ES` → `es`, `es_mx` → `es-MX`,
    `zh-hant-tw` → `zh-Hant-TW`, `es-419` stays, `Español`/`Spanish` → `es`.

    Raises `NormalisationError` (`language_unknown`) for anything else.
    """
    text = value.strip()
    match = _TAG.match(text)
    if match:
        lang, script, region = match.groups()
        lang = _LANGUAGE_ALIASES.get(lang.lower(), lang.lower())
        region_ok = region is None or region.isdigit() or region.upper() in COUNTRY_CODES
        if lang in LANGUAGE_CODES and region_ok:
            parts = [lang]
            if script:
                parts.append(script.title())
            if region:
                parts.append(region.upper())
            return "-".join(parts)
    alias = _LANGUAGE_ALIASES.get(_fold(text[:60]))
    if alias is not None:
        return alias
    raise NormalisationError(
        "language_unknown", "is not a language (use an ISO 639-1 code such as es or en)"
    )
