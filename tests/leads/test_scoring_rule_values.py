"""A scoring rule on a phone or a language whose value is not in the form leads store
(E.164; an ISO 639-1 code) could never hold: accepted, it scored nobody, silently
(helper-136's audit). The settings refuse it naming the form, as they do a country name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cauce.core.config_leads import LeadsSettings
from cauce.core.config_scoring import ScoringRule
from cauce.leads.phones import normalise_phone
from cauce.leads.places import normalise_language


def _rule(field: str, value: str | tuple[str, ...]) -> ScoringRule:
    test = "in" if isinstance(value, tuple) else "equals"
    return ScoringRule.model_validate(
        {"name": "r", "field": field, "test": test, "value": value, "points": 5, "reason": "r"}
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("phone", "612 34 56 78", "E.164"),
        ("phone", "0034612345678", "E.164"),
        ("phone", ("+34612345678", "+34 612 345 678"), "E.164"),
        ("language", "Español", "ISO 639-1"),
        ("language", ("es", "spanish"), "ISO 639-1"),
    ],
)
def test_a_value_leads_never_hold_is_refused(field: str, value: object, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        _rule(field, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("phone", "+34612345678", normalise_phone("612 34 56 78", "ES")),
        ("phone", "+525512345678", normalise_phone("+52 1 55 1234 5678", "ES")),
        ("language", "es", normalise_language("Español")),
        ("language", "pt-BR", normalise_language("pt_br")),
        ("language", "es-419", normalise_language("es-419")),
        ("language", "zh-Hant-TW", normalise_language("zh-hant-tw")),
    ],
)
def test_the_stored_forms_are_accepted(field: str, value: str, stored: str) -> None:
    """What the check lets through is what leads hold (the stored form, through the
    leads' own normalisers)."""
    rule = _rule(field, value)
    assert rule.value == value
    assert value.casefold() == stored.casefold()


@pytest.mark.parametrize(
    "settings",
    [
        {"routing_rules": [{"team": "t", "min_score": True}]},
        {"routing_rules": [{"team": "t", "max_score": False}]},
        {"scoring_rules": [{"name": "r", "field": "company", "points": True, "reason": "r"}]},
    ],
)
def test_a_yes_or_no_for_a_number_is_refused(settings: dict[str, object]) -> None:
    """`min_score = true` was read as 1 and `points = true` as 1 point (helper-136)."""
    teams = {"t": [{"name": "Ana"}]}
    with pytest.raises(ValidationError, match="is true or false: give a whole number"):
        LeadsSettings.model_validate({"teams": teams, **settings})
