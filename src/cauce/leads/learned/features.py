"""Features of a lead for the learned model, built from the same facts the points model tests.

Every feature is a number named after what it means (`email_company`, `source=web_form`,
`seniority=director`), so a coefficient can be read back as a reason. The vocabulary is
small and bounded: free text (job titles, countries, campaign media) is bucketed here,
never one-hot encoded raw, so neither a typo nor hostile input can grow the model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

# Markets with enough leads to deserve their own weight; the rest of Spain + LatAm shares one.
OWN_MARKETS = frozenset({"ES", "MX", "AR", "CO", "CL", "PE"})
MAX_REPEAT_ARRIVALS = 4
MAX_SOURCE_LENGTH = 32

BOOLEAN_FACTS = ("email_company", "email_free", "email_disposable", "consent_marketing")
# `email` and `job_title` are left out on purpose: an address is exactly one of company,
# free or disposable mail, and a title exactly one seniority level, so a `has_` feature
# would only be their sum and would split their weight.
PRESENT_FACTS = ("phone", "company")

# Job-title keywords, Spanish and English, matched as whole words after accents are
# stripped. The first level whose phrase appears wins, so "director general" is
# executive before "director" makes it director level.
SENIORITY_LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "executive",
        (
            "ceo",
            "cto",
            "cfo",
            "coo",
            "cmo",
            "cio",
            "chief",
            "founder",
            "cofounder",
            "co founder",
            "fundador",
            "fundadora",
            "cofundador",
            "cofundadora",
            "owner",
            "propietario",
            "propietaria",
            "dueno",
            "duena",
            "president",
            "presidente",
            "presidenta",
            "consejero delegado",
            "consejera delegada",
            "director general",
            "directora general",
            "managing director",
            "general manager",
            "gerente general",
            "socio",
            "socia",
        ),
    ),
    (
        "director",
        (
            "director",
            "directora",
            "directivo",
            "directiva",
            "subdirector",
            "subdirectora",
            "head",
            "vp",
            "svp",
            "evp",
            "vicepresidente",
            "vicepresidenta",
            "gerente",
            "jefe",
            "jefa",
        ),
    ),
    (
        "manager",
        (
            "manager",
            "responsable",
            "coordinador",
            "coordinadora",
            "supervisor",
            "supervisora",
            "encargado",
            "encargada",
            "lider",
            "lead",
        ),
    ),
)

# "vice president" would otherwise match the executive "president".
_VICE = re.compile(r" vice ?presiden(?:t|te|ta) ")
_NOT_WORD = re.compile(r"[^a-z0-9]+")

MEDIUM_BUCKETS: Mapping[str, str] = {
    **dict.fromkeys(
        ("cpc", "ppc", "paid", "paid_social", "paidsocial", "paid-social", "display", "cpm", "sem"),
        "paid",
    ),
    **dict.fromkeys(("email", "e-mail", "newsletter", "mailing"), "email"),
    **dict.fromkeys(("social", "organic_social", "social_organic", "rrss"), "social"),
    **dict.fromkeys(("referral", "partner", "affiliate"), "referral"),
    **dict.fromkeys(("organic", "seo"), "organic"),
}

_DESCRIPTIONS: Mapping[str, str] = {
    "email_company": "uses a company email",
    "email_free": "uses free mail",
    "email_disposable": "uses a disposable email domain",
    "consent_marketing": "agreed to marketing",
    "has_phone": "gives a phone number",
    "has_company": "names a company",
    "repeat_arrivals": "came back more than once",
    "seniority=executive": "holds an executive role (CEO, founder, owner...)",
    "seniority=director": "holds a senior role (director, head, VP, gerente, jefe...)",
    "seniority=manager": "holds a manager role (responsable, manager, coordinador...)",
    "seniority=staff": "gives a job title without management keywords",
    "market=latam_other": "is in another Latin American market",
    "market=other": "is outside Spain and Latin America",
    "market=unknown": "gives no country",
    "utm_medium=paid": "came from a paid campaign",
    "utm_medium=email": "came from an email campaign",
    "utm_medium=social": "came from organic social media",
    "utm_medium=referral": "came from a referral or partner",
    "utm_medium=organic": "came from organic search",
    "utm_medium=other": "came from another campaign medium",
    "utm_medium=none": "came without campaign tracking",
}


def _words(text: str) -> str:
    """Casefolded, accent-free words separated (and surrounded) by single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return f" {_NOT_WORD.sub(' ', ascii_only).strip()} "


def seniority(job_title: str | None) -> str | None:
    """The seniority level a job title names (None without a title)."""
    if not job_title or not job_title.strip():
        return None
    words = _VICE.sub(" vp ", _words(job_title))
    for level, phrases in SENIORITY_LEVELS:
        if any(f" {phrase} " in words for phrase in phrases):
            return level
    return "staff"


# The countries `market` puts together as other Latin America: a model's input, so as
# models saved with it were trained (the points model's market rule took more later).
LATAM_FEATURE = frozenset(
    ("ES", "MX", "AR", "CO", "CL", "PE", "EC", "UY", "PY", "BO", "CR", "GT", "DO")
)


def market(country: Any) -> str:
    """The country bucket: a main market on its own, other LatAm together, or elsewhere."""
    if not isinstance(country, str) or not country.strip():
        return "unknown"
    code = country.strip().upper()
    if code in OWN_MARKETS:
        return code
    return "latam_other" if code in LATAM_FEATURE else "other"


def medium_bucket(utm: Any) -> str:
    """The UTM medium's bucket: paid, email, social, referral, organic, other or none."""
    medium = utm.get("medium") if isinstance(utm, Mapping) else None
    if not isinstance(medium, str) or not medium.strip():
        return "none"
    return MEDIUM_BUCKETS.get(medium.strip().casefold(), "other")


def _source(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        return "unknown"
    return value.strip().casefold()[:MAX_SOURCE_LENGTH]


def _arrivals(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def features_of(facts: Mapping[str, Any]) -> dict[str, float]:
    """The learned model's features for one lead's facts (see `scoring.facts_of`).

    Absent features are left out (a zero), so a lead's contribution from a feature it
    does not have is exactly nothing, which keeps per-lead reasons honest.
    """
    features: dict[str, float] = {}
    for name in BOOLEAN_FACTS:
        if facts.get(name) is True:
            features[name] = 1.0
    for name in PRESENT_FACTS:
        if facts.get(name) not in (None, ""):
            features[f"has_{name}"] = 1.0
    repeats = min(max(_arrivals(facts.get("arrivals", 1)) - 1, 0), MAX_REPEAT_ARRIVALS)
    if repeats:
        features["repeat_arrivals"] = float(repeats)
    title = facts.get("job_title")
    level = seniority(title if isinstance(title, str) else None)
    if level is not None:
        features[f"seniority={level}"] = 1.0
    features[f"source={_source(facts.get('source'))}"] = 1.0
    features[f"market={market(facts.get('country'))}"] = 1.0
    features[f"utm_medium={medium_bucket(facts.get('utm'))}"] = 1.0
    return features


def describe(feature: str) -> str:
    """A feature in words, for reasons and reports."""
    if feature in _DESCRIPTIONS:
        return _DESCRIPTIONS[feature]
    name, _, value = feature.partition("=")
    if name == "source":
        return f"came from the {value} source"
    if name == "market":
        return f"is in {value}"
    return feature
