"""Request models of the leads API: a lead (`LeadIn`) and its changes (`LeadPatch`).

After validation a `LeadIn` holds normalised values only: cleaned text, a lower-case
email, an E.164 phone, ISO country and language codes, first/last/full name filled
in, and the email flags `is_disposable_email` / `is_free_email` (computed fields).

Validation options travel in pydantic's validation context, never in globals:

    LeadIn.model_validate(data, context=IntakeOptions(default_phone_region="MX").context())

A batch (`LeadBatchIn`) and the helpers that validate leads item by item
(`validate_batch`, `validate_lead`, `field_errors`) are in `cauce.leads.schemas_batch`.
The bodies of the other requests (a review's decision, an import's options) are in
`cauce.leads.schemas_requests`; response models (`LeadOut`, `LeadCreated`, `BatchResult`,
`ImportStatus`) in `cauce.leads.responses`.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    Strict,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from cauce.core.web.instants import ISO_8601_ONLY
from cauce.leads.errors import NormalisationError
from cauce.leads.field_types import (
    CONTEXT_KEY,
    MAX_CUSTOM_FIELDS,
    MAX_CUSTOM_VALUE_BYTES,
    NAME_MAX_LENGTH,
    CompanyText,
    CountryCode,
    CustomKey,
    CustomValue,
    EmailChange,
    EmailText,
    ExtensionText,
    ExternalIdText,
    FullNameText,
    IntakeOptions,
    LanguageTag,
    NameText,
    OwnerText,
    PlaceText,
    TitleText,
    TokenText,
    e164,
    email_flags,
    few_entries,
    field_error,
    in_utc,
    options_from,
)
from cauce.leads.names import (
    compose_full_name,
    halves_of_full_name,
    naming_convention,
    split_full_name,
)
from cauce.leads.normalise import smart_case_name
from cauce.leads.phones import international, number_country, split_extension
from cauce.leads.placeholders import is_none_phone
from cauce.leads.places import country_of_region, normalise_country, shared_country_name

_CONSENT_CLOCK_SKEW = timedelta(minutes=5)


class LeadSource(StrEnum):
    """Where a lead came in from."""

    WEB_FORM = "web_form"
    API = "api"
    CSV = "csv"
    CRM = "crm"
    EVENT = "event"
    REFERRAL = "referral"
    CHAT = "chat"
    OTHER = "other"


class LeadStatus(StrEnum):
    """Where a lead is in the sales funnel."""

    NEW = "new"
    WORKING = "working"
    QUALIFIED = "qualified"
    WON = "won"
    LOST = "lost"
    JUNK = "junk"


class RequestModel(BaseModel):
    """A request body of the leads API: extra fields refused, inputs kept out of errors."""

    # Inputs are personal data: keep them out of error messages and their logs.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class Utm(RequestModel):
    """Campaign parameters (`utm_*`) of the visit that produced the lead."""

    source: TokenText | None = None
    medium: TokenText | None = None
    campaign: TokenText | None = None
    term: TokenText | None = None
    content: TokenText | None = None


class Consent(RequestModel):
    """Proof of marketing consent (GDPR art. 7: the controller must be able to show it).

    `wording_version` names the consent text the person saw and is required when
    `marketing` is true: without it the consent proves nothing. `source` says where it
    was given (a form URL, a channel, a CRM); when it or `given_at` is absent, the
    service records the lead's source and the time the lead was received.
    """

    marketing: StrictBool
    # ISO 8601 text only: a number was read as a Unix time (`1000`: 1970-01-01T00:16:40Z).
    given_at: Annotated[AwareDatetime | None, ISO_8601_ONLY] = None
    wording_version: TokenText | None = None
    source: TokenText | None = None

    @field_validator("given_at")
    @classmethod
    def _not_in_future(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        now = options_from(info).now
        # Compared in UTC: two datetimes of one time zone compare without asking it for
        # offsets, which pydantic's parsed zones answer slowly. A time with no UTC form
        # (`datetime_out_of_range`) is compared as it is, so the errors stay in order.
        utc: datetime | None = None
        with contextlib.suppress(OverflowError):
            utc = value.astimezone(UTC) if value.tzinfo is not None else None
        if now is not None and (utc if utc is not None else value) > now + _CONSENT_CLOCK_SKEW:
            raise PydanticCustomError("consent_in_future", "is in the future")
        return utc if utc is not None else in_utc(value)

    @model_validator(mode="after")
    def _proof_required(self) -> Self:
        if self.marketing and self.wording_version is None:
            raise field_error(
                ("wording_version",),
                "consent_wording_missing",
                "is required when marketing consent is given",
            )
        return self


# A region typed into the country box, as the region field would take it.
_PLACE = TypeAdapter(PlaceText)


def _read_shared_name(
    data: dict[str, Any],
    default_region: str,
    stored: tuple[str | None, str | None] | None = None,
) -> dict[str, Any]:
    """`data` with a country box that names a country whose name regions of others share
    (`places.shared_country_name`: `Granada` is Grenada, and Spain's province, and
    Nicaragua's department) read as the country its region or its phone says, when one of
    those: a region naming one country (`Andalucía`), a phone's international prefix
    (`+34 958...`), or a national number valid there and not in the named country (`958
    12 34 56`; read in Grenada it was refused, `is too short`). The typed name is then a
    region typed into the country box (`_region_in_country`: the lead's region when it has
    none). Else (no phone, or one of the named country) the country stands. Other data is
    returned as it is."""
    country = data.get("country")
    if not isinstance(country, str) or not (shared := shared_country_name(country)):
        return data
    region, phone = data.get("region"), data.get("phone")
    if stored is not None:  # a PATCH: the lead's own, for what it does not send
        region = region if "region" in data else stored[0]
        phone = phone if "phone" in data else stored[1]
    found = country_of_region(region) if isinstance(region, str) else None
    if found is None and isinstance(phone, str) and phone.strip():
        named = normalise_country(country)
        if international(phone, default_region):
            with contextlib.suppress(NormalisationError):
                found = number_country(e164(phone, default_region))
        else:
            for candidate in (named, *sorted(shared)):
                with contextlib.suppress(NormalisationError):
                    e164(phone, candidate)
                    found = candidate
                    break
    if found is None or found not in shared:
        return data
    return {**data, "country": found}


def _shared_name_options(info: ValidationInfo) -> tuple[str, tuple[str | None, str | None] | None]:
    options = options_from(info)
    return options.default_phone_region, options.stored_places


class _LeadFields(RequestModel):
    """The fields a lead can be given; `country` comes before `phone` on purpose: the
    phone validator reads national numbers in the lead's own country."""

    # What the phone and the country box said as typed, which their normalised values
    # no longer show (`_read_as_typed`): the country a phone typed with an international
    # prefix names (`phones.international`), and a region name typed into the country
    # box (`Andalucía`, read as `ES`), as the region field takes it.
    _phone_country: str | None = PrivateAttr(default=None)
    _region_in_country: str | None = PrivateAttr(default=None)

    external_id: ExternalIdText | None = None
    source: LeadSource | None = None
    status: LeadStatus | None = None
    email: EmailText | None = None
    country: CountryCode | None = None
    phone: Annotated[str, Strict()] | None = None
    phone_extension: ExtensionText | None = None
    first_name: NameText | None = None
    last_name: NameText | None = None
    full_name: FullNameText | None = None
    company: CompanyText | None = None
    job_title: TitleText | None = None
    region: PlaceText | None = None
    city: PlaceText | None = None
    language: LanguageTag | None = None
    owner: OwnerText | None = None
    utm: Utm | None = None
    consent: Consent | None = None
    custom_fields: dict[CustomKey, CustomValue] | None = Field(
        default=None, max_length=MAX_CUSTOM_FIELDS
    )

    @field_validator("custom_fields", mode="before")
    @classmethod
    def _custom_count(cls, value: Any) -> Any:
        return few_entries(value, MAX_CUSTOM_FIELDS)  # counted before its keys are checked

    @model_validator(mode="wrap")
    @classmethod
    def _read_as_typed(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Validate the fields, then note what the phone and the country box said as
        typed. A subclass's `mode="after"` validators run after this (pydantic applies a
        base class's model validators first, each later one around them), so they find
        the notes."""
        place: str | None = None  # a shared name read as another country's region
        if (
            isinstance(data, dict)
            and isinstance(typed := data.get("country"), str)
            and shared_country_name(typed)
            and (read := _read_shared_name(data, *_shared_name_options(info))) is not data
        ):
            data, place = read, typed
        fields = handler(data)
        if place is not None:
            with contextlib.suppress(ValidationError):
                fields._region_in_country = _PLACE.validate_python(place)
        if isinstance(data, dict):  # not a model validated again
            phone, country = data.get("phone"), data.get("country")
            # Only a lead without a country reads its phone's (a country sent wins; in a
            # PATCH, one sent leaves the lead's alone): most leads skip the parse.
            if (
                fields.country is None
                and fields.phone is not None
                and isinstance(phone, str)
                # read in the region the phone validator read it in
                and international(phone, options_from(info).default_phone_region)
            ):
                fields._phone_country = number_country(fields.phone)
            if (
                fields.country is not None
                and isinstance(country, str)
                and country.strip().upper() != fields.country  # the code itself: no region
                and country_of_region(country.strip()) == fields.country
            ):
                with contextlib.suppress(ValidationError):
                    fields._region_in_country = _PLACE.validate_python(country)
        return fields

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A value that stands for none (`sin teléfono`, `N/A`, `0`) is no phone.
        if value is None or not value.strip() or is_none_phone(value):
            return None
        region = info.data.get("country") or options_from(info).default_phone_region
        try:
            return e164(value, region)
        except NormalisationError as exc:
            raise PydanticCustomError(exc.code, exc.reason) from exc

    def _settle_phone(self) -> None:
        """The extension of a `phone` sent with one (`ext. 123`) parted from the number
        into `phone_extension`; given in both, the two must agree."""
        if self.phone is None:
            return
        number, extension = split_extension(self.phone)
        if extension is None:
            return
        # A blank or null `phone_extension` beside it (a web form's empty field) says
        # nothing: the phone's own extension stands.
        if self.phone_extension is not None and self.phone_extension != extension:
            raise field_error(
                ("phone_extension",),
                "phone_extension_mismatch",
                "differs from the extension written in phone: send it in one place",
            )
        self.phone, self.phone_extension = number, extension

    def _settle_names(self, stored_country: str | None = None) -> None:
        """First and last name from a sent `full_name`: split when it came alone, checked
        against them (and completing a half not sent) when it came with either.

        The full name is not stored (it is composed from the halves), so a full name
        whose words would not all land in the halves is refused, never dropped: one
        that disagrees with the halves sent, or that yields a half too long for a name.
        """
        if not self.full_name:
            return
        if self.first_name is None and self.last_name is None:
            # A change without `country` splits by the lead's own (`stored_country`).
            country = self.country if "country" in self.model_fields_set else stored_country
            first, last = split_full_name(self.full_name, naming_convention(country))
        else:
            halves = halves_of_full_name(self.full_name, self.first_name, self.last_name)
            if halves is None:
                raise field_error(
                    ("full_name",),
                    "full_name_mismatch",
                    "does not match the first_name/last_name sent (given name(s), then "
                    "surname(s)): send either full_name or first_name/last_name, or make "
                    "them agree",
                )
            first, last = halves
        # The halves pass the same rules as names sent apart.
        first = smart_case_name(first) if first else None
        last = smart_case_name(last) if last else None
        if any(p is not None and len(p) > NAME_MAX_LENGTH for p in (first, last)):
            raise field_error(
                ("full_name",),
                "text_too_long",
                f"its given name(s) or surname(s) are longer than {NAME_MAX_LENGTH} "
                "characters, the limit of first_name and last_name",
            )
        self.first_name, self.last_name = first, last

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_disposable_email(self) -> bool:
        """The email's domain is a known throw-away inbox provider."""
        return self.email is not None and email_flags(self.email)[0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_free_email(self) -> bool:
        """The email is at a free webmail provider rather than a company domain."""
        return self.email is not None and email_flags(self.email)[1]


class LeadIn(_LeadFields):
    """One lead for `POST /v1/leads` (and each item of a batch or CSV row).

    At least one of `email` or `phone` is required. A `full_name` without first and last
    name is split (see `cauce.leads.names`); first and last name without a full name
    compose it. Sent together, they must agree (`names.halves_of_full_name`): a half not
    sent is the rest of the full name, and a full name that disagrees is a 422 at
    `/full_name` (`full_name_mismatch`). A lead sent without a `country` takes the one
    its region or its phone's international prefix names (`_settle_places`).
    """

    source: LeadSource = LeadSource.API
    status: LeadStatus = LeadStatus.NEW
    custom_fields: dict[CustomKey, CustomValue] = Field(
        default_factory=dict, max_length=MAX_CUSTOM_FIELDS
    )

    # Form builders send `null` for a field left empty: for these, as for every other
    # field, it means "not sent" (the default), not a 422.
    @field_validator("source", mode="before")
    @classmethod
    def _source_null(cls, value: Any) -> Any:
        return LeadSource.API if value is None else value

    @field_validator("status", mode="before")
    @classmethod
    def _status_null(cls, value: Any) -> Any:
        return LeadStatus.NEW if value is None else value

    @field_validator("custom_fields", mode="before")
    @classmethod
    def _custom_null(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Self:
        if self.email is None and self.phone is None:
            raise ValidationError.from_exception_data(
                "LeadIn",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "contact_required",
                            "at least one of email or phone is required (one that is empty "
                            "or stands for none, such as n/a or test@test.com, counts as none)",
                        ),
                        loc=(name,),
                        input=None,
                    )
                    for name in ("email", "phone")
                ],
            )
        self._settle_phone()
        if self.phone_extension is not None and self.phone is None:
            raise field_error(("phone_extension",), "phone_required", "needs a phone number")
        # Names are split by the country sent: the one filled in after (from the region
        # or the phone) is a guess.
        self._settle_names()
        self._settle_places()
        if self.full_name is None:
            composed = compose_full_name(self.first_name, self.last_name)
            self.full_name = smart_case_name(composed) if composed else None
        return self

    def _settle_places(self) -> None:
        """A region typed into the country box is the region, when none was sent (or one
        that says none); then a lead without a country takes the one its region names
        (`places.country_of_region`: `Andalucía` is `ES`), else the one its phone's
        international prefix names (`phones.typed_country`: `+34 612...` and `0034...`
        are `ES`, `+52 55...` is `MX`; a national number says nothing). The region wins
        when the two disagree: it is a place the lead gives, as a country is, where the
        phone tells where the number is from (an expat keeps theirs). A country sent is
        never replaced."""
        if self.region is None and self._region_in_country is not None:
            self.region = self._region_in_country
        if self.country is None:
            from_region = country_of_region(self.region) if self.region else None
            self.country = from_region or self._phone_country
        # Taken: a lead validated again from its own values is equal to it (pydantic
        # compares private attributes too).
        self._phone_country = self._region_in_country = None


_NOT_CLEARABLE = ("source", "status")


# A lead's other emails (phones) as a PATCH may leave them: each one of those the lead
# shows (`other_emails` of its view), in the form shown.
OtherContact = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=320)]
MAX_OTHER_CONTACTS_SENT = 100


class LeadPatch(_LeadFields):
    """Changes for `PATCH /v1/leads/{id}` (JSON merge patch, RFC 7396).

    Only the fields present change (`changes()`); `null` or a blank string clears a
    field. A `full_name` sent without first and last name is split and the halves are
    changes too; sent with either, it must agree with it and the other half is the rest
    of it, as in `LeadIn`. The service recomputes `full_name` when only first/last name
    change (`names.compose_full_name`). `custom_fields` merges key by key, `null` removing a
    key. Whether the result still has an email or a phone is the service's check, as
    is passing the lead's country as `default_phone_region` for a national number.
    `other_emails` and `other_phones` (a list replaces the whole list, `null` empties it)
    can only lose entries: the service refuses one the lead does not show.
    """

    email: EmailChange | None = None
    other_emails: list[OtherContact] | None = Field(
        default=None,
        max_length=MAX_OTHER_CONTACTS_SENT,
        description="The other emails the lead keeps, of those it shows: one left out is "
        "forgotten (from its arrivals too). Entries can only be taken away.",
    )
    other_phones: list[OtherContact] | None = Field(
        default=None,
        max_length=MAX_OTHER_CONTACTS_SENT,
        description="The other phones the lead keeps, of those it shows: one left out is "
        "forgotten (from its arrivals too). Entries can only be taken away.",
    )

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Self:
        for name in _NOT_CLEARABLE:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise field_error((name,), "not_clearable", "cannot be cleared")
        halves_cleared = {"first_name", "last_name"} <= self.model_fields_set and (
            self.first_name is None and self.last_name is None
        )
        if "full_name" in self.model_fields_set and self.full_name is None and not halves_cleared:
            # Not stored but composed of the halves: clearing it alone would change nothing.
            raise field_error(
                ("full_name",),
                "not_clearable",
                "is made of first_name and last_name: clear those to clear it",
            )
        self._settle_phone()
        self._settle_names(options_from(info).stored_country)
        return self

    @property
    def phone_country(self) -> str | None:
        """The country the `phone` sent names by its international prefix
        (`phones.international`; None for a national number): the service fills a lead
        without a country with it, as intake does."""
        return self._phone_country

    @property
    def region_in_country(self) -> str | None:
        """A region name sent as the `country` (`Andalucía`, read as `ES`), as the region
        field takes it: the service keeps it as the region of a lead that has none."""
        return self._region_in_country

    def changes(self) -> dict[str, Any]:
        """The fields to change, with their normalised values (None clears), in the order
        the model declares them: the order of an `updated` history line's `fields`, the
        same in every process (a set of names iterates in an order of its process's
        string hashes)."""
        sent = self.model_fields_set
        return {name: getattr(self, name) for name in type(self).model_fields if name in sent}


__all__ = [
    "CONTEXT_KEY",
    "MAX_CUSTOM_FIELDS",
    "MAX_CUSTOM_VALUE_BYTES",
    "Consent",
    "IntakeOptions",
    "LeadIn",
    "LeadPatch",
    "LeadSource",
    "LeadStatus",
    "RequestModel",
    "Utm",
]
