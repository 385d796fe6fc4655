"""Synthetic Spanish and Latin American leads whose outcome depends on known features.

Used by the demo, the tests and the training benchmark. Names, companies and places come
from Faker (`es_ES` for Spain, `es_MX` for Latin America, with two surnames as in Spain);
the outcome is drawn from a logistic model over a few known drivers plus noise, so a
learner can be checked against the truth. Some facts the points model rewards (a web
form, marketing consent, a phone, the target markets) have no effect on the outcome here,
which is what lets a learned model beat it. Everything is reproducible from the seed.
"""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from faker import Faker

from cauce.leads.scoring import facts_of

# Log-odds of winning added by each known driver; the base rate is about 1 in 5.
BASE_LOG_ODDS = -2.2
TRUE_EFFECTS: Mapping[str, float] = {
    "company_email": 1.5,
    "senior_title": 1.5,
    "paid_campaign": 1.2,
    "disposable_email": -2.5,
    "repeat_arrival": 0.3,
}
NOISE_SD = 0.5

SENIOR_TITLES = (
    "Director Comercial",
    "Directora de Marketing",
    "CEO",
    "CTO",
    "Fundador",
    "Cofundadora y CEO",
    "Gerente General",
    "Jefe de Compras",
    "Jefa de Operaciones",
    "Head of Sales",
    "VP of Engineering",
    "Director de Tecnología",
    "Subdirectora Financiera",
    "Consejero Delegado",
)
OTHER_TITLES = (
    "Analista de Datos",
    "Técnico de Soporte",
    "Administrativa",
    "Comercial",
    "Ingeniera de Software",
    "Consultor",
    "Responsable de Compras",
    "Coordinadora de Ventas",
    "Marketing Manager",
    "Asistente de Dirección",
    "Contable",
    "Desarrollador Full Stack",
)
FREE_DOMAINS = ("gmail.com", "hotmail.com", "hotmail.es", "outlook.com", "yahoo.com.mx", "yahoo.es")
DISPOSABLE_DOMAINS = ("mailinator.com", "yopmail.com", "guerrillamail.com", "10minutemail.com")
COUNTRIES: tuple[tuple[str, float, str, str], ...] = (
    # (ISO code, share, phone prefix, company e-mail TLD)
    ("ES", 0.45, "+346", "es"),
    ("MX", 0.20, "+5255", "com.mx"),
    ("AR", 0.08, "+54911", "com.ar"),
    ("CO", 0.08, "+57310", "com.co"),
    ("CL", 0.06, "+5699", "cl"),
    ("PE", 0.05, "+519", "pe"),
    ("US", 0.04, "+1415", "com"),
    ("PT", 0.04, "+35191", "pt"),
)
# Digits after each prefix above, so the numbers are valid mobiles of their country.
PHONE_DIGITS = {"ES": 8, "MX": 8, "AR": 8, "CO": 7, "CL": 7, "PE": 8, "US": 7, "PT": 7}
MEDIA: tuple[tuple[str | None, str | None, float], ...] = (
    # (utm medium, utm source, share)
    ("cpc", "google", 0.18),
    ("paid_social", "linkedin", 0.12),
    ("email", "newsletter", 0.15),
    ("organic", "google", 0.20),
    ("referral", "partner", 0.10),
    (None, None, 0.25),
)
PAID_MEDIA = frozenset({"cpc", "paid_social"})
SOURCES = (("web_form", 0.45), ("api", 0.20), ("csv", 0.20), ("crm", 0.15))
CONSENT_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SyntheticLead:
    """A lead's normalised fields (the `leads` columns), its arrivals and its outcome."""

    fields: dict[str, Any]
    arrivals: int
    won: bool
    probability: float

    @property
    def status(self) -> str:
        """`won` or `lost`."""
        return "won" if self.won else "lost"

    def facts(self) -> dict[str, Any]:
        """The scoring facts, as the intake path would derive them."""
        return facts_of(self.fields, arrivals=self.arrivals)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_text.lower() if ch.isalnum())


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([item for item, _ in weighted], weights=[w for _, w in weighted])[0]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class LeadFactory:
    """Draws synthetic leads; one factory, one reproducible stream per seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self._spain = Faker("es_ES")
        self._latam = Faker("es_MX")
        self._spain.seed_instance(seed)
        self._latam.seed_instance(seed + 1)

    def lead(self) -> SyntheticLead:
        """One lead and its outcome."""
        rng = self._rng
        country, _, phone_prefix, tld = _pick(rng, [(c, c[1]) for c in COUNTRIES])
        fake = self._spain if country in ("ES", "PT", "US") else self._latam
        first = fake.first_name()
        last = f"{fake.last_name()} {fake.last_name()}"
        company = fake.company()

        kind = _pick(rng, [("company", 0.50), ("free", 0.38), ("disposable", 0.06), ("none", 0.06)])
        user = f"{_slug(first)}.{_slug(last.split()[0])}"
        email = {
            "company": f"{user}@{_slug(company)[:20] or 'empresa'}.{tld}",
            "free": f"{user}{rng.randint(1, 99)}@{rng.choice(FREE_DOMAINS)}",
            "disposable": f"{user}@{rng.choice(DISPOSABLE_DOMAINS)}",
            "none": None,
        }[kind]
        has_phone = kind == "none" or rng.random() < 0.7
        digits = PHONE_DIGITS.get(country, 8)  # what follows the prefix in a valid number
        phone = (
            f"{phone_prefix}{rng.randrange(10 ** (digits - 1), 10**digits)}" if has_phone else None
        )

        roll = rng.random()
        senior = roll < 0.25
        job_title = (
            rng.choice(SENIOR_TITLES)
            if senior
            else rng.choice(OTHER_TITLES)
            if roll < 0.8
            else None
        )
        medium, utm_source, _ = _pick(rng, [(m, m[2]) for m in MEDIA])
        utm = {"source": utm_source, "medium": medium, "campaign": "q3-2025"} if medium else {}
        source = _pick(rng, SOURCES)
        given_at = CONSENT_EPOCH + timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
        consent = {
            "marketing": rng.random() < 0.55,
            "at": given_at.isoformat(),
            "wording_version": "2025-01",
            "where": source,
        }
        arrivals = _pick(rng, [(1, 0.7), (2, 0.2), (3, 0.07), (4, 0.03)])

        log_odds = BASE_LOG_ODDS + rng.gauss(0.0, NOISE_SD)
        log_odds += TRUE_EFFECTS["company_email"] * (kind == "company")
        log_odds += TRUE_EFFECTS["disposable_email"] * (kind == "disposable")
        log_odds += TRUE_EFFECTS["senior_title"] * senior
        log_odds += TRUE_EFFECTS["paid_campaign"] * (medium in PAID_MEDIA)
        log_odds += TRUE_EFFECTS["repeat_arrival"] * (arrivals - 1)
        probability = _sigmoid(log_odds)
        fields: dict[str, Any] = {
            "email": email,
            "phone": phone,
            "first_name": first,
            "last_name": last,
            "company": company if kind == "company" or rng.random() < 0.5 else None,
            "job_title": job_title,
            "country": country,
            "region": fake.state(),
            "city": fake.city(),
            "language": "en" if country == "US" else "pt" if country == "PT" else "es",
            "source": source,
            "utm": utm,
            "consent": consent,
            "custom_fields": {},
            "email_free": kind == "free",
            "email_disposable": kind == "disposable",
        }
        return SyntheticLead(fields, arrivals, rng.random() < probability, probability)


def synthetic_leads(n: int, *, seed: int = 0) -> list[SyntheticLead]:
    """n synthetic leads with outcomes, the same for the same seed."""
    factory = LeadFactory(seed)
    return [factory.lead() for _ in range(n)]


def training_examples(leads: Sequence[SyntheticLead]) -> list[tuple[dict[str, Any], bool]]:
    """The leads as (facts, won) pairs, the shape `learned.train` takes."""
    return [(lead.facts(), lead.won) for lead in leads]
