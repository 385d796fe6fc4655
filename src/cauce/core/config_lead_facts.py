"""What the leads settings know about leads, restated in core, and the pieces their
sections share (`cauce.core.config_scoring`, `cauce.core.config_leads`).

Rules that could never fire, and teams that could never give a lead an owner, are
refused at start-up like any other invalid value. Checking them needs a few facts about
leads that live in the leads context, which core may not import (the layers contract):
they are restated here (and the scoring facts in `cauce.core.config_scoring`), and
tests/leads/test_scoring_routing_config.py keeps each in step with its source.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError


def text_key(text: str) -> str:
    """A text value as rules compare it (scoring `equals`/`in`, routing `custom`, and the
    settings' own checks): case, accents and surrounding spaces aside. `Andalucia` meets
    a rule for `Andalucía`, as routing's `regions` do: typed without its accent, as
    Spanish often is, it scored nothing."""
    text = text.strip()
    if text.isascii():
        return text.casefold()
    plain = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize(
        "NFC", "".join(c for c in plain if not unicodedata.combining(c))
    ).casefold()


# A lead's text fields, one value each: what scoring rules test with `present`, `equals`
# or `in`, and what a merge fills (`leads.intake_merge.SCALAR_FIELDS` is this list).
LEAD_TEXT_FIELDS = (
    "email",
    "phone",
    "phone_extension",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "country",
    "region",
    "city",
    "language",
    "external_id",
)


# The same base as every section in `cauce.core.config`, restated because that module
# imports this one (importing it back would be circular).
class Section(BaseModel):
    """The base of the leads settings' sections: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ISO 3166-1 alpha-2, what a lead's `country` holds (`leads.places.COUNTRY_CODES`).
COUNTRY_CODES: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ
    DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP
    GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG
    KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML
    MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
    PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL
    SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM
    US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()  # noqa: SIM905
)

# What a lead's `source` holds (`leads.schemas.LeadSource`).
LEAD_SOURCES = ("web_form", "api", "csv", "crm", "event", "referral", "chat", "other")

# The names custom fields can have (`leads.field_types.CustomKey`).
CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


def setting_error(loc: tuple[str | int, ...], message: str, got: object) -> InitErrorDetails:
    """One invalid setting, at `loc` within the section being validated."""
    # Raised inside a model validator, a ValidationError keeps its location (prefixed with
    # the parent's), so the message names the setting at fault, not the whole section.
    return InitErrorDetails(
        type=PydanticCustomError("invalid_setting", message), loc=loc, input=got
    )


def refuse(*errors: InitErrorDetails) -> ValidationError:
    """The error a model validator raises for these invalid settings."""
    return ValidationError.from_exception_data("Settings", list(errors))


def _match_text(value: str) -> str:
    # Leads store text NFC-normalised and trimmed; a value written otherwise (an editor
    # saving NFD) would never compare equal.
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise ValueError("is empty: leads never store an empty value")
    return text


MatchText = Annotated[str, AfterValidator(_match_text)]
# A value a lead's field is compared with: text, a boolean or a finite number.
MatchValue = MatchText | bool | int | Annotated[float, Field(allow_inf_nan=False)]
