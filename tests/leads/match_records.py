"""Hypothesis strategies for match records: Spanish names with typos, swapped given
names and surnames, shared or clashing contact details (the fast-path equivalence tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from cauce.leads.matching import MatchRecord

GIVEN = ["José", "Jose", "Pepe", "María José", "Maria", "Mario", "J.", "Itziar", "Luis"]
SURNAMES = [
    "García López",
    "Lopez Garcia",
    "García",
    "Garcia Lopes",
    "Etxeberria",
    "Etxeberria Goikoetxea",
    "Goikoetxea Etxeberria",
    "Núñez Gil",
]


def maybe(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    """The value or None."""
    return st.none() | strategy


names = st.sampled_from(GIVEN + SURNAMES) | st.text(alphabet="aeilnorsgz ", max_size=10)
records = st.builds(
    MatchRecord,
    email=maybe(st.sampled_from(["jose.garcia@x.es", "josegarcia@y.es", "jg@gmail.com"])),
    phone=maybe(st.sampled_from(["+34600000001", "+34600000002"])),
    # Given names and surnames drawn from one pool: they get typed in each other's box.
    first_name=maybe(names),
    last_names=maybe(names),
    company=maybe(st.sampled_from(["Acme S.L.", "ACME", "Acmee", "Acme Ibérica", "Beta SA"])),
    city=maybe(st.sampled_from(["Madrid", "Madird", "Lima"])),
    postcode=maybe(st.sampled_from(["28013", "28031"])),
    region=maybe(st.sampled_from(["Madrid", "Galicia"])),
    country=maybe(st.sampled_from(["ES", "MX"])),
    date_of_birth=maybe(st.sampled_from(["1980-01-02", "1980-02-01", "1981-01-02"])),
    address=maybe(st.sampled_from(["Calle Mayor 5", "C/ Mayor 5 2ºB", "Gran Vía 1"])),
    tax_id=maybe(st.sampled_from(["12345678Z", "12345678X"])),
)
