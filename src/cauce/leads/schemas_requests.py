"""Request bodies of the leads API besides the lead itself: a person's review of a held
lead (`POST /v1/leads/{id}/review`) and the options of a CSV import (`POST
/v1/leads/import`). The lead, a PATCH and a batch are in `cauce.leads.schemas`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cauce.leads.csv_cells import DATE_FORMATS, read_csv_datetime
from cauce.leads.field_types import CountryCode, TokenText, few_entries, field_error, in_utc
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


# A consent's time, as the schema reads the text `read_csv_datetime` gives.
_AWARE = TypeAdapter(AwareDatetime)
# As the API's consent (`schemas.Consent`): a time this far ahead of the clock is taken
# for a clock's drift, later is in the future.
_CLOCK_SKEW = timedelta(minutes=5)


def _consent_instant(value: str) -> str:
    """`consent_given_at` as the rows' consent takes it: read as a consent date cell is
    (`read_csv_datetime`: ISO 8601, `31/12/2024`, `20241231`...; no offset is UTC), in UTC
    ISO 8601; refused when it is no such date or in the future."""
    try:
        at = in_utc(_AWARE.validate_python(read_csv_datetime(value.strip())))
    except ValidationError:
        # A text of the ISO form that is no real time (`2024-12-31T25:00+01:00`).
        raise PydanticCustomError(
            "date_invalid", f"is not a real date or time: write it as {DATE_FORMATS}"
        ) from None
    except ValueError as exc:  # why `read_csv_datetime` read no date, with the formats
        raise PydanticCustomError("date_invalid", str(exc)) from None
    if at > datetime.now(UTC) + _CLOCK_SKEW:
        raise PydanticCustomError(
            "consent_in_future", "is in the future: a consent is given by now, not later"
        )
    return at.isoformat()


# An import's explicit mapping names at most this many columns.
MAX_MAPPING_ENTRIES: Final = 500


class ImportOptionsIn(RequestModel):
    """The options of `POST /v1/leads/import` (a JSON form field next to the file).

    `mapping` maps a CSV header to a lead field (`email`, `utm.source`,
    `consent.marketing`, `custom_fields.<key>`) or to null to ignore the column; it
    overrides the Spanish/English defaults. `delimiter` and `encoding` override
    detection. `default_phone_region` reads national numbers of rows without a country.
    `consent_wording_version` and `consent_given_at` complete the rows' consents: each
    fills a row's consent that has none of its own (a cell of its column wins).
    """

    mapping: dict[str, str | None] | None = Field(
        default=None,
        description=f"At most {MAX_MAPPING_ENTRIES} entries: header -> lead field (or null).",
    )
    unknown_columns: ImportUnknownColumns = "custom_fields"
    consent_wording_version: TokenText | None = Field(
        default=None,
        description="The consent text version the rows' marketing consent refers to "
        "(a row's own version column wins).",
    )
    consent_given_at: Annotated[str, AfterValidator(_consent_instant)] | None = Field(
        default=None,
        max_length=64,
        description="When the rows' marketing consent was given, for rows whose consent has "
        "no date of its own (a consent date column wins row by row): a date or a time as "
        "consent date cells are read (ISO 8601 with or without an offset, 2024-12-31, "
        "31/12/2024 10:30, 20241231; without an offset UTC, a date alone midnight UTC). "
        "Not in the future.",
        examples=["2024-03-01", "2024-03-01T10:00:00+01:00"],
    )
    delimiter: Literal[",", ";", "\t", "|"] | None = None
    encoding: Literal["utf-8", "cp1252", "latin-1"] | None = None
    default_phone_region: CountryCode | None = None

    @field_validator("mapping", mode="before")
    @classmethod
    def _mapping_count(cls, value: Any) -> Any:
        return few_entries(value, MAX_MAPPING_ENTRIES)  # before each entry is checked


__all__ = ["ImportOptionsIn", "ImportUnknownColumns", "LeadReviewIn"]
