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
            "chairman",
            "chairwoman",
            "chairperson",
            "chair of the board",
            "board chair",
            "consejero delegado",
            "consejera delegada",
            "director general",
            "directora general",
            "managing director",
            "general manager",
            "gerente general",
            "gerenta general",
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
            # One below a gerente general, as a subdirector general is below a director
            # general (a plain subgerente is a manager, below).
            "subgerente general",
            "subgerenta general",
            "head",
            "vp",
            "svp",
            "evp",
            "vicepresidente",
            "vicepresidenta",
            "gerente",
            "gerenta",
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
            # A deputy manager, one below the gerente (director level above).
            "subgerente",
            "subgerenta",
            "lider",
            "lideresa",
            "lead",
        ),
    ),
)

# "vice president" would otherwise match the executive "president", and "vice chairman"
# (or deputy chairman) the executive "chairman": both read as a VP does.
_VICE_ROLE = r"vice ?presiden(?:t|te|ta)|(?:vice|deputy) ?chair(?:man|woman|person)?"
_VICE = re.compile(rf" (?:{_VICE_ROLE}) ")
# "Sub-gerente", "Sub Director": one word, as "Subgerente" and "Subdirector" are (else
# "Sub-directora General" read as a directora general and "Sub Gerente" as a gerente).
_SUB = re.compile(r" sub (?=(?:gerente|gerenta|director|directora) )")

# Before the levels are read, the roles a title names that are not the person's own are
# taken out (`_own_roles`):
# - whom an assistant or secretary assists: "Secretaria del Director General", "Asistente
#   personal del CEO", "Assistant to the CEO", "PA to the Managing Director", "CEO's
#   Assistant" ("Assistant Director" is a director, "Asistente de Dirección" names no role);
# - whom an adjunto assists ("Adjunto al CEO", "Adjunta a la Dirección General": a staff
#   role at someone's side; "Director Adjunto", a deputy director, is a director);
# - a former role: "Ex-CEO", "Former Sales Director", "Antigua Directora", "Past President"
#   (one role: "Ex-CEO y Fundador" is still a founder; "Exdirector", one word, was never
#   read as a role); and a retired one, the word after it: "Director General (jubilado)",
#   "Directora de Ventas jubilada", "CEO (retired)", "Gerente retirado" ("retirado" only
#   just after the role or in brackets: "Jefe de Retirada de Residuos" runs a service);
# - a role in a residents' or parents' association, not a company: "Presidente de la
#   comunidad de vecinos" (or de propietarios, the same body), "de la asociación de vecinos"
#   (AAVV), "de la junta de vecinos", "del AMPA".
# A title left without a role of its own is staff level: a title, no management role now.
# These rules read punctuation as a word of its own (a hyphen joins words, as a space
# does), so "Office Manager / PA" is not a manager's PA; the levels then read only the
# words. A role taken out leaves a mark (`_CUT`) no phrase matches across, and a title
# none of these rules touches reads exactly as it did before them.
_CUT = "\x00"
_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9\s-]")
_WORD = re.compile(r"[a-z0-9]+")
_ROLE = "(?:{}|{})".format(
    _VICE_ROLE,
    "|".join(
        re.escape(phrase)
        for phrase in sorted(
            {phrase for _, phrases in SENIORITY_LEVELS for phrase in phrases},
            key=lambda phrase: (-len(phrase), phrase),
        )
    ),
)
# Up to three words before an English role ("to the Regional Sales Director"), not "and".
_MODIFIERS = r"(?: (?!(?:and|or|y|e|o|u) )[a-z0-9]+){0,3}?"
_AND = r"(?: (?:and|y|e|&|/|\+))?"
_ASSISTED = (
    re.compile(
        r"(?P<keep> (?:asistente|asistenta|secretaria|secretario|auxiliar|ayudante|adjunto"
        r"|adjunta)"
        r"(?: (?:personal|ejecutiva|ejecutivo|particular))?)"
        rf" (?:del|al|de la|a la|de|a) {_ROLE}"
        rf"(?:{_AND}(?: (?:del|al|de la|a la|de|a|el|la))? {_ROLE})*(?= )"
    ),
    re.compile(
        r"(?P<keep> (?:assistant|secretary|pa|ea))"
        rf" (?:to|for|of)(?: (?:the|our))?{_MODIFIERS} {_ROLE}"
        rf"(?:{_AND}(?: (?:the|to|of))? {_ROLE})*(?= )"
    ),
    # "CEO Assistant", "CEO's Assistant" (not "PA" or "EA": "Country Manager PA", Panama).
    re.compile(rf"(?P<keep>) {_ROLE}(?: [\u2019'] s| s)?(?= (?:assistant|secretary) )"),
)
_FORMER = re.compile(
    rf"(?P<keep>) (?:(?:ex|former|past|retired)(?! officio )(?: \.)?{_MODIFIERS}"
    rf"|antiguo|antigua) {_ROLE}(?= )"
)
# Up to four words between a role and the retirement that follows it ("Director de Ventas
# jubilado"), none a conjunction ("CEO de Acme y Director jubilado" still runs Acme), the
# last not an article ("Director del Hogar del Jubilado" runs a retirees' centre).
_QUALIFIED = (
    r"(?: (?!(?:and|or|y|e|o|u) )[a-z0-9]+){0,4}"
    r"(?<! de)(?<! del)(?<! el)(?<! la)(?<! al)(?<! the)(?<! of)"
)
_RETIRED = re.compile(
    rf"(?P<keep>) {_ROLE}(?=(?:{_QUALIFIED}(?: [(,])? (?:jubilado|jubilada|retired)"
    r"|(?: [(,])? (?:retirado|retirada)"
    rf"|{_QUALIFIED} \( (?:retirado|retirada)) )"
)
_ASSOCIATION = re.compile(
    rf"(?P<keep>) {_ROLE}(?: (?:de la|del|de|of the|of))?"
    r"(?= (?:comunidad de (?:vecinos|propietarios)|asociacion de vecinos|junta de vecinos"
    r"|ampa|aavv|aa \. vv) )"
)

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


def _own_roles(job_title: str) -> str:
    """A title's casefolded, accent-free words, separated (and surrounded) by single
    spaces, without the roles that are not the person's own (`_CUT` where one was)."""
    decomposed = unicodedata.normalize("NFKD", job_title.casefold().replace(_CUT, " "))
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    tokens = _SUB.sub(" sub", f" {' '.join(_TOKEN.findall(ascii_only))} ")
    for rule in (_FORMER, _RETIRED, *_ASSISTED, _ASSOCIATION):
        tokens = rule.sub(lambda match: f"{match['keep']} {_CUT}", tokens)
    kept = (token for token in tokens.split() if token == _CUT or _WORD.fullmatch(token))
    return f" {' '.join(kept)} "


def seniority(job_title: str | None) -> str | None:
    """The seniority level a job title names (None without a title)."""
    if not job_title or not job_title.strip():
        return None
    words = _VICE.sub(" vp ", _own_roles(job_title))
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
