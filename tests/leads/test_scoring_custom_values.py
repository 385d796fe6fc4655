"""Scoring reads custom fields as Spanish and Latin American businesses write them: CSV
cells and web-form values are text, so `1.000` employees is a thousand, `250-500` is at
least 250 and `sí` is a yes, the same yes routing's `custom = { vip = true }` sees."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cauce.core.config_leads import RoutingRule
from cauce.core.config_scoring import ScoringRule
from cauce.leads import csv_cells, scoring
from cauce.leads.routing import choose_team
from cauce.leads.scoring import PointsModel, facts_of, same_value
from tests.conftest import SettingsFactory
from tests.leads.api_client import leads_api, post_lead

BIG = ScoringRule(
    name="big", field="custom.empleados", test="gte", value=250, points=30, reason="250+"
)
VIP = ScoringRule(name="vip", field="custom.vip", test="true", points=20, reason="VIP")


def _fired(rule: ScoringRule, value: Any) -> bool:
    score = PointsModel([rule]).score(facts_of({"custom_fields": {"x": value}}))
    return bool(score.reasons)


def _on_x(rule: ScoringRule) -> ScoringRule:
    return rule.model_copy(update={"field": "custom.x"})


# --- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "1.000",  # a Spanish thousands separator: a thousand, not one
        "1.200",
        "1.000.000",
        "1,000",  # Mexico, Central America, an English-locale spreadsheet
        "1,000,000",
        "1 000",
        "1\u00a0000",  # a spreadsheet's no-break space
        "1\u202f000",
        "1.234,56",
        "1,234.56",
        "1000+",
        "1.000+",
        "10.001+",
        "250-500",
        "250 - 500",
        "250\u2013500",  # an en dash
        "250 a 500",
        "de 250 a 500",
        "entre 250 y 500",
        "1.001-5.000",
        "más de 1000",
        "> 300",
        "250",
        " 250 ",
        "250.0",
        "250,0",
        "2.5e2",
        "1.500 €",
        "€1.500",
        "$ 1.500",
        "US$1,500",
        "1.500 EUR",
        "1.500 euros",
        "250%",
        250,
        250.0,
    ],
)
def test_gte_reads_numbers_as_they_are_written(value: Any) -> None:
    """A rule `gte 250` holds on a thousand written with dots, commas or spaces, on an open
    band (`1000+`) and on a range whose lower bound is at least 250."""
    assert _fired(_on_x(BIG), value), value


@pytest.mark.parametrize(
    "value",
    [
        "1,5",  # a decimal comma: one and a half
        "1.5",
        "249,99",
        "249.99",
        "0.500",
        "0,500",
        "200-300",  # the band's lower bound is below 250
        "200 a 300",
        "100+",
        "menos de 500",
        "< 500",
        "hasta 500",
        "1.50.000",  # not thousands groups
        "1.000.5",
        "1,000.000,5",
        "2024-05-01",  # a date is no number
        "612 345 678 / 699",
        "mil",
        "muchos",
        "",
        "+",
        "-",
        True,
        None,
        [300],
    ],
)
def test_gte_never_holds_on_what_is_no_number_of_at_least_250(value: Any) -> None:
    assert not _fired(_on_x(BIG), value), value


@pytest.mark.parametrize(
    ("lead_value", "wanted", "matches"),
    [
        ("1.000", 1000, True),
        ("1.000", 1, False),  # was True: Decimal("1.000") is one
        ("1,000", 1000, True),
        ("1 000", 1000, True),
        ("1.000.000", 1_000_000, True),
        ("1,5", 1.5, True),
        ("1,50", 1.5, True),
        ("1.234,5", 1234.5, True),
        ("1,234.5", 1234.5, True),
        ("1234.567", 1234.567, True),  # four digits before a dot: no thousands group
        ("45 €", 45, True),
        ("15%", 15, True),
        ("-1.000", -1000, True),
        ("\u22125", -5, True),  # a minus sign, as a word processor writes it
        # Bands and ranges are a lower bound for `gte` only: equal to no one number.
        ("1000+", 1000, False),
        ("250-500", 250, False),
        ("más de 1000", 1000, False),
    ],
)
def test_same_value_reads_numbers_as_written(lead_value: Any, wanted: Any, matches: bool) -> None:
    """`equals`, `in` and routing's `custom` read the same numbers, exactly."""
    assert same_value(lead_value, wanted) is matches
    assert same_value(wanted, lead_value) is matches


def test_equals_and_routing_read_a_thousand_alike() -> None:
    rule = ScoringRule(
        name="mil", field="custom.x", test="equals", value=1000, points=10, reason="1000"
    )
    routing = [RoutingRule(team="mil", custom={"x": 1000})]
    for value in ("1.000", "1,000", "1 000", "1000", 1000, 1000.0):
        decision = choose_team(routing, {"custom_fields": {"x": value}}, 0, "rest")
        assert decision is not None
        assert _fired(rule, value), value
        assert decision.team == "mil", value


def test_numbers_read_from_text_are_cached() -> None:
    """Scoring runs per lead at intake, and custom values repeat (a size band): the
    reading of a text is remembered, not parsed again."""
    scoring.read_number.cache_clear()
    for _ in range(3):
        assert scoring.read_number("1.000") == Decimal(1000)
    assert scoring.read_number.cache_info().hits == 2
    assert scoring.read_lower_bound("250-500") == Decimal(250)
    assert scoring.read_lower_bound("1.000") == Decimal(1000)
    assert scoring.read_number("250-500") is None


def test_a_long_text_is_no_number_and_is_not_remembered() -> None:
    """A custom field may hold a long text (a note): no number is that long, and keeping
    such texts would fill the cache with them."""
    scoring.read_number.cache_clear()
    assert not same_value("1.000 " + "empleados " * 30, 1000)
    assert scoring.read_number.cache_info().currsize == 0


# --- booleans --------------------------------------------------------------------------

_YES: list[Any] = ["true", "TRUE", "True", " true ", "sí", "SÍ", "Sí", "si", "SI", "s", "yes", "Y"]
_YES += ["1", "x", "X", "verdadero", "VERDADERO", "ok", "acepta", True]
_NO: list[Any] = ["false", "FALSE", "no", "No", "n", "0", "falso", "no acepta", False]
_NEITHER: list[Any] = ["", "maybe", "vip", "2", "sí señor", None, 1, 0, 1.0]


@pytest.mark.parametrize("value", _YES)
def test_true_holds_on_the_yes_a_csv_cell_or_form_says(value: Any) -> None:
    """`test = "true"` on a custom field fires for the text a CSV cell or a web form holds,
    read as the CSV import reads consent's yes (any case)."""
    assert _fired(_on_x(VIP), value), value


@pytest.mark.parametrize("value", _NO + _NEITHER)
def test_true_does_not_hold_on_a_no_or_other_text(value: Any) -> None:
    assert not _fired(_on_x(VIP), value), value


@pytest.mark.parametrize("value", _YES + _NO + _NEITHER)
def test_scoring_and_routing_agree_on_a_custom_boolean(value: Any) -> None:
    """The same lead is VIP for routing (`custom = { vip = true }`) exactly when it is for
    scoring, by `test = "true"` or `test = "equals"` with `value = true`."""
    lead = {"custom_fields": {"vip": value}}
    decision = choose_team([RoutingRule(team="vip", custom={"vip": True})], lead, 0, "rest")
    assert decision is not None
    routed = decision.team == "vip"
    equals = VIP.model_copy(update={"test": "equals", "value": True})
    assert _fired(_on_x(VIP), value) is routed, value
    assert _fired(_on_x(equals), value) is routed, value
    no = VIP.model_copy(update={"test": "equals", "value": False})
    said_no = any(type(word) is type(value) and word == value for word in _NO)
    assert _fired(_on_x(no), value) is said_no, value


def test_the_yes_and_no_words_are_the_csv_imports() -> None:
    """Scoring reads the yes/no words the CSV import reads for consent."""
    assert scoring.TRUE_WORDS == csv_cells._TRUE
    assert scoring.FALSE_WORDS == csv_cells._FALSE


# --- through the API -------------------------------------------------------------------


async def test_api_scores_and_routes_text_custom_fields(
    settings_factory: SettingsFactory,
) -> None:
    """Leads sent with text custom fields, as a web form or a CSV import gives them, get
    the points of `gte` and `true` rules, and the VIP one goes to the VIP team too."""
    rules = [
        {**BIG.model_dump(), "value": 250},
        VIP.model_dump(exclude={"value"}),
    ]
    leads = {
        "scoring_rules": rules,
        "routing_rules": [{"team": "vip", "custom": {"vip": True}}],
        "teams": {"vip": [{"name": "Vera"}], "rest": [{"name": "Rita"}]},
        "default_team": "rest",
    }
    async with leads_api(settings_factory, **leads) as (_, api):
        cases = [
            ({"empleados": "1.200", "vip": "Sí"}, 50, "vip"),
            ({"empleados": "250 a 500", "vip": "x"}, 50, "vip"),
            ({"empleados": "1000+", "vip": "no"}, 30, "rest"),
            ({"empleados": "1,5", "vip": "TRUE"}, 20, "vip"),
            ({"empleados": "muchos"}, 0, "rest"),
        ]
        for index, (custom, score, team) in enumerate(cases):
            body = await post_lead(
                api, {"email": f"p{index}@empresa{index}.es", "custom_fields": custom}
            )
            assert body["score"] == score, (custom, body)
            detail = (await api.get(f"/v1/leads/{body['id']}")).json()
            assert detail["team"] == team, custom
            codes = {reason["code"] for reason in detail["score_reasons"]}
            assert ("big" in codes, "vip" in codes) == (score in (30, 50), score in (20, 50))


# --- text, accents aside -----------------------------------------------------------------


@pytest.mark.parametrize("region", ["Andalucía", "Andalucia", "ANDALUCÍA", " andalucia "])
def test_a_text_rule_meets_the_value_typed_without_its_accent(region: str) -> None:
    """Spanish is often typed without accents: a rule for `Andalucía` scored `Andalucia`
    nothing, while routing's `regions` took it (helper-136's audit)."""
    rule = ScoringRule(
        name="sur",
        field="region",
        test="in",
        value=("Andalucía", "Murcia"),
        points=10,
        reason="sur",
    )
    assert PointsModel([rule]).score(facts_of({"region": region})).reasons
    equals = rule.model_copy(update={"test": "equals", "value": "Andalucía"})
    assert PointsModel([equals]).score(facts_of({"region": region})).reasons
    routed = RoutingRule(team="food", custom={"sector": "Alimentación"})
    decision = choose_team((routed,), {"custom_fields": {"sector": "ALIMENTACION"}}, 0, None)
    assert decision is not None
    assert decision.team == "food"


def test_other_letters_still_differ() -> None:
    """Only the accents go: `ñ` is `n` with a tilde, so `Peña` meets `Pena`; other text
    still differs."""
    assert same_value("Peña", "pena")
    assert same_value("Sí", "si")
    assert not same_value("Andalucía", "Andalucía Oriental")
    assert not same_value("Murcia", "Mur cia")
