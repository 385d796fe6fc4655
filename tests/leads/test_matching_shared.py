"""Two people are not one because they share a trade, a team's mailbox or a phone line.

Found by a black-box audit of intake: firms named by trade and owner ("Construcciones
Pérez", "Construcciones Gómez") nearly agreed as whole strings, so namesakes at two firms
merged; colleagues writing from `info@` merged outright; and a switchboard's number added
its full weight to a fuzzy score, holding a colleague for review. Each case is checked in
the matcher and, where the audit saw it, through the API on both databases.
"""

from __future__ import annotations

import httpx
import pytest

from cauce.leads.matching import MatchRecord, Verdict, compare
from cauce.leads.matching.fields import Level, _company
from cauce.leads.matching.record import company_key
from tests.leads.api_client import JOSE, post_lead


def _company_level(a: str, b: str) -> Level:
    ka, kb = company_key(a), company_key(b)
    assert ka is not None
    assert kb is not None
    return _company(ka, kb).level


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Construcciones Pérez S.L.", "Construcciones Gómez S.L."),
        ("Clínica Dental Sonrisa", "Clínica Dental Norte"),
        ("Consultoría Muñoz S.L.", "Consultoría Alonso S.L."),
    ],
)
def test_firms_of_one_trade_are_different_companies(a: str, b: str) -> None:
    assert _company_level(a, b) is Level.DISAGREE
    assert _company_level(b, a) is Level.DISAGREE


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Construcciones Peres S.L.", "Construcciones Pérez"),  # a typo in the owner's name
        ("Telefónica España", "Telefónica de España"),  # a word more, none different
        ("Grupo López", "López Grupo"),  # the same words
        ("Construcciones y Reformas Pérez", "Construcciones Pérez"),
    ],
)
def test_one_firm_written_two_ways_still_nearly_agrees(a: str, b: str) -> None:
    assert _company_level(a, b) is Level.PARTIAL
    assert _company_level(b, a) is Level.PARTIAL


def test_namesakes_at_two_firms_of_one_trade_are_not_duplicates() -> None:
    def elena(company: str, email: str, phone: str) -> MatchRecord:
        return MatchRecord(
            first_name="Elena",
            last_names="Moreno Díaz",
            city="Zaragoza",
            company=company,
            email=email,
            phone=phone,
        )

    a = elena("Construcciones Pérez S.L.", "elena@construcciones-perez.es", "+34976111111")
    b = elena("Construcciones Gómez S.L.", "emoreno@construcciones-gomez.es", "+34976222222")
    decision = compare(a, b)
    assert decision.verdict is not Verdict.DUPLICATE, decision.explain()
    assert compare(b, a).score == decision.score


def test_a_team_mailbox_under_two_peoples_names_decides_nothing() -> None:
    """`info@` shared by Ana and Luis: not the same email rule, and weak evidence; under
    one person's name (or none) it is still that person's exact match."""
    ana = MatchRecord(
        email="info@muebles-garcia.es",
        first_name="Ana",
        last_names="Gil Moreno",
        company="Muebles García",
    )
    luis = MatchRecord(
        email="info@muebles-garcia.es",
        first_name="Luis",
        last_names="Mora Pérez",
        company="Muebles García",
    )
    decision = compare(ana, luis)
    assert decision.rule is None
    assert decision.verdict is Verdict.DISTINCT, decision.explain()
    email = next(e for e in decision.evidence if e.field == "email")
    assert (email.level, email.weight) == (Level.WEAK, 2.0)
    again = MatchRecord(email="info@muebles-garcia.es", first_name="Ana", last_names="Gil")
    assert compare(ana, again).rule == "same_email"
    assert compare(ana, MatchRecord(email="info@muebles-garcia.es")).rule == "same_email"


def test_a_personal_mailbox_still_decides_whatever_the_names() -> None:
    """The documented rule: one person's own address is an exact match (a form filled in
    by an assistant under the boss's name is still the boss's lead)."""
    a = MatchRecord(email="ana.gil@muebles-garcia.es", first_name="Ana", last_names="Gil")
    b = MatchRecord(email="ana.gil@muebles-garcia.es", first_name="Luis", last_names="Mora")
    assert compare(a, b).rule == "same_email"


def test_a_shared_line_weighs_little_under_two_peoples_names() -> None:
    """The docs' José and a colleague on the company's switchboard, same firm and city:
    two people, not even a possible duplicate."""
    jose = MatchRecord(
        first_name="José",
        last_names="Fernández Ruiz",
        company="Aceitunas del Sur S.A.",
        city="Sevilla",
        country="ES",
        phone="+34954123456",
    )
    antonio = MatchRecord(
        first_name="Antonio",
        last_names="López",
        company="Aceitunas del Sur S.A.",
        city="Sevilla",
        phone="+34954123456",
    )
    decision = compare(jose, antonio)
    assert decision.verdict is Verdict.DISTINCT, decision.explain()
    phone = next(e for e in decision.evidence if e.field == "phone")
    assert (phone.level, phone.weight) == (Level.WEAK, 2.0)
    assert "phone" in decision.matched_fields


async def test_the_audits_cases_through_the_api(api: httpx.AsyncClient) -> None:
    """The audit's requests, as sent: each arrival is a lead of its own."""
    first = await post_lead(
        api,
        {
            "full_name": "Elena Moreno Díaz",
            "company": "Construcciones Pérez S.L.",
            "city": "Zaragoza",
            "country": "ES",
            "email": "elena@construcciones-perez.es",
            "phone": "+34 976 11 11 11",
        },
    )
    second = await post_lead(
        api,
        {
            "full_name": "Elena Moreno Díaz",
            "company": "Construcciones Gómez S.L.",
            "city": "Zaragoza",
            "country": "ES",
            "email": "emoreno@construcciones-gomez.es",
            "phone": "+34 976 22 22 22",
        },
    )
    assert first["outcome"] == "created"
    assert second["outcome"] != "merged"
    assert second["id"] != first["id"]
    ana = await post_lead(
        api,
        {
            "email": "info@muebles-garcia.es",
            "full_name": "Ana Gil Moreno",
            "company": "Muebles García",
        },
    )
    luis = await post_lead(
        api,
        {
            "email": "info@muebles-garcia.es",
            "full_name": "Luis Mora Pérez",
            "company": "Muebles García",
        },
    )
    assert (luis["outcome"], luis["duplicate"]) == ("created", None)
    assert luis["id"] != ana["id"]
    jose = await post_lead(api, {**JOSE, "phone": "+34 954 12 34 56"})
    antonio = await post_lead(
        api,
        {
            "full_name": "Antonio López",
            "company": "Aceitunas del Sur S.A.",
            "city": "Sevilla",
            "phone": "+34 954 12 34 56",
        },
    )
    assert (antonio["outcome"], antonio["duplicate"]) == ("created", None)
    assert antonio["id"] != jose["id"]
