"""Ports: the outside systems the leads context talks to, as Protocols.

Services depend on these, never on a vendor's API; one adapter per vendor lives in
`leads/adapters/`. Every write is an upsert on a stable key, so a delivery re-run after a
crash updates the contact it created instead of creating a second one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

# `CrmKey.property` naming the CRM's own id of a record (the lead's `crm_id`): HubSpot's
# object id, Pipedrive's person id. A CRM without ids of its own finds nothing by it.
OBJECT_ID = "id"


@dataclass(frozen=True, slots=True)
class CrmKey:
    """How a contact is found in the CRM: a unique property and its value."""

    property: str  # "email", or the Cauce id property for leads without email
    value: str


@dataclass(frozen=True, slots=True)
class CrmContact:
    """One lead, as the CRM should hold it after the upsert. `crm_id`: the contact's id in
    the CRM from the lead's last sync, if any (a CRM without an upsert updates it by id,
    rather than search for it). `consent`: the lead's marketing consent as stored
    (`marketing`, `given_at` as ISO 8601 text, `wording_version`, `source`), for a CRM
    that keeps a subscription status apart from the properties; None: the lead has none.
    `create_in_doubt_at`: a create of this lead may have reached the CRM then without Cauce
    learning its outcome (`UpsertOutcome.in_doubt_at`; a CRM without an upsert must not
    search for it and create it again before its search can show that contact)."""

    lead_id: int
    version: int
    key: CrmKey
    properties: Mapping[str, Any]
    crm_id: str | None = None
    consent: Mapping[str, Any] | None = None
    create_in_doubt_at: datetime | None = None


def utc_instant(value: object) -> datetime | None:
    """An ISO 8601 instant (a carried consent's `given_at`, a CRM's timestamp) or a
    datetime as an aware datetime in UTC (a naive one is read as UTC); None if neither."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class UpsertOutcome:
    """What the CRM did with one contact of a batch.

    `crm_id` is set on success. On failure `retryable` tells a passing problem (the next
    delivery tries again) from a permanent one (the lead is marked `failed`).

    `in_doubt_at`: a create of the contact may have been applied by the CRM (its answer was
    lost: a timeout, a connection cut after the request left, a 5xx) or was in doubt
    already (`CrmContact.create_in_doubt_at`); delivery keeps it on the lead until the
    lead's contact id is recorded. `retry_at`: a retryable failure whose contact must not
    be sent again before then (delivery leaves it pending, and a delivery of just such
    leads is asked for then).
    """

    lead_id: int
    crm_id: str | None = None
    error: str | None = None
    retryable: bool = False
    in_doubt_at: datetime | None = None
    retry_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """True when the contact is in the CRM."""
        return self.crm_id is not None and self.error is None


@dataclass(frozen=True, slots=True)
class CrmRecord:
    """A contact read back from the CRM."""

    crm_id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CrmDeletion:
    """What a deletion did (`CrmWithMerges.delete_contact`). `found`: as `CrmClient.delete`
    answers. `crm_ids`: when found, the CRM's ids that were the deleted record's: its own
    and those of the contacts a user merged into it (HubSpot's ``hs_merged_object_ids``),
    so the live leads synced to any of them are known to have lost their contact; empty
    when the CRM did not say."""

    found: bool
    crm_ids: frozenset[str] = frozenset()


class CrmThrottled(Exception):
    """The CRM refused for rate limiting; nothing should be sent before `until`.

    `policy` names the vendor's limit (e.g. HubSpot's DAILY): a daily limit pauses the CRM
    until its reset instead of using up delivery attempts.
    """

    def __init__(self, until: datetime, policy: str = "", detail: str = "") -> None:
        super().__init__(detail or f"CRM rate limit {policy or ''} until {until.isoformat()}")
        self.until = until
        self.policy = policy


class CrmUnavailable(Exception):
    """The CRM could not be reached or failed (5xx, timeout, open circuit): try later."""

    def __init__(self, detail: str, retry_at: datetime | None = None) -> None:
        super().__init__(detail)
        self.retry_at = retry_at


class CrmRejected(Exception):
    """The CRM refused the whole request for a reason no retry fixes (401, 403, 400)."""


class CrmClient(Protocol):
    """A CRM Cauce delivers leads to (one without an upsert: `CrmWithoutUpsert`)."""

    name: str
    max_batch: int

    async def upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        """Create or update each contact by its key; one outcome per contact, same order.

        Raises CrmThrottled, CrmUnavailable or CrmRejected when the request as a whole
        fails; per-contact failures are outcomes.
        """
        ...

    async def delete(self, key: CrmKey) -> bool:
        """Erase a contact (GDPR); True if it existed. Idempotent."""
        ...

    async def read(self, keys: Sequence[CrmKey]) -> list[CrmRecord | None]:
        """Read contacts back by key (None for a key the CRM does not know)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class CrmWithMerges(Protocol):
    """A CRM whose users may merge contacts into one record (HubSpot): deleting a contact
    deletes the record it was merged into, and whatever other contacts went into it."""

    async def delete_contact(self, key: CrmKey) -> CrmDeletion:
        """As `CrmClient.delete`, saying which record was deleted and what was merged
        into it (it may cost a read more than `delete`)."""
        ...


#: Awaited by a `CrmWithoutUpsert` right before it sends a create of the contact.
BeforeCreate = Callable[[CrmContact], Awaitable[None]]


class CrmWithoutUpsert(CrmClient, Protocol):
    """A CRM whose creates are plain POSTs, with no upsert and no idempotency key
    (Pipedrive): a create whose answer is lost may have been applied, and the CRM's
    search may not show it for a while.

    It awaits `before_create` right before each create leaves (delivery durably marks the
    lead's create in flight then: a worker that dies or a call cut mid-create leaves it
    in doubt), reports every create that may have been applied as an outcome with
    `in_doubt_at` (never only by raising), and does not search for or create a contact
    whose `create_in_doubt_at` is recent (its outcome's `retry_at` says until when).
    Whatever `upsert` raises, none of the call's creates was applied or may have been:
    work done before an error is returned as outcomes (the contacts not reached as
    retryable "not sent"), so delivery ends the flights of a raised call with no wait.
    """

    no_upsert: Literal[True]

    async def upsert(
        self, contacts: Sequence[CrmContact], *, before_create: BeforeCreate | None = None
    ) -> list[UpsertOutcome]:
        """As `CrmClient.upsert`, awaiting `before_create` before each create."""
        ...
