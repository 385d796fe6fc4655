"""Response models of the leads API.

They validate nothing a client sent (that is `cauce.leads.schemas`): they describe what
Cauce answers, and `from_attributes=True` lets them read ORM rows or dataclasses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cauce.leads.schemas import Consent, LeadSource, LeadStatus, Utm

CustomFieldValue = str | int | float | bool | None


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Which model gave `score`. While a learned model is active, leads stored before keep
# their points scores: the two scales differ, so every answer with a score names it.
SCORE_MODEL = (
    "The model that gave `score`: `points` (the points model: the score is a sum of rule "
    "points) or `learned-v<N>` (learned model version N: the score is its estimated chance "
    "of winning x 100)."
)


class FieldErrorOut(_Out):
    """One rejected field: an RFC 6901 pointer into the request, why, and a stable type."""

    pointer: str
    detail: str
    type: str


class ScoreReason(_Out):
    """One contribution to a score: a points rule that fired or a model feature."""

    code: str = Field(
        description=(
            "Stable id of the rule or feature, e.g. `company_email` (a points rule) or "
            "`seniority=director` (a learned model's feature)."
        )
    )
    label: str = Field(description="What it means, for people.")
    points: float = Field(
        description=(
            "Its contribution to the score (may be negative). Points model: the rule's "
            "points, which add up to the score (kept within 0-100). Learned model: how much "
            "lower the score would be without this feature alone; these do not add up to "
            "the score."
        )
    )


DuplicateMatch = Literal["email", "phone", "fuzzy"]
DuplicateAction = Literal["merged", "held_for_review"]


class DuplicateInfo(_Out):
    """An existing lead this one matched, and what de-duplication did about it."""

    lead_id: str
    match: DuplicateMatch
    confidence: float = Field(ge=0.0, le=1.0)
    action: DuplicateAction
    merged_fields: list[str] = Field(
        default_factory=list, description="Empty fields of the existing lead filled in."
    )


class HoldInfo(_Out):
    """Why a lead is held for review (`duplicate_of` names the lead it is held against)."""

    match: DuplicateMatch | None = Field(
        default=None, description="What matched: email, phone or fuzzy (names and fields)."
    )
    confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="How sure de-duplication was (0 to 1)."
    )
    reasons: list[str] = Field(
        default_factory=list,
        description="The comparison, strongest evidence first (`held: only names and places "
        "agree`, `first_name: same given name (+5.2 bits)`); field reasons, never values. "
        "Empty for a lead held before Cauce kept them.",
    )


class LeadOut(_Out):
    """A lead as `GET /v1/leads/{id}` shows it."""

    id: str
    external_id: str | None = None
    source: LeadSource
    sources: list[LeadSource] = Field(
        default_factory=list, description="Every source that supplied this lead (merges)."
    )
    status: LeadStatus
    email: str | None = None
    phone: str | None = None
    phone_extension: str | None = Field(
        default=None, description="The extension of `phone` (digits), if it has one."
    )
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None
    language: str | None = None
    is_disposable_email: bool = False
    is_free_email: bool = False
    utm: Utm | None = None
    consent: Consent | None = None
    custom_fields: dict[str, CustomFieldValue] = Field(default_factory=dict)
    score: float | None = None
    score_model: str | None = Field(default=None, description=SCORE_MODEL)
    score_reasons: list[ScoreReason] = Field(default_factory=list)
    owner: str | None = None
    team: str | None = None
    duplicate_of: str | None = Field(
        default=None, description="The lead this one is held against as a possible duplicate."
    )
    hold: HoldInfo | None = Field(
        default=None, description="Why the lead is held for review; null when it is not held."
    )
    created_at: datetime
    updated_at: datetime


class RelatedLead(_Out):
    """A lead held as a possible duplicate of this one."""

    lead_id: str
    status: LeadStatus
    held_for_review: bool = Field(description="Still waiting for a person to decide.")


class SyncState(_Out):
    """Where the lead's delivery to the CRM stands."""

    status: str = Field(description="`pending`, `synced`, `held`, `failed` or `erased`.")
    version: int = Field(description="Grows on every change of the lead.")
    synced_version: int = Field(description="The version the CRM has.")
    crm_id: str | None = None
    synced_at: datetime | None = None
    attempts: int
    last_error: str | None = None
    crm_deleted_at: datetime | None = Field(
        default=None,
        description="When the contact was deleted in the CRM (HubSpot's `contact.deletion` "
        "webhook), while it stays deleted: null again once a later sync has put the lead "
        "back there (as a new contact, `crm_id`). A GDPR deletion there erases the lead.",
    )


class HistoryLine(_Out):
    """One thing that happened to the lead (field names only: values may be personal)."""

    action: str = Field(description="e.g. `created`, `merged`, `updated`, `synced`, `erased`.")
    at: datetime
    actor: str | None = None
    changes: dict[str, object] = Field(default_factory=dict)


class ConsentEvent(_Out):
    """One arrival's own consent, as it was stored when the arrival came (a merge keeps
    the later consent as the lead's; each arrival's stays here, the proof of each)."""

    received_at: datetime = Field(description="When Cauce received the arrival.")
    source: LeadSource = Field(description="Where the arrival came from (as in `sources`).")
    consent: Consent = Field(
        description="The consent the arrival carried, as stored: `given_at` is the time it "
        "sent or, for a lead sent live without one, the time Cauce received it (a CSV "
        "row's consent without a date has none); `source` the one it sent or the "
        "arrival's source."
    )


class LeadDetailOut(LeadOut):
    """`GET /v1/leads/{id}`: the lead with its duplicates, arrivals, sync, history and
    the consent each arrival sent."""

    duplicates: list[RelatedLead] = Field(
        default_factory=list,
        description="The leads held as possible duplicates of this one, oldest first (at "
        "most 50, with the one it is held against).",
    )
    duplicates_total: int = Field(
        0,
        description="How many leads are held as possible duplicates of this one: more than "
        "`duplicates` shows when over 50 (`GET /v1/leads?held=true` lists every held lead).",
    )
    arrivals: int = Field(description="How many times the lead arrived (merges included).")
    other_emails: list[str] = Field(
        default_factory=list, description="Emails arrivals sent that are not the lead's own."
    )
    other_phones: list[str] = Field(
        default_factory=list, description="Phones arrivals sent that are not the lead's own."
    )
    sync: SyncState
    history: list[HistoryLine] = Field(
        default_factory=list, description="The latest changes, newest first (at most 100)."
    )
    history_total: int = Field(
        0, description="Every change the lead has had: more than `history` shows when over 100."
    )
    consents: list[ConsentEvent] = Field(
        default_factory=list,
        description="The consent of each arrival that sent one, oldest first: the last 100. "
        "Empty when none did (an erased lead's are cleared).",
    )
    consents_total: int = Field(
        0, description="How many arrivals sent a consent: more than `consents` shows when over 100."
    )


LeadOutcome = Literal["created", "merged", "held_for_review"]


class LeadCreated(_Out):
    """The answer to `POST /v1/leads`: which lead now holds the data, scored and routed."""

    id: str
    outcome: LeadOutcome
    status: LeadStatus
    score: float | None = None
    score_model: str | None = Field(default=None, description=SCORE_MODEL)
    score_reasons: list[ScoreReason] = Field(default_factory=list)
    owner: str | None = None
    duplicate: DuplicateInfo | None = None


class BatchItemResult(_Out):
    """The result of one batch item, in the order the items were sent."""

    index: int
    outcome: LeadOutcome | Literal["rejected"]
    id: str | None = None
    score: float | None = None
    score_model: str | None = Field(
        default=None, description=f"{SCORE_MODEL} Null for a rejected item."
    )
    owner: str | None = None
    duplicate: DuplicateInfo | None = None
    errors: list[FieldErrorOut] = Field(default_factory=list)


class BatchResult(_Out):
    """The answer to `POST /v1/leads/batch`: valid items are kept even when others fail."""

    received: int
    accepted: int
    rejected: int
    items: list[BatchItemResult]


class LeadAccepted(_Out):
    """The answer to `POST /v1/leads` for a key without `leads:read` (a web form's): 202
    whatever became of the lead (created, merged into a lead Cauce had, held for review),
    so that it tells nothing of the leads Cauce holds."""

    accepted: Literal[True] = True


class BatchItemAccepted(_Out):
    """One batch item's result for a key without `leads:read`: accepted or rejected (with
    its errors, which are about what was sent), nothing of the lead it went into."""

    index: int
    accepted: bool
    errors: list[FieldErrorOut] = Field(default_factory=list)


class BatchAccepted(_Out):
    """The answer to `POST /v1/leads/batch` for a key without `leads:read` (202)."""

    received: int
    accepted: int
    rejected: int
    items: list[BatchItemAccepted]


# `succeeded`, `failed` and `cancelled` are final; `cancelling`: asked to stop while
# running, it stops at the end of the rows it is importing.
ImportState = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


class ImportColumn(_Out):
    """How one CSV column was read: the lead field it fills, or None when ignored."""

    column: str
    field: str | None


class ImportStatus(_Out):
    """`GET /v1/leads/import/{id}`: progress and counts of a CSV import job."""

    id: str
    state: ImportState
    job_id: int | None = Field(
        default=None,
        description="The job that runs the import (`GET /v1/jobs/{id}`, `cauce jobs show`); "
        "null for an import recorded before imports kept it.",
    )
    filename: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    columns: list[ImportColumn] = Field(default_factory=list)
    bytes_total: int | None = None
    bytes_read: int = 0
    progress: float | None = Field(
        default=None, ge=0.0, le=1.0, description="bytes_read / bytes_total."
    )
    rows_read: int = 0
    rows_created: int = 0
    rows_merged: int = 0
    rows_held: int = 0
    rows_rejected: int = 0
    error_report_url: str | None = Field(
        default=None, description="The per-row error report (CSV), once there is one."
    )
    detail: str | None = Field(
        default=None,
        description="Why the import failed or stopped, or what became of a cancel request.",
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
