"""Field types shared by the lead request models: cleaned text of bounded length,
email/country/language normalised through `cauce.leads.normalise`, bounded custom
fields, and the validation options carried in pydantic's context.

Every validator turns a `NormalisationError` into a `PydanticCustomError` with the same
stable code, so a rejection always names its field and why.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, PlainValidator, Strict, ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from cauce.leads.errors import NormalisationError
from cauce.leads.normalise import (
    MAX_RAW_TEXT,
    clean_text,
    is_disposable_domain,
    is_free_mail_domain,
    normalise_country,
    normalise_email,
    normalise_language,
    smart_case_name,
)
from cauce.leads.phones import DEFAULT_PHONE_REGION, normalise_extension, normalise_phone
from cauce.leads.placeholders import is_stand_in_address, marks_only, says_none

CONTEXT_KEY = "cauce.leads"
MAX_CUSTOM_FIELDS = 50
MAX_CUSTOM_VALUE_BYTES = 1024
_MAX_SAFE_INT = 2**53  # beyond this JavaScript clients lose precision


# The most items of a batch by default (`leads.max_batch`, whose default core restates).
MAX_BATCH_ITEMS = 1000


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    """Options for validating leads, passed in pydantic's validation context.

    `default_phone_region` reads national numbers when the lead has no country (a lead
    with `country: MX` reads `55 1234 5678` as Mexican whatever this says). `now`, when
    given, refuses a consent timestamp in the future (5 minutes of skew allowed).
    `max_batch` is the most items a `POST /v1/leads/batch` takes (`leads.max_batch`).
    `stored_country` is a changed lead's country: a PATCH without `country` splits a
    `full_name` by its naming convention (as intake did with it). `stored_places`, its
    region and phone: a PATCH's `Granada` is read by them when it sends neither.
    """

    default_phone_region: str = DEFAULT_PHONE_REGION
    now: datetime | None = None
    max_batch: int = MAX_BATCH_ITEMS
    stored_country: str | None = None
    stored_places: tuple[str | None, str | None] | None = None

    def context(self) -> dict[str, Any]:
        """The `context=` argument for `model_validate`."""
        return {CONTEXT_KEY: self}


DEFAULT_OPTIONS = IntakeOptions()


def options_from(info: ValidationInfo) -> IntakeOptions:
    """The `IntakeOptions` in the validation context, or the defaults."""
    context = info.context
    if isinstance(context, dict):
        options = context.get(CONTEXT_KEY)
        if isinstance(options, IntakeOptions):
            return options
    return DEFAULT_OPTIONS


def field_error(loc: tuple[str | int, ...], code: str, message: str) -> ValidationError:
    """A one-error ValidationError at `loc`, to raise from a model validator."""
    # A ValidationError raised inside a validator keeps its location (prefixed with the
    # parent's), which a model validator's ValueError cannot: the field gets named.
    return ValidationError.from_exception_data(
        "Lead",
        [InitErrorDetails(type=PydanticCustomError(code, message), loc=loc, input=None)],
    )


def few_entries(value: Any, most: int) -> Any:
    """`value` as it is, unless it is an object of more than `most` entries: refused then,
    before its entries are validated (a dict's `max_length` is checked after them, so
    60,000 bad keys gave 60,000 errors, megabytes of answer, before it). For a field
    validator in `mode="before"`."""
    if isinstance(value, dict) and len(value) > most:
        raise PydanticCustomError(
            "too_long",
            "Dictionary should have at most {max_length} items, not {actual_length}",
            {"max_length": most, "actual_length": len(value)},
        )
    return value


def in_utc(value: datetime) -> datetime:
    """`value` in UTC (a naive one is read as UTC), for a validator to return.

    Raises `PydanticCustomError` (`datetime_out_of_range`) when UTC falls outside years
    1 to 9999: `0001-01-01T00:00:00+01:00` parses, yet its UTC time does not exist, and
    the `OverflowError` of converting it would be a 500.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_range", "is outside the years 1 to 9999 once in UTC"
        ) from None


# Validators of values that repeat across leads (names, places, titles, campaign tags)
# remember their last few thousand results: a batch of 1,000 leads validates ~15,000
# fields. Only results are kept, never errors; every validator here is pure.
REPEATS_CACHED = 1 << 12


# Two letters alone may be a place's code: `NA` is Navarra's, `ND` North Dakota's.
_CODE = re.compile(r"[A-Za-z]{2}")


def _says_none_but_code(text: str) -> bool:
    return says_none(text) and not _CODE.fullmatch(text)


def _text(
    max_length: int, *, name: bool = False, none: Callable[[str], bool] | None = None
) -> Callable[[str], str | None]:
    """A text field's validator; with `none`, a value it says stands for none (`N/A`,
    `-`, `no tiene`) is an absent field too. Never for names: `Na` is a Korean surname,
    `Nada` a given name."""

    @lru_cache(maxsize=REPEATS_CACHED)
    def validate(value: str) -> str | None:
        try:
            text = clean_text(value, max_length=max_length)
        except NormalisationError as exc:
            raise PydanticCustomError(exc.code, exc.reason) from exc
        if not text or (none is not None and none(text)):
            return None  # a blank field is an absent field
        return smart_case_name(text) if name else text

    return validate


NAME_MAX_LENGTH = 100
# Room for a composed "first last" of two maximal names.
FULL_NAME_MAX_LENGTH = 2 * NAME_MAX_LENGTH + 1

NameText = Annotated[str, Strict(), AfterValidator(_text(NAME_MAX_LENGTH, name=True))]
FullNameText = Annotated[str, Strict(), AfterValidator(_text(FULL_NAME_MAX_LENGTH, name=True))]
# A company, job title or place of `N/A` or `-` would score as given and, on two leads,
# agree as evidence they are one person: it is no value.
CompanyText = Annotated[str, Strict(), AfterValidator(_text(200, none=says_none))]
TitleText = Annotated[str, Strict(), AfterValidator(_text(150, none=says_none))]
PlaceText = Annotated[str, Strict(), AfterValidator(_text(100, none=_says_none_but_code))]
# An owner is a person's or a team's name (`Nil`, `Nada`): only marks alone say none.
OwnerText = Annotated[str, Strict(), AfterValidator(_text(100, none=marks_only))]
TokenText = Annotated[str, Strict(), AfterValidator(_text(255))]
# The source's own id: as long as its columns (`leads.external_id`, `lead_sources`).
ExternalIdText = Annotated[str, Strict(), AfterValidator(_text(200))]


def _via(normaliser: Callable[[str], str | None]) -> Callable[[str], str | None]:
    @lru_cache(maxsize=REPEATS_CACHED)
    def validate(value: str) -> str | None:
        if not value.strip():
            return None
        try:
            return normaliser(value)
        except NormalisationError as exc:
            raise PydanticCustomError(exc.code, exc.reason) from exc

    return validate


def _email_or_none(value: str, *, stand_in_refused: bool = False) -> str | None:
    """A value that stands for none (`n/a`, `sin correo`) is no email, and so is a
    stand-in address (`test@test.com`), unless `stand_in_refused` (a PATCH: a stand-in in
    place of a real address is refused rather than taken as "clear it")."""
    if "@" not in value and says_none(value, contact=True):
        return None
    email = normalise_email(value)
    if not is_stand_in_address(email.address, webmail=email.is_free_mail):
        return email.address
    if stand_in_refused:
        raise NormalisationError(
            "email_invalid",
            "is a stand-in address, no one's mailbox (send null to clear the email)",
        )
    return None


def _email_change(value: str) -> str | None:
    return _email_or_none(value, stand_in_refused=True)


EmailText = Annotated[str, Strict(), AfterValidator(_via(_email_or_none))]
EmailChange = Annotated[str, Strict(), AfterValidator(_via(_email_change))]


@lru_cache(maxsize=REPEATS_CACHED)
def e164(value: str, region: str) -> str:
    """`normalise_phone`, remembered for numbers that repeat (an error is not kept)."""
    return normalise_phone(value, region)


def _or_none(codes: Callable[[str], str]) -> Callable[[str], str | None]:
    """`codes`, with a value that stands for none (`N/A`, `-`, `desconocido`) read as
    none unless it is a code itself (`NA` is Namibia, `no` Norwegian)."""

    def code(value: str) -> str | None:
        try:
            return codes(value)
        except NormalisationError:
            if says_none(value):
                return None
            raise

    return code


CountryCode = Annotated[str, Strict(), AfterValidator(_via(_or_none(normalise_country)))]
LanguageTag = Annotated[str, Strict(), AfterValidator(_via(_or_none(normalise_language)))]
# A phone's extension sent on its own (`phone_extension`): its digits.
ExtensionText = Annotated[str, Strict(), AfterValidator(_via(normalise_extension))]

_CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _custom_key(key: str) -> str:
    if not _CUSTOM_KEY.fullmatch(key):
        raise PydanticCustomError(
            "custom_field_key_invalid",
            "custom field names are a lower-case letter, then letters, digits or _ "
            "(at most 64 characters)",
        )
    return key


@lru_cache(maxsize=REPEATS_CACHED)
def _custom_text(value: str) -> str | None:
    # Custom values repeat across leads (a product, a size band): remembered like text.
    too_long = PydanticCustomError(
        "custom_field_value_too_long", f"must be at most {MAX_CUSTOM_VALUE_BYTES} bytes (UTF-8)"
    )
    if len(value) > MAX_RAW_TEXT:
        # `clean_text` refuses it uncleaned, in characters; the limit that applies is ours.
        raise too_long
    try:
        text = clean_text(value)
    except NormalisationError as exc:
        raise PydanticCustomError(exc.code, exc.reason) from exc
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CUSTOM_VALUE_BYTES:
        raise too_long
    return text or None


def _custom_value(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise PydanticCustomError("custom_field_value_invalid", "integer is too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("custom_field_value_invalid", "must be a finite number")
        return value
    if isinstance(value, str):
        return _custom_text(value)
    raise PydanticCustomError(
        "custom_field_value_invalid", "must be a string, a number, a boolean or null"
    )


CustomKey = Annotated[str, Strict(), AfterValidator(_custom_key)]
CustomValue = Annotated[
    str | int | float | bool | None,
    PlainValidator(_custom_value, json_schema_input_type=str | int | float | bool | None),
]


def email_flags(address: str) -> tuple[bool, bool]:
    """(is disposable, is free mail) for a normalised address."""
    return _domain_flags(address.rpartition("@")[2])


@lru_cache(maxsize=4096)
def _domain_flags(domain: str) -> tuple[bool, bool]:
    # By domain: addresses are mostly unique, their domains are not.
    # The lists are ASCII: an IDN that Python's IDNA 2003 codec rejects is on none.
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return is_disposable_domain(domain), is_free_mail_domain(domain)
