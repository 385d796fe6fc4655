"""Validating leads item by item: a batch (`POST /v1/leads/batch`, `LeadBatchIn` and
`validate_batch`), where one bad item never rejects the others; one raw lead
(`validate_lead`, also each CSV row of an import); and pydantic's errors as JSON pointers
(`field_errors`, core's 422 `errors[]` shape). The lead itself is `cauce.leads.schemas`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from cauce.leads.errors import FieldError
from cauce.leads.field_types import DEFAULT_OPTIONS, MAX_BATCH_ITEMS, IntakeOptions, options_from
from cauce.leads.schemas import LeadIn, RequestModel


class LeadBatchIn(RequestModel):
    """`POST /v1/leads/batch`: 1 to `IntakeOptions.max_batch` leads (`leads.max_batch`,
    1,000 by default; the app's OpenAPI document says the configured number). Items are
    validated one by one with `validate_batch`, so one bad item never rejects the others."""

    items: list[Any] = Field(
        min_length=1,
        description=(
            "LeadIn objects; each is validated on its own. At most CAUCE_LEADS__MAX_BATCH "
            "(1,000 by default)."
        ),
        json_schema_extra={"maxItems": MAX_BATCH_ITEMS},
    )

    @field_validator("items")
    @classmethod
    def _at_most(cls, items: list[Any], info: ValidationInfo) -> list[Any]:
        most = options_from(info).max_batch
        if len(items) > most:
            raise PydanticCustomError(
                "too_long",
                "List should have at most {max_length} items, not {actual_length}",
                {"max_length": most, "actual_length": len(items)},
            )
        return items


def _escape(segment: str | int) -> str:
    return str(segment).replace("~", "~0").replace("/", "~1")


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Each pydantic error as `{pointer, detail, type}` (core's 422 `errors[]` shape).

    The pointer is RFC 6901 (`~` → `~0`, `/` → `~1`) under `prefix` (`/items/3`); an
    invalid dict key points at the key (`/custom_fields/Bad Key`).
    """
    out: list[FieldError] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [p for p in error["loc"] if p != "[key]"]
        pointer = prefix + "".join(f"/{_escape(p)}" for p in loc)
        out.append(FieldError(pointer=pointer, detail=error["msg"], type=error["type"]))
    return out


@dataclass(slots=True)
class ItemErrors:
    """The errors of one rejected batch item; pointers start with `/items/{index}`."""

    index: int
    errors: list[FieldError]


@dataclass(slots=True)
class BatchValidation:
    """The outcome of `validate_batch`: valid leads with their index, and the rest."""

    valid: list[tuple[int, LeadIn]] = field(default_factory=list)
    invalid: list[ItemErrors] = field(default_factory=list)


def validate_lead(
    raw: Any, options: IntakeOptions = DEFAULT_OPTIONS, *, pointer_prefix: str = ""
) -> LeadIn | list[FieldError]:
    """Validate one raw lead (a dict from JSON); the lead, or its errors as pointers."""
    if not isinstance(raw, dict):
        return [FieldError(pointer=pointer_prefix, detail="must be an object", type="dict_type")]
    try:
        return LeadIn.model_validate(raw, context=options.context())
    except ValidationError as exc:
        return field_errors(exc, pointer_prefix)


def validate_batch(
    items: Sequence[Any], options: IntakeOptions = DEFAULT_OPTIONS
) -> BatchValidation:
    """Validate each item of a batch on its own; errors point at `/items/{i}/field`."""
    result = BatchValidation()
    for index, raw in enumerate(items):
        outcome = validate_lead(raw, options, pointer_prefix=f"/items/{index}")
        if isinstance(outcome, LeadIn):
            result.valid.append((index, outcome))
        else:
            result.invalid.append(ItemErrors(index=index, errors=outcome))
    return result


__all__ = [
    "MAX_BATCH_ITEMS",
    "BatchValidation",
    "ItemErrors",
    "LeadBatchIn",
    "field_errors",
    "validate_batch",
    "validate_lead",
]
