"""Request bodies of the leads API besides the lead itself: a person's review of a held
lead (`POST /v1/leads/{id}/review`) and the options of a CSV import (`POST
/v1/leads/import`). The lead, a PATCH and a batch are in `cauce.leads.schemas`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal, Self

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cauce.leads.field_types import CountryCode, TokenText, few_entries, field_error
from cauce.leads.schemas import RequestModel

# A lead's public id: a UUID, matched in any case (stored in lower case).
_LEAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def _lead_id(value: str) -> str:
    if _LEAD_ID.fullmatch(value) is None:
        raise PydanticCustomError("lead_id", "is not a lead id")
    return value.lower()


class LeadReviewIn(RequestModel):
    """`POST /v1/leads/{id}/review`: a person's decision on a lead held for review.

    `distinct`: it is another person, deliver it. `duplicate`: merge it `into` another
    lead, by default the one it was held against.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, strict=True)

    decision: Literal["distinct", "duplicate"]
    into: Annotated[str, AfterValidator(_lead_id)] | None = Field(
        default=None,
        description="With `duplicate`: the id of the lead to merge into "
        "(default: the lead it is held against).",
    )

    @model_validator(mode="after")
    def _into_for_duplicates(self) -> Self:
        if self.into is not None and self.decision != "duplicate":
            raise field_error(("into",), "into_not_allowed", "is only for a duplicate decision")
        return self


ImportUnknownColumns = Literal["custom_fields", "ignore"]


# An import's explicit mapping names at most this many columns.
MAX_MAPPING_ENTRIES: Final = 500


class ImportOptionsIn(RequestModel):
    """The options of `POST /v1/leads/import` (a JSON form field next to the file).

    `mapping` maps a CSV header to a lead field (`email`, `utm.source`,
    `consent.marketing`, `custom_fields.<key>`) or to null to ignore the column; it
    overrides the Spanish/English defaults. `delimiter` and `encoding` override
    detection. `default_phone_region` reads national numbers of rows without a country.
    """

    mapping: dict[str, str | None] | None = Field(
        default=None,
        description=f"At most {MAX_MAPPING_ENTRIES} entries: header -> lead field (or null).",
    )
    unknown_columns: ImportUnknownColumns = "custom_fields"
    consent_wording_version: TokenText | None = Field(
        default=None,
        description="The consent text version the rows' marketing consent refers to.",
    )
    delimiter: Literal[",", ";", "\t", "|"] | None = None
    encoding: Literal["utf-8", "cp1252", "latin-1"] | None = None
    default_phone_region: CountryCode | None = None

    @field_validator("mapping", mode="before")
    @classmethod
    def _mapping_count(cls, value: Any) -> Any:
        return few_entries(value, MAX_MAPPING_ENTRIES)  # before each entry is checked


__all__ = ["ImportOptionsIn", "ImportUnknownColumns", "LeadReviewIn"]
