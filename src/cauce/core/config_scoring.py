"""Scoring rules of the leads settings (`CAUCE_LEADS__SCORING_RULES`): the facts of a lead
a rule may test, and the tests that can hold on each.

A rule that could never fire (a field leads do not have, a test that cannot hold on it, a
value that cannot match) is refused at start-up. The facts are restated from the leads
context, which core may not import (see `cauce.core.config_lead_facts`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator, model_validator

from cauce.core.config_lead_facts import (
    COUNTRY_CODES,
    CUSTOM_KEY,
    LEAD_SOURCES,
    LEAD_TEXT_FIELDS,
    MatchValue,
    Section,
    refuse,
    setting_error,
)

ScoringTest = Literal["present", "equals", "in", "true", "gte"]

_TEXT: frozenset[ScoringTest] = frozenset({"present", "equals", "in"})
# Facts every lead has (a flag is true or false, `source` always set): `present` would
# always hold, and it is the default test, so a rule without `test` fires for every lead.
_FLAG: frozenset[ScoringTest] = frozenset({"true", "equals"})
_ALWAYS_SET: frozenset[ScoringTest] = frozenset({"equals", "in"})
_COUNT: frozenset[ScoringTest] = frozenset({"equals", "in", "gte"})
_OBJECT: frozenset[ScoringTest] = frozenset({"present"})
_ANY: frozenset[ScoringTest] = frozenset(get_args(ScoringTest))

# Booleans every lead has (`consent.marketing` only when it sent a consent).
_FLAG_FIELDS = ("email_free", "email_disposable", "email_company", "consent_marketing")

# The facts a scoring rule's `field` names (`leads.scoring.facts_of` over the fields
# `leads.intake_writer.lead_facts` reads), each with the tests that can hold on it.
SCORING_FIELDS: dict[str, frozenset[ScoringTest]] = {
    **dict.fromkeys(LEAD_TEXT_FIELDS, _TEXT),
    "source": _ALWAYS_SET,
    **dict.fromkeys(_FLAG_FIELDS, _FLAG),
    "arrivals": _COUNT,
    **dict.fromkeys(("utm", "consent", "custom_fields"), _OBJECT),
    **dict.fromkeys(("utm.source", "utm.medium", "utm.campaign", "utm.term", "utm.content"), _TEXT),
    "consent.marketing": frozenset({"present", "true", "equals"}),
    **dict.fromkeys(("consent.given_at", "consent.wording_version", "consent.source"), _TEXT),
}
# `custom.<key>` (or `custom_fields.<key>`): a custom field, text, number or boolean.
CUSTOM_FIELD_PREFIXES = ("custom.", "custom_fields.")


def scoring_tests_on(field: str) -> frozenset[ScoringTest] | None:
    """The tests that can hold on a scoring rule's `field`; None if leads have no such fact."""
    for prefix in CUSTOM_FIELD_PREFIXES:
        if field.startswith(prefix):
            return _ANY if CUSTOM_KEY.fullmatch(field.removeprefix(prefix)) else None
    return SCORING_FIELDS.get(field)


def _not_a_flag(value: object) -> object:
    # `true` is 1 to pydantic: `min_score = true` routed as 1, `points = true` gave 1.
    if isinstance(value, bool):
        raise ValueError("is true or false: give a whole number (no quotes)")
    return value


# A whole number a setting gives, never a yes or no read as 1 or 0.
WholeNumber = Annotated[int, BeforeValidator(_not_a_flag)]


# How leads store a phone (`leads.phones.normalise_phone`) and a language
# (`leads.places.normalise_language`): a rule's value in another form never matches.
_E164 = re.compile(r"\+[1-9][0-9]{5,14}")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?")


def _scoring_field_list() -> str:
    plain = [name for name in SCORING_FIELDS if "." not in name]
    nested: dict[str, list[str]] = {}
    for name in SCORING_FIELDS:
        if "." in name:
            head, _, key = name.partition(".")
            nested.setdefault(head, []).append(key)
    parts = [*plain, *(f"{head}.<{'|'.join(keys)}>" for head, keys in nested.items())]
    return ", ".join([*parts, "custom.<key>"])


class ScoringRule(Section):
    """Points given when a lead's field satisfies a test (a transparent scoring model)."""

    name: str = Field(min_length=1, max_length=64)
    field: str = Field(min_length=1, max_length=64, description="e.g. email, source, custom.plan")
    test: ScoringTest = "present"
    value: MatchValue | tuple[MatchValue, ...] | None = None
    points: WholeNumber = Field(ge=-100, le=100)
    reason: str = Field(min_length=1, max_length=200)

    @field_validator("name", "reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # The reason's code and label a client shows: spaces alone would show nothing.
        if not value.strip():
            raise ValueError("is blank")
        return value.strip()

    @field_validator("field")
    @classmethod
    def _known_field(cls, field: str) -> str:
        if scoring_tests_on(field) is None:
            raise ValueError(
                f"leads have no such field; scoring rules test {_scoring_field_list()}"
            )
        return field

    @model_validator(mode="after")
    def _can_hold(self) -> ScoringRule:
        # The value first: a rule with a value and no test (`present`, the default) most
        # likely lacks `test = "equals"`, whatever its field.
        if problem := self._value_problem():
            raise refuse(setting_error(("value",), problem, self.value))
        tests = scoring_tests_on(self.field) or _ANY
        if self.test not in tests:
            # `present` is refused only where every lead has the fact: it always holds.
            holds = "always holds" if self.test == "present" else "can never hold"
            usable = ", ".join(sorted(tests))
            raise refuse(
                setting_error(
                    ("test",), f"{holds} on {self.field}: use a test among {usable}", self.test
                )
            )
        return self

    def _value_problem(self) -> str | None:
        value, test = self.value, self.test
        if test in ("present", "true"):
            if value is not None:
                return (
                    f"test {test!r} takes no value (`present` is the default test): to compare "
                    'with a value, set test = "equals" (or "in" with a list)'
                )
            return None
        if value is None:
            wanted = {"in": "a list of values", "gte": "a number"}.get(test, "a value")
            return f"test {test!r} needs {wanted} to compare with"
        if test == "gte":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "test 'gte' needs a number (value = 250, without quotes)"
            if self.field == "arrivals" and value <= 1:
                return (
                    "always holds: every lead arrived at least once (value = 2 scores a "
                    "lead that came back)"
                )
            return None
        if test == "equals" and isinstance(value, tuple):
            return "test 'equals' takes one value; for a list use test = \"in\""
        if test == "in" and not isinstance(value, tuple):
            return 'test \'in\' takes a list of values, e.g. value = ["ES", "MX"], not a single one'
        options = value if isinstance(value, tuple) else (value,)
        if not options:
            return "test 'in' needs at least one value"
        for option in options:
            if problem := self._option_problem(option):
                return problem
        return None

    def _option_problem(self, option: object) -> str | None:
        if self.field in (*_FLAG_FIELDS, "consent.marketing") and not isinstance(option, bool):
            return f"{self.field} is true or false: compare it with true or false (no quotes)"
        if self.field == "country" and not (
            isinstance(option, str) and option.upper() in COUNTRY_CODES
        ):
            return (
                f"{option!r} is not an ISO 3166-1 alpha-2 country code, which is what leads "
                "store (write ES, MX, GB...: names and 3-letter codes never match)"
            )
        if self.field == "arrivals" and (
            isinstance(option, bool) or not isinstance(option, int) or option < 1
        ):
            return (
                f"{option!r} is not a count of arrivals: compare arrivals with a whole number "
                "of 1 or more (value = 2, without quotes)"
            )
        if self.field == "phone" and not (isinstance(option, str) and _E164.fullmatch(option)):
            return (
                f"{option!r} is not a phone as leads store it: E.164, with + and the country "
                "code, no spaces (+34612345678)"
            )
        if self.field == "language" and not (
            isinstance(option, str) and _LANGUAGE_TAG.fullmatch(option)
        ):
            return (
                f"{option!r} is not a language as leads store it: an ISO 639-1 code, with its "
                "region if any (es, en, pt-BR: names such as Español never match)"
            )
        if self.field == "source" and not (
            isinstance(option, str) and option.lower() in LEAD_SOURCES
        ):
            return f"{option!r} is not a lead source; leads come from {', '.join(LEAD_SOURCES)}"
        return None
