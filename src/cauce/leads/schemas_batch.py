"""Validating leads item by item: a batch (`POST /v1/leads/batch`, `LeadBatchIn` and
`validate_batch`), where one bad item never rejects the others; one raw lead
(`validate_lead`, also each CSV row of an import); and pydantic's errors as JSON pointers
(`field_errors`, core's 422 `errors[]` shape). The lead itself is `cauce.leads.schemas`.

What an invalid body costs and answers is bounded whatever it holds: pydantic makes an
error of each unknown member (`extra="forbid"`), so an object with far more members than
its model has fields is refused whole, with one error, before pydantic sees it
(`crowded`), and an item's answer lists at most `MAX_ITEM_ERRORS` errors.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import Any, Final, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from cauce.core.web.problems import echo
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


# The most errors the answer about one item (a lead, a batch item, a request body) lists;
# a last entry (`too_many_errors`) says how many more there were.
MAX_ITEM_ERRORS: Final = 20
TOO_MANY_ERRORS: Final = "too_many_errors"
# An object may have this many members beyond its model's fields (and their aliases)
# before it is refused whole (`crowded`): as many as an answer lists errors, so an object
# refused whole has more unknown members than its errors could have shown.
EXTRA_MEMBERS: Final = MAX_ITEM_ERRORS
TOO_MANY_FIELDS: Final = "too_many_fields"
_NAMED_UNKNOWN = 5  # the unknown members a `too_many_fields` error names
_NAME_ECHO = 40  # and how much of each


# What a lead shows that Cauce sets, never the caller: sent in a lead or a change, each
# is told so rather than "Extra inputs are not permitted".
READ_ONLY_FIELDS = frozenset(
    {
        "id", "score", "score_model", "score_reasons", "team", "sources", "duplicate_of",
        "hold", "created_at", "updated_at", "is_disposable_email", "is_free_email",
        "arrivals", "duplicates", "duplicates_total", "history", "history_total", "sync",
        "version",
    }
)  # fmt: skip
READ_ONLY_DETAIL = "is read-only: Cauce sets it (leave it out)"


def _read_only(loc: list[int | str]) -> bool:
    """A member of the lead itself that Cauce sets."""
    return len(loc) == 1 and loc[0] in READ_ONLY_FIELDS


def field_errors(
    exc: ValidationError, prefix: str = "", most: int | None = None, *, lead: bool = False
) -> list[FieldError]:
    """Each pydantic error as `{pointer, detail, type}` (core's 422 `errors[]` shape).

    The pointer is RFC 6901 (`~` → `~0`, `/` → `~1`) under `prefix` (`/items/3`); an
    invalid dict key points at the key (`/custom_fields/Bad Key`). With `most`, the first
    `most` errors only, and a last `too_many_errors` entry at `prefix` saying how many
    were left out. `lead`: the errors are a lead's (or a change's), whose members that
    Cauce sets are answered `read_only`.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    shown = errors if most is None else errors[:most]
    out: list[FieldError] = []
    for error in shown:
        loc = [p for p in error["loc"] if p != "[key]"]
        pointer = prefix + "".join(f"/{_escape(p)}" for p in loc)
        if lead and error["type"] == "extra_forbidden" and _read_only(loc):
            out.append(FieldError(pointer=pointer, detail=READ_ONLY_DETAIL, type="read_only"))
            continue
        out.append(FieldError(pointer=pointer, detail=error["msg"], type=error["type"]))
    if len(shown) < len(errors):
        left_out = len(errors) - len(shown)
        out.append(
            FieldError(
                pointer=prefix,
                detail=f"{left_out} more error(s) left out; fix these and send it again",
                type=TOO_MANY_ERRORS,
            )
        )
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (`Utm | None` → `Utm`), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


@lru_cache(maxsize=64)
def _members(model: type[BaseModel]) -> tuple[frozenset[str], dict[str, type[BaseModel]]]:
    """The member names an object for `model` may have (fields and their aliases), and
    its members that are objects of a model of their own (`utm`, `consent`)."""
    names: set[str] = set()
    nested: dict[str, type[BaseModel]] = {}
    for name, info in model.model_fields.items():
        own = {name} | {a for a in (info.alias, info.validation_alias) if isinstance(a, str)}
        names |= own
        inner = _model_in(info.annotation)
        if inner is not None:
            nested.update(dict.fromkeys(own, inner))
    return frozenset(names), nested


def crowded(raw: Any, model: type[BaseModel], pointer: str = "") -> FieldError | None:
    """One `too_many_fields` error for an object with more members than `model` has
    fields (and aliases) by over `EXTRA_MEMBERS` (or for such an object in one of its
    model fields, `/utm`), naming how many it has and its first unknown ones; None for
    any other value.

    Checked before pydantic: with `extra="forbid"` pydantic makes an error of every
    unknown member, and 1,000 batch items of 1,480 members each made 1.5 million (137 MiB
    of answer, seconds of a blocked event loop).
    """
    if not isinstance(raw, dict):
        return None
    names, nested = _members(model)
    if len(raw) > len(names) + EXTRA_MEMBERS:
        unknown = list(islice((k for k in raw if k not in names), _NAMED_UNKNOWN))
        named = ", ".join(f'"{echo(str(k), _NAME_ECHO)}"' for k in unknown)
        return FieldError(
            pointer=pointer,
            detail=f"has {len(raw)} members, far more than the {len(names)} fields it may "
            f"have; unknown ones include {named}",
            type=TOO_MANY_FIELDS,
        )
    for name, inner in nested.items():
        found = crowded(raw.get(name), inner, f"{pointer}/{_escape(name)}")
        if found is not None:
            return found
    return None


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
    raw: Any,
    options: IntakeOptions = DEFAULT_OPTIONS,
    *,
    pointer_prefix: str = "",
    most_errors: int | None = None,
) -> LeadIn | list[FieldError]:
    """Validate one raw lead (a dict from JSON); the lead, or its errors as pointers (at
    most `most_errors` of them and a `too_many_errors` entry; one `too_many_fields` for a
    crowded object, see `crowded`)."""
    if not isinstance(raw, dict):
        return [FieldError(pointer=pointer_prefix, detail="must be an object", type="dict_type")]
    too_many = crowded(raw, LeadIn, pointer_prefix)
    if too_many is not None:
        return [too_many]
    try:
        return LeadIn.model_validate(raw, context=options.context())
    except ValidationError as exc:
        return field_errors(exc, pointer_prefix, most_errors, lead=True)


def validate_batch(
    items: Sequence[Any], options: IntakeOptions = DEFAULT_OPTIONS
) -> BatchValidation:
    """Validate each item of a batch on its own; errors point at `/items/{i}/field`, at
    most `MAX_ITEM_ERRORS` of them an item."""
    result = BatchValidation()
    for index, raw in enumerate(items):
        outcome = validate_lead(
            raw, options, pointer_prefix=f"/items/{index}", most_errors=MAX_ITEM_ERRORS
        )
        if isinstance(outcome, LeadIn):
            result.valid.append((index, outcome))
        else:
            result.invalid.append(ItemErrors(index=index, errors=outcome))
    return result


__all__ = [
    "MAX_BATCH_ITEMS",
    "MAX_ITEM_ERRORS",
    "TOO_MANY_ERRORS",
    "TOO_MANY_FIELDS",
    "BatchValidation",
    "ItemErrors",
    "LeadBatchIn",
    "crowded",
    "field_errors",
    "validate_batch",
    "validate_lead",
]
