"""Scoring and routing settings that could never work are refused at start-up, in one line
naming the setting; rules compare a lead's values the same predictable way everywhere."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cauce.app import create_app
from cauce.core import config_lead_facts, config_scoring
from cauce.core.config_leads import RoutingRule
from cauce.core.config_scoring import ScoringRule
from cauce.core.errors import ConfigError
from cauce.leads import field_types, places
from cauce.leads.intake_writer import lead_facts
from cauce.leads.learned.runs import FACT_COLUMNS
from cauce.leads.models import Lead
from cauce.leads.routing import choose_team
from cauce.leads.schemas import Consent, LeadSource, Utm
from cauce.leads.scoring import PointsModel, facts_of, same_value
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm
from tests.settings_cli import serve_refusal

TEAMS = '[leads.teams]\na = [{ name = "Ana" }]\n'


def _refused(load: Any, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message
    return message


_RULES = itertools.count(1)


def _scoring(body: str) -> str:
    # Each rule its own name: the name is its reasons' code, and two alike are refused.
    name = f"r{next(_RULES)}"
    return f'[[leads.scoring_rules]]\nname = "{name}"\npoints = 10\nreason = "why"\n{body}\n'


def _routing(body: str) -> str:
    return f'[leads]\ndefault_team = "a"\n[[leads.routing_rules]]\nteam = "a"\n{body}\n{TEAMS}'


# --- teams --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "named_by"),
    [
        ('[{ name = "Z1", capacity = 0 }, { name = "Z2", capacity = 0 }]', "routing rule 0"),
        ("[]", "routing rule 0"),
    ],
)
def test_routed_team_without_capacity_is_refused(toml: Any, members: str, named_by: str) -> None:
    """A team a rule sends leads to, whose members have no capacity (or who has none), is
    refused: its leads would get the team and no owner."""
    text = (
        '[leads]\ndefault_team = "a"\n[[leads.routing_rules]]\nteam = "zero"\n'
        f'sources = ["event"]\n[leads.teams]\na = [{{ name = "Ana" }}]\nzero = {members}\n'
    )
    message = _refused(toml, text)
    assert (
        f"cauce.toml: leads.teams.zero: no member with a capacity above 0, yet {named_by}"
        in message
    )


def test_default_team_without_capacity_is_refused(toml: Any) -> None:
    """The default team needs someone with capacity too."""
    message = _refused(toml, '[leads]\ndefault_team = "a"\n[leads.teams]\na = []\n')
    assert "cauce.toml: leads.teams.a:" in message
    assert "default_team sends leads to it" in message


def test_unrouted_team_without_capacity_and_absent_member_are_accepted(toml: Any) -> None:
    """A team no rule names may be empty, and a member on leave (capacity 0) is fine."""
    settings = toml(
        '[leads]\ndefault_team = "a"\n[leads.teams]\n'
        'a = [{ name = "Ana" }, { name = "Leo", capacity = 0 }]\nlater = []\n'
    )
    assert settings.leads.teams["later"] == ()


def test_member_listed_twice_is_refused(toml: Any) -> None:
    """A member listed twice in a team is refused (their turns would silently add up)."""
    message = _refused(
        toml, '[leads.teams]\na = [{ name = "Ana" }, { name = "Ana", capacity = 3 }]\n'
    )
    assert "cauce.toml: leads.teams.a: names Ana more than once" in message


def test_unknown_team_is_refused(toml: Any) -> None:
    """A rule naming a team that is not configured is refused, naming the rule's setting
    and the teams there are (the message named only `CAUCE_LEADS` before a configuration
    audit)."""
    message = _refused(toml, _routing('[[leads.routing_rules]]\nteam = "nope"\nsources = ["api"]'))
    assert (
        "cauce.toml: leads.routing_rules[1].team: names a team not in leads.teams (teams: a) "
        "(got 'nope')" in message
    )


def test_unknown_default_team_is_refused(toml: Any) -> None:
    message = _refused(toml, '[leads]\ndefault_team = "nope"\n')
    assert (
        "cauce.toml: leads.default_team: names a team not in leads.teams (teams: none)" in message
    )


def test_a_value_failing_every_type_is_one_error_at_its_setting(toml: Any) -> None:
    """A routing `custom` value or a scoring `value` may be text, a boolean or a number;
    an empty text failed each, and the message listed one error a type, under pydantic's
    names (`...__SECTOR__FUNCTION-AFTER[_MATCH_TEXT(), STR]`, `...__SECTOR__BOOL`)."""
    message = _refused(
        toml, _routing('[[leads.routing_rules]]\nteam = "a"\ncustom = { sector = "" }')
    )
    assert message.count("cauce.toml: ") == 1, message
    assert "cauce.toml: leads.routing_rules[1].custom.sector: is empty" in message


# --- scoring rules ------------------------------------------------------------------


def test_unknown_scoring_field_is_refused_listing_the_fields(toml: Any) -> None:
    """A misspelt field is refused with the fields rules can test."""
    message = _refused(toml, _scoring('field = "emial"'))
    assert "cauce.toml: leads.scoring_rules[0].field: leads have no such field" in message
    assert "(got 'emial')" in message
    for name in ("email", "email_free", "arrivals", "utm.<source|medium", "custom.<key>"):
        assert name in message


@pytest.mark.parametrize(
    ("body", "setting", "problem"),
    [
        ('field = "custom.empleados"\ntest = "gte"', "value", "test 'gte' needs a number"),
        ('field = "custom.empleados"\ntest = "gte"\nvalue = "250"', "value", "needs a number"),
        ('field = "source"\ntest = "equals"', "value", "test 'equals' needs a value"),
        ('field = "country"\ntest = "in"\nvalue = "ES,MX"', "value", "takes a list of values"),
        ('field = "country"\ntest = "in"\nvalue = []', "value", "at least one value"),
        ('field = "company"\ntest = "equals"\nvalue = ["A", "B"]', "value", 'use test = "in"'),
        ('field = "source"\nvalue = "web_form"', "value", "'present' takes no value"),
        ('field = "email_free"\ntest = "true"\nvalue = true', "value", "'true' takes no value"),
        ('field = "email_free"', "test", "always holds on email_free"),
        ('field = "arrivals"', "test", "always holds on arrivals"),
        ('field = "email"\ntest = "true"', "test", "can never hold on email"),
        ('field = "company"\ntest = "gte"\nvalue = 3', "test", "can never hold on company"),
        ('field = "email_free"\ntest = "equals"\nvalue = "yes"', "value", "true or false"),
        ('field = "country"\ntest = "in"\nvalue = ["ES", "México"]', "value", "'México' is not"),
        ('field = "source"\ntest = "equals"\nvalue = "webform"', "value", "not a lead source"),
        ('field = "arrivals"\ntest = "equals"\nvalue = "dos"', "value", "not a count of arrivals"),
        ('field = "arrivals"\ntest = "in"\nvalue = [2, "3"]', "value", "'3' is not a count"),
        ('field = "arrivals"\ntest = "equals"\nvalue = 0', "value", "of 1 or more"),
        ('field = "arrivals"\ntest = "gte"\nvalue = 1', "value", "always holds"),
        ('field = "arrivals"\ntest = "gte"\nvalue = -3', "value", "always holds"),
        ('field = "custom.Plan"', "field", "leads have no such field"),
        ('field = "email.domain"', "field", "leads have no such field"),
    ],
)
def test_scoring_rule_that_cannot_work_is_refused(
    toml: Any, body: str, setting: str, problem: str
) -> None:
    """A test without the value it needs, with the wrong kind of value, or on a field where
    it can never (or always) hold, is refused naming the setting."""
    message = _refused(toml, _scoring(body))
    assert f"cauce.toml: leads.scoring_rules[0].{setting}: " in message
    assert problem in message


def test_working_scoring_rules_are_accepted(toml: Any) -> None:
    """Each kind of rule that can fire loads, numbers kept as numbers."""
    settings = toml(
        _scoring('field = "custom.empleados"\ntest = "gte"\nvalue = 250')
        + _scoring('field = "country"\ntest = "in"\nvalue = ["es", "MX"]')
        + _scoring('field = "custom.vip"\ntest = "true"')
        + _scoring('field = "consent.marketing"\ntest = "equals"\nvalue = false')
        + _scoring('field = "utm.medium"\ntest = "equals"\nvalue = "cpc"')
        + _scoring('field = "custom_fields.plan"')
        + _scoring('field = "arrivals"\ntest = "in"\nvalue = [2, 3]')
    )
    rules = settings.leads.scoring_rules
    assert rules is not None
    assert [rule.value for rule in rules] == [250, ("es", "MX"), None, False, "cpc", None, (2, 3)]


def test_empty_scoring_rules_are_accepted_with_a_warning(toml: Any) -> None:
    """`scoring_rules = []` loads (every lead scores 0) and the model warns once."""
    settings = toml("[leads]\nscoring_rules = []\n")
    with capture_logs() as logs:
        model = PointsModel(settings.leads.scoring_rules)
        PointsModel()  # the built-in rules: no warning
    assert [log["event"] for log in logs] == ["leads.scoring.no_rules"]
    assert logs[0]["log_level"] == "warning"
    assert model.score(facts_of({"email": "a@b.es"})).value == 0


# --- routing rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "setting", "problem"),
    [
        ('countries = ["España"]', "countries[0]", "not an ISO 3166-1 alpha-2 country code"),
        ('countries = ["MX", "Mexico"]', "countries[1]", "(got 'Mexico')"),
        ('countries = ["UK"]', "countries[0]", "write ES, MX, GB"),
        ('countries = ["ESP"]', "countries[0]", "3-letter codes never match"),
        ('sources = ["webform"]', "sources[0]", "leads come from web_form, api,"),
        ("min_score = 80\nmax_score = 20", "min_score", "above max_score (20)"),
        ("min_score = 500", "min_score", "less than or equal to 100"),
        ("max_score = -1", "max_score", "greater than or equal to 0"),
        ('custom = { VIP = "true" }', "custom.VIP", "not a custom field name"),
        ('custom = { vip = "" }', "custom.vip", "is empty"),
        ('regions = [" "]', "regions[0]", "is empty"),
    ],
)
def test_routing_rule_that_cannot_match_is_refused(
    toml: Any, body: str, setting: str, problem: str
) -> None:
    """Country names, unknown sources, impossible score bounds and custom fields no lead can
    have are refused naming the setting."""
    message = _refused(toml, _routing(body))
    assert f"cauce.toml: leads.routing_rules[0].{setting}" in message
    assert problem in message


def test_rule_after_a_rule_taking_every_lead_is_refused(toml: Any) -> None:
    """A rule without conditions takes every lead, so rules after it could never match."""
    message = _refused(
        toml,
        '[leads]\n[[leads.routing_rules]]\nteam = "a"\n'
        '[[leads.routing_rules]]\nteam = "a"\ncountries = ["MX"]\n' + TEAMS,
    )
    assert (
        "cauce.toml: leads.routing_rules[1]: can never match: routing rule 0 before it" in message
    )


def test_routing_values_are_normalised(toml: Any) -> None:
    """Lower-case country codes and sources load as leads store them; custom values keep
    their type; a last rule without conditions is allowed."""
    settings = toml(
        _routing('countries = ["mx", " es "]\nsources = ["Web_Form"]\ncustom = { vip = true }')
        + '[[leads.routing_rules]]\nteam = "a"\n'
    )
    rule = settings.leads.routing_rules[0]
    assert (rule.countries, rule.sources, rule.custom) == (
        ("MX", "ES"),
        ("web_form",),
        {"vip": True},
    )


# --- comparing values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead_value", "wanted", "matches"),
    [
        (True, "true", True),
        (True, True, True),
        ("TRUE", True, True),
        (False, "true", False),
        ("yes", True, True),
        ("Sí", True, True),
        ("0", False, True),
        ("maybe", True, False),
        (45, 45, True),
        (45, "45", True),
        (45.0, 45, True),
        ("45", 45.0, True),
        (" 45 ", 45.0, True),
        ("45", "45.0", False),
        (0.1, "0.1", True),
        (45, 46, False),
        (1, True, False),
        ("0012", "12", False),
        ("Construcción", " construcción ", True),
        (None, "", False),
        (None, "none", False),
    ],
)
def test_same_value_is_type_aware(lead_value: Any, wanted: Any, matches: bool) -> None:
    """Booleans compare as booleans, numbers by value, text ignoring case and spaces."""
    assert same_value(lead_value, wanted) is matches


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@given(_SCALARS, _SCALARS)
def test_same_value_is_symmetric(a: Any, b: Any) -> None:
    """Which side is the lead's does not change the answer."""
    assert same_value(a, b) == same_value(b, a)


# `1.125` as text is 1125: one to three digits, a dot and three more are read as a
# thousands group, as leads write them (`scoring.read_number`), not as JSON writes a float.
_THOUSANDS_LIKE = re.compile(r"-?[1-9]\d{0,2}\.\d{3}")


@given(
    st.one_of(
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda number: not _THOUSANDS_LIKE.fullmatch(json.dumps(number))
        ),
    )
)
def test_a_value_matches_itself_written_as_json(value: Any) -> None:
    """A boolean or a number matches the text JSON or TOML writes for it (`true`, `45`),
    but for a float written as a thousand would be (`1.125`)."""
    assert same_value(value, value)
    assert same_value(value, json.dumps(value))


_OPTIONS = st.lists(
    st.one_of(st.text(min_size=1, max_size=8).filter(str.strip), st.integers(), st.booleans()),
    min_size=1,
    max_size=4,
)


@given(_OPTIONS, _SCALARS)
def test_scoring_in_agrees_with_same_value(options: list[Any], value: Any) -> None:
    """`in` (with its all-text shortcut) fires exactly when the lead's value is one of them."""
    rule = ScoringRule(
        name="r", field="custom.x", test="in", value=tuple(options), points=10, reason="r"
    )
    fired = PointsModel([rule]).score(facts_of({"custom_fields": {"x": value}})).value == 10
    assert isinstance(rule.value, tuple)
    assert fired == any(same_value(value, option) for option in rule.value)


def test_custom_routing_matches_a_json_boolean_and_numbers() -> None:
    """`custom = {vip = "true"}` routes a lead sent with `"vip": true`, and a number rule
    a number however it was sent (str() made them "True" and "45.0": never matched)."""
    rules = [
        RoutingRule(team="vip", custom={"vip": "true"}),
        RoutingRule(team="big", custom={"empleados": 45}),
    ]
    for custom, team in [
        ({"vip": True}, "vip"),
        ({"vip": "True"}, "vip"),
        ({"vip": False}, "rest"),
        ({"empleados": 45}, "big"),
        ({"empleados": 45.0}, "big"),
        ({"empleados": "45"}, "big"),
        ({}, "rest"),
    ]:
        decision = choose_team(rules, {"custom_fields": custom}, 0, "rest")
        assert decision is not None
        assert decision.team == team, custom


def test_scoring_compares_numbers_and_booleans_by_value() -> None:
    """`equals`/`in` with a number match the lead's number; `gte` ignores booleans."""
    model = PointsModel(
        [
            ScoringRule(
                name="size",
                field="custom.empleados",
                test="equals",
                value=45.0,
                points=10,
                reason="x",
            ),
            ScoringRule(
                name="plan", field="custom.plan", test="in", value=(1, 2), points=20, reason="y"
            ),
            ScoringRule(name="big", field="custom.big", test="gte", value=1, points=30, reason="z"),
            ScoringRule(
                name="vip", field="custom.vip", test="equals", value=True, points=5, reason="v"
            ),
        ]
    )
    facts = facts_of({"custom_fields": {"empleados": 45, "plan": "2", "big": True, "vip": "true"}})
    assert [reason.rule for reason in model.score(facts).reasons] == ["size", "plan", "vip"]
    assert model.score(facts_of({"custom_fields": {"big": "250"}})).value == 30


# --- what core restates about leads stays in step with the leads context --------------


def test_restated_lead_facts_match_the_leads_context() -> None:
    """Country codes, sources, custom-field names and the scoring facts that the settings
    check against are those of the leads context (core cannot import it)."""
    assert config_lead_facts.COUNTRY_CODES == places.COUNTRY_CODES
    assert tuple(source.value for source in LeadSource) == config_lead_facts.LEAD_SOURCES
    assert config_lead_facts.CUSTOM_KEY.pattern == field_types._CUSTOM_KEY.pattern
    facts = lead_facts(Lead(), 1)
    plain = {name for name in config_scoring.SCORING_FIELDS if "." not in name}
    assert plain == set(facts)
    nested = {name for name in config_scoring.SCORING_FIELDS if "." in name}
    assert nested == {f"utm.{key}" for key in Utm.model_fields} | {
        f"consent.{key}" for key in Consent.model_fields
    }


def test_training_reads_the_facts_intake_scores_with() -> None:
    """`cauce leads train` builds each lead's facts from the columns intake's scoring
    reads: a rule on any of them scores a training example as it scored the lead."""
    training = facts_of({column.key: None for column in FACT_COLUMNS}, arrivals=1)
    assert set(training) == set(lead_facts(Lead(), 1))


# --- start-up ---------------------------------------------------------------------------


def test_serve_refuses_a_team_without_capacity_in_one_line(tmp_path: Path) -> None:
    """`cauce serve` with a routed team nobody can take leads in exits 2, one line, naming it."""
    (tmp_path / "cauce.toml").write_text(
        '[leads]\ndefault_team = "zero"\n[leads.teams]\n'
        'zero = [{ name = "Z1", capacity = 0 }, { name = "Z2", capacity = 0 }]\n'
    )
    assert "cauce.toml: leads.teams.zero" in serve_refusal(tmp_path)


@pytest.fixture
async def leads_app(settings_factory: SettingsFactory) -> AsyncIterator[FastAPI]:
    """The app routing VIP leads (by a custom boolean written as text) to their own team."""
    settings = settings_factory(
        jobs={"embedded_worker": False},
        leads={
            "routing_rules": [
                {"team": "vip", "custom": {"vip": "true"}},
                {"team": "big", "custom": {"empleados": 45}},
            ],
            "teams": {
                "vip": [{"name": "Vera"}],
                "big": [{"name": "Bruno"}],
                "rest": [{"name": "Rita"}],
            },
            "default_team": "rest",
        },
    )
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        yield app


async def test_api_routes_by_typed_custom_fields(api: httpx.AsyncClient) -> None:
    """Through the API, on both databases: `"vip": true` reaches the VIP team's member and
    `"empleados": 45.0` the team of `empleados = 45`."""
    for index, (custom, team, owner) in enumerate(
        [
            ({"vip": True}, "vip", "Vera"),
            ({"empleados": 45.0}, "big", "Bruno"),
            ({"vip": False, "empleados": 44}, "rest", "Rita"),
        ]
    ):
        response = await api.post(
            "/v1/leads", json={"email": f"l{index}@empresa{index}.es", "custom_fields": custom}
        )
        assert response.status_code == 201, response.text
        detail = (await api.get(f"/v1/leads/{response.json()['id']}")).json()
        assert (detail["team"], detail["owner"]) == (team, owner)


# --- merge settings -------------------------------------------------------------------


def test_merge_fields_are_the_fields_a_merge_fills() -> None:
    """The settings' copy of the fields a merge fills (core cannot import the leads
    context) is the leads context's own list."""
    from cauce.core.config_leads import MERGED_FIELDS
    from cauce.leads.intake_merge import MERGEABLE

    assert MERGED_FIELDS == MERGEABLE


@pytest.mark.parametrize(
    ("dedupe", "setting", "problem"),
    [
        ('overwrite_fields = ["job_tittle"]', "overwrite_fields[0]", "names no field"),
        ('overwrite_fields = ["city", "utm_*"]', "overwrite_fields[1]", "names no field"),
        ('accumulate_fields = ["city"]', "accumulate_fields[0]", "only sources"),
        ('overwrite_fields = ["consent"]', "overwrite_fields[0]", "names no field"),
        ('overwrite_fields = ["custom_fields"]', "overwrite_fields[0]", "names no field"),
    ],
)
def test_merge_settings_naming_no_field_are_refused(
    toml: Any, dedupe: str, setting: str, problem: str
) -> None:
    """A misspelt field to overwrite overwrote nothing, silently; a field accumulated
    became a list, which its column cannot store."""
    message = _refused(toml, f"[leads.dedupe]\n{dedupe}\n")
    assert f"cauce.toml: leads.dedupe.{setting}: {problem}" in message


def test_merge_settings_naming_fields_are_accepted(toml: Any) -> None:
    """Names, shell patterns matching a field, and custom fields load."""
    settings = toml(
        '[leads.dedupe]\noverwrite_fields = ["job_title", "c*y", "custom_fields.plan"]\n'
        'accumulate_fields = ["sources"]\n'
    )
    assert settings.leads.dedupe.overwrite_fields == ("job_title", "c*y", "custom_fields.plan")
