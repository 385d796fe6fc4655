"""Pipedrive persons behind the `CrmClient` port: the second vendor, with no upsert.

Pipedrive facts relied on (API v2 persons, Pipedrive's developer docs and its official
PHP client's v2 reference; bodies in ``tests/leads/adapters/fake_pipedrive.py``):

* ``GET /api/v2/persons/search?term=&fields=email|custom_fields&exact_match=true`` finds
  persons; an exact match is not case sensitive; only text-like custom fields (varchar,
  text...) are searchable, so the Cauce id field must be one. Answers
  ``{"success": true, "data": {"items": [{"result_score", "item": {"id", "name",
  "emails": [str], "phones": [str], "custom_fields": [str]}}]}}``. Older docs limit
  exact matching to terms of 30 characters (a uuid has 36), so longer terms are searched
  without it and every hit is compared exactly here.
* ``POST /api/v2/persons`` creates (``name`` required), ``PATCH /api/v2/persons/{id}``
  updates, ``DELETE /api/v2/persons/{id}`` marks deleted (purged after 30 days),
  ``GET /api/v2/persons/{id}``; bodies use ``emails``/``phones`` as
  ``[{"value", "primary", "label"}]`` and ``custom_fields`` as ``{key: value}`` (custom
  fields are named by 40-character hashes: map Cauce fields to them in
  ``CAUCE_CRM__FIELD_MAPPING`` and set ``CAUCE_CRM__CAUCE_ID_PROPERTY`` to the hash).
* Auth: ``x-api-token`` header. Every answer is an envelope ``{"success", "data"}``.
* Limits: a burst window of 2 s per token (``x-ratelimit-limit/-remaining/-reset``,
  reset in seconds), 429 when over it; a daily budget (token costs per endpoint; a search
  costs the most) resetting at midnight, with ``x-daily-requests-left`` on api_token
  requests. A 429 with ``x-daily-requests-left: 0`` is taken as the daily budget.

Clears (a property given None at the port: Cauce gave it a value once and the lead's
field is empty now) are sent Pipedrive's way: a custom field and ``org_id`` as ``null``,
``label_ids`` as ``[]``; ``owner_id`` and ``visible_to`` are left as they are (a person
always has an owner and a visibility). An email or phone cleared takes the person's
primary one out of ``emails``/``phones`` (Cauce sends its own as the primary; the list is
replaced whole, so the person is read first and the others stay). A name of which every
part Cauce sent is cleared becomes the placeholder a create would give (Pipedrive
requires a name).

No upsert and no idempotency key: a lead synced before is read by the person id its
last sync recorded (`CrmContact.crm_id`: ``GET /api/v2/persons/{id}``, no search), so
every later sync, from any worker, updates that person, even before Pipedrive's search
index has it (it lags the writes by seconds) and whoever else has its email. A lead
never synced is searched, then created or updated, one request at a time (the burst
window is small). Creates are never retried inside the call (not idempotent); updates
are.

A create whose outcome is unknown (the POST may have been applied: a 5xx or 408, a
timeout, a connection reset or closed once the request may have left, a 2xx whose body
says nothing) is *in doubt*: its outcome says so (`UpsertOutcome.in_doubt_at`, now), the
rest of the batch is not sent (Pipedrive is likely failing), and delivery keeps the doubt
on the lead. Before each create leaves, ``before_create`` lets delivery mark it in
flight, durably: a worker that dies, or a call cut, before its answer is recorded leaves
that mark, which the next delivery takes as a doubt from then (`leads.delivery`). A
contact in doubt (`CrmContact.create_in_doubt_at`) is neither searched for nor created
until ``create_settle_seconds`` (`CREATE_SETTLE_SECONDS`, a minute: the index lags by
seconds) after that moment: its outcome asks to wait until then (`retry_at`), and no
request is made. Then it is searched for by its Cauce id (the create set it; an older
person may have been given the same email meanwhile), then by its key, and the person
found is updated; nobody found: the create did not land, and it is made.

Not in doubt, a plain failure as before: a 4xx or 429 (Pipedrive refused), a request
never sent (an open circuit, a full bulkhead, the local rate limiter, a refused URL, a
TLS failure, shutdown, a connection that could not be opened: aiohttp's
``ClientConnectorError`` under the transport's `UpstreamConnectionError`, which alone
tells a connect refused from a reset after sending). Raised as the call's error (a
401/403 or a TLS failure: `CrmRejected`; a 429; a connect refused), it ends the create's
flight with no doubt and no wait: whatever `upsert` raises, none of the call's creates
was applied, since every create made or in doubt is returned as an outcome (a rejection
returns the work done before it, unlike `settle_partial`). What is left: a second person only
if Pipedrive applies a create, or indexes it, more than the allowance after Cauce saw the
create fail, or a worker presumed dead sends its POST after another waited it out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import orjson
from aiohttp import ClientConnectorError

from cauce.core.http import (
    ClientClosedError,
    HttpClient,
    Request,
    Response,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamRateLimitedError,
    UpstreamTlsError,
)
from cauce.core.resilience import RejectedError, UpstreamThrottledError
from cauce.core.security.ssrf import UnsafeUrlError
from cauce.leads.adapters._common import (
    DailyReset,
    RatePause,
    WallClock,
    body_key,
    next_midnight,
    port_error,
    settle_partial,
    utc_now,
)
from cauce.leads.ports import (
    OBJECT_ID,
    BeforeCreate,
    CrmContact,
    CrmKey,
    CrmRecord,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
)

__all__ = ["CREATE_SETTLE_SECONDS", "PIPEDRIVE_API", "PipedriveCrm"]

#: How long after a create in doubt its lead is neither searched for nor created (the
#: search index lags the writes by seconds).
CREATE_SETTLE_SECONDS: Final = 60.0

PIPEDRIVE_API: Final = "https://api.pipedrive.com"
_PERSONS: Final = "/api/v2/persons"
_SEARCH: Final = "/api/v2/persons/search"
_EXACT_MATCH_MAX: Final = 30
_BURST_SECONDS: Final = 2.0
_TOP_LEVEL: Final = frozenset({"owner_id", "org_id", "visible_to", "label_ids"})
# How a clear of a top-level field is said (missing: it cannot be, the field stays).
_TOP_LEVEL_CLEAR: Final[Mapping[str, Any]] = {"org_id": None, "label_ids": []}
_CONTACT_LISTS: Final = (("email", "emails"), ("phone", "phones"))
_NAME_PARTS: Final = ("firstname", "lastname")
_MAX_ERROR_TEXT: Final = 500


@dataclass(frozen=True, slots=True)
class _Person:
    id: int
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()


class _CreateInDoubt(Exception):
    """A create that may have been applied: its contact's outcome, and the error."""

    def __init__(self, outcome: UpsertOutcome, error: Exception) -> None:
        super().__init__(str(error))
        self.outcome = outcome
        self.error = error


# Errors that say a request was refused, or never left: nothing of it was applied.
_NOT_APPLIED: Final = (
    UpstreamClientError,  # a 4xx: Pipedrive refused it
    UpstreamThrottledError,  # a 429
    RejectedError,  # an open circuit, a full bulkhead, the local rate limiter
    ClientClosedError,  # shutdown
    UnsafeUrlError,
    UpstreamTlsError,  # the handshake failed
)


def _may_have_created(error: BaseException) -> bool:
    """Whether a create that failed with `error` (the HTTP layer's or a guard's) may
    have been applied by Pipedrive: all but a refusal or a request that never left."""
    if isinstance(error, _NOT_APPLIED):
        return False
    # The transport says "connection error" for a refused connect as for a reset after
    # the request left; aiohttp's own error under it tells the first (nothing sent).
    return not (
        isinstance(error, UpstreamConnectionError)
        and isinstance(error.__cause__, ClientConnectorError)
    )


def _rest_not_sent(
    contacts: Sequence[CrmContact], outcomes: Sequence[UpsertOutcome | None], error: Exception
) -> list[UpsertOutcome]:
    """The outcomes so far, and for each contact not reached a retryable "not sent"."""
    reason = f"not sent: {error}"
    return [
        o if o is not None else UpsertOutcome(c.lead_id, error=reason, retryable=True)
        for c, o in zip(contacts, outcomes, strict=True)
    ]


def _error_text(content: bytes, status: int) -> str:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    text = body.get("error") if isinstance(body, dict) else None
    return f"Pipedrive refused (HTTP {status}): {text or 'no detail'}"[:_MAX_ERROR_TEXT]


def _data(response: Response) -> Any:
    """The ``data`` of a ``{"success": true, "data": ...}`` envelope."""
    try:
        body = response.json()
    except ValueError:
        raise CrmUnavailable("Pipedrive answered with an unreadable body") from None
    if not isinstance(body, dict) or body.get("success") is not True:
        raise CrmUnavailable("Pipedrive answered without success")
    return body.get("data")


def _contact_list(value: str, known: tuple[str, ...], fold: bool) -> list[dict[str, Any]] | None:
    """Emails or phones to send: None when the person already has the value (no change)."""

    def same(existing: str) -> bool:
        return existing.lower() == value.lower() if fold else existing == value

    if any(same(existing) for existing in known):
        return None
    others = [{"value": v, "primary": False, "label": "other"} for v in known]
    return [{"value": value, "primary": True, "label": "work"}, *others]


def _without_primary(entries: object) -> list[dict[str, Any]]:
    """A person's emails or phones (as a GET answers them) without the primary one, the
    first of the rest made primary: what a cleared email or phone leaves."""
    listed = (
        [e for e in entries if isinstance(e, dict) and e.get("value")]
        if isinstance(entries, list)
        else []
    )
    primary = next((e for e in listed if e.get("primary")), listed[0] if listed else None)
    rest = [e for e in listed if e is not primary]
    return [
        {"value": e["value"], "primary": n == 0, "label": e.get("label") or "other"}
        for n, e in enumerate(rest)
    ]


class PipedriveCrm:
    """`CrmClient` for Pipedrive persons (see the module docstring).

    ``cauce_id_property`` is the key of the person custom field holding Cauce's id;
    ``create_settle_seconds`` how long a create in doubt is waited out.
    """

    name = "pipedrive"
    no_upsert: Literal[True] = True  # a `CrmWithoutUpsert`

    def __init__(
        self,
        client: HttpClient,
        *,
        token: str,
        base_url: str = PIPEDRIVE_API,
        cauce_id_property: str,
        clock: WallClock = utc_now,
        daily_reset: DailyReset | None = None,
        max_batch: int = 100,
        cache_size: int = 10_000,
        create_settle_seconds: float = CREATE_SETTLE_SECONDS,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._headers = {"x-api-token": token, "Accept": "application/json"}
        self._cauce_id = cauce_id_property
        self._clock = clock
        self._daily_reset = daily_reset if daily_reset is not None else next_midnight("UTC")
        self._pause = RatePause("Pipedrive", client, clock)
        self._cache: OrderedDict[tuple[str, str], _Person] = OrderedDict()
        self._cache_size = cache_size
        self._settle = timedelta(seconds=create_settle_seconds)
        self.max_batch = max_batch

    # -- the port ------------------------------------------------------------------------

    async def upsert(
        self, contacts: Sequence[CrmContact], *, before_create: BeforeCreate | None = None
    ) -> list[UpsertOutcome]:
        """Search each contact, then create or update it; one outcome per contact.
        `before_create` is awaited right before each create is sent."""
        self._pause.check()
        outcomes: list[UpsertOutcome | None] = [None] * len(contacts)
        try:
            for position, contact in enumerate(contacts):
                outcomes[position] = await self._upsert_one(contact, before_create)
        except _CreateInDoubt as doubt:
            # Pipedrive is likely failing: the rest is not sent, and the doubt is told as
            # an outcome (a raise would lose it; even a rejection comes again next call).
            outcomes[outcomes.index(None)] = doubt.outcome
            return _rest_not_sent(contacts, outcomes, doubt.error)
        except CrmRejected as exc:
            # Unlike `settle_partial`, the work done is returned, not dropped: a create
            # made and then lost would wait out the allowance as a doubt (delivery ends
            # the flights of whatever is raised), and the rejection comes again next call.
            if all(outcome is None for outcome in outcomes):
                raise
            return _rest_not_sent(contacts, outcomes, exc)
        except (CrmThrottled, CrmUnavailable) as exc:
            return settle_partial(contacts, outcomes, exc)
        return [outcome for outcome in outcomes if outcome is not None]

    async def delete(self, key: CrmKey) -> bool:
        """Delete the person with this key; False if there is none."""
        self._pause.check()
        if key.property == OBJECT_ID:
            person_id = key.value  # the person's own id: nothing to search
        else:
            person = await self._find(key, use_cache=False)
            if person is None:
                return False
            self._cache.pop(self._cache_key(key), None)
            person_id = str(person.id)
        try:
            await self._send(
                Request.delete(f"{self._base}{_PERSONS}/{person_id}", headers=self._headers)
            )
        except UpstreamClientError as exc:
            if exc.status in (404, 410):
                return False
            raise CrmRejected(_error_text(exc.body, exc.status)) from exc
        return True

    async def read(self, keys: Sequence[CrmKey]) -> list[CrmRecord | None]:
        """Find each key and read the person (name, primary email and phone, custom fields)."""
        self._pause.check()
        records: list[CrmRecord | None] = []
        for key in keys:
            person = await self._find(key, use_cache=False)
            if person is None:
                records.append(None)
                continue
            try:
                response = await self._send(
                    Request.get(f"{self._base}{_PERSONS}/{person.id}", headers=self._headers)
                )
            except UpstreamClientError as exc:
                if exc.status == 404:
                    records.append(None)
                    continue
                raise CrmRejected(_error_text(exc.body, exc.status)) from exc
            records.append(_record(person.id, _data(response)))
        return records

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the composition root."""

    # -- internals -----------------------------------------------------------------------

    def _cache_key(self, key: CrmKey) -> tuple[str, str]:
        value = key.value.strip().lower() if key.property == "email" else key.value
        return key.property, value

    def _remember(self, key: CrmKey, person: _Person) -> None:
        cache_key = self._cache_key(key)
        self._cache[cache_key] = person
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _upsert_one(
        self, contact: CrmContact, before_create: BeforeCreate | None = None
    ) -> UpsertOutcome:
        found, current = await self._synced_person(contact)
        if found is None and contact.create_in_doubt_at is not None:
            settled = contact.create_in_doubt_at + self._settle
            if self._clock() < settled:
                return self._waiting(contact, contact.create_in_doubt_at, settled)
            found = await self._find_made(contact)
        elif found is None:
            found = await self._find(contact.key, use_cache=True)
        if found is None:
            return await self._create(contact, before_create)
        try:
            if current is None:
                current = await self._lists_to_clear(contact, found)
            body = self._person_body(contact, found, current)
            request = Request.patch(
                f"{self._base}{_PERSONS}/{found.id}",
                json=body,
                headers=self._headers,
                idempotency_key=body_key({"id": found.id, **body}),
            )
            response = await self._send(request)
        except UpstreamClientError as exc:
            self._cache.pop(self._cache_key(contact.key), None)
            if exc.status == 404:  # deleted since the search
                return UpsertOutcome(contact.lead_id, error="person vanished", retryable=True)
            return UpsertOutcome(contact.lead_id, error=_error_text(exc.body, exc.status))
        data = _data(response)
        person_id = data.get("id") if isinstance(data, dict) else None
        if person_id is None:
            return UpsertOutcome(contact.lead_id, error="no person id returned", retryable=True)
        self._remember(contact.key, _person_from(data))
        return UpsertOutcome(contact.lead_id, crm_id=str(person_id))

    async def _create(
        self, contact: CrmContact, before_create: BeforeCreate | None
    ) -> UpsertOutcome:
        """Create the person: one attempt (not idempotent). Raises `_CreateInDoubt` when
        it may have been applied and its answer is lost."""
        body = self._person_body(contact, None)
        request = Request.post(f"{self._base}{_PERSONS}", json=body, headers=self._headers)
        if before_create is not None:
            await before_create(contact)
        try:
            response = await self._send(request)
            data = _data(response)
        except UpstreamClientError as exc:
            self._cache.pop(self._cache_key(contact.key), None)
            return UpsertOutcome(contact.lead_id, error=_error_text(exc.body, exc.status))
        except (CrmUnavailable, CrmRejected) as exc:
            if not _may_have_created(exc.__cause__ or exc):
                raise
            raise _CreateInDoubt(self._in_doubt(contact, str(exc)), exc) from exc
        person_id = data.get("id") if isinstance(data, dict) else None
        if person_id is None:  # a success that names no person: created, or not?
            return self._in_doubt(contact, "Pipedrive answered without a person id")
        self._remember(contact.key, _person_from(data))
        return UpsertOutcome(contact.lead_id, crm_id=str(person_id))

    def _in_doubt(self, contact: CrmContact, why: str) -> UpsertOutcome:
        """The outcome of a create that may have been applied, from now on."""
        now = self._clock()
        settled = now + self._settle
        error = (
            f"a create may have reached Pipedrive ({why}): not sent again before "
            f"{settled.isoformat(timespec='seconds')}, then found by its Cauce id or created"
        )
        return UpsertOutcome(
            contact.lead_id, error=error, retryable=True, in_doubt_at=now, retry_at=settled
        )

    def _waiting(self, contact: CrmContact, since: datetime, settled: datetime) -> UpsertOutcome:
        """The outcome of a contact in doubt within the allowance: nothing sent."""
        error = (
            f"a create of {since.isoformat(timespec='seconds')} may be in Pipedrive and not in "
            f"its search yet: not sent again before {settled.isoformat(timespec='seconds')}"
        )
        return UpsertOutcome(
            contact.lead_id, error=error, retryable=True, in_doubt_at=since, retry_at=settled
        )

    async def _find_made(self, contact: CrmContact) -> _Person | None:
        """The person a create in doubt may have made: by the Cauce id it set (even if an
        older person got the lead's email meanwhile), then by the contact's key."""
        uid = contact.properties.get(self._cauce_id)
        keys = [CrmKey(self._cauce_id, str(uid))] if uid else []
        if contact.key not in keys:
            keys.append(contact.key)
        for key in keys:
            person = await self._find(key, use_cache=True)
            if person is not None:
                return person
        return None

    async def _synced_person(
        self, contact: CrmContact
    ) -> tuple[_Person | None, Mapping[str, Any] | None]:
        """The person the lead was synced to (`contact.crm_id`), read by its id, and the
        answer: no search, so it is found before the search index has it (a person created
        seconds ago, by another worker or before a restart) and whichever persons share
        its email; from the cache, with no request, when this process read it already.
        (None, None) when the lead has no id yet, or the person is gone (deleted or merged
        away in Pipedrive) or does not hold this lead's Cauce id (another lead's, or none:
        an id from another CRM after a switch): the search decides then, as for a lead
        never synced."""
        if not contact.crm_id or not contact.crm_id.isdigit():
            return None, None
        cached = self._cache.get(self._cache_key(contact.key))
        if cached is not None and str(cached.id) == contact.crm_id:
            return cached, None  # read by this process already: no request (a PATCH's 404 says)
        try:
            response = await self._send(
                Request.get(f"{self._base}{_PERSONS}/{contact.crm_id}", headers=self._headers)
            )
        except UpstreamClientError as exc:
            if exc.status in (404, 410):
                return None, None
            raise CrmRejected(_error_text(exc.body, exc.status)) from exc
        data = _data(response)
        if not isinstance(data, dict) or data.get("id") is None or data.get("is_deleted"):
            return None, None
        custom = data.get("custom_fields")
        theirs = custom.get(self._cauce_id) if isinstance(custom, dict) else None
        if theirs is None or theirs != contact.properties.get(self._cauce_id):
            return None, None  # not this lead's person (every sync writes the Cauce id)
        person = _person_from(data)
        self._remember(contact.key, person)
        return person, data

    async def _lists_to_clear(
        self, contact: CrmContact, found: _Person | None
    ) -> Mapping[str, Any] | None:
        """The person as a GET answers it, when an email or phone of it is to be cleared
        (which entry is primary: a search does not say)."""
        if found is None or not any(
            field in contact.properties and contact.properties[field] is None
            for field, _ in _CONTACT_LISTS
        ):
            return None
        response = await self._send(
            Request.get(f"{self._base}{_PERSONS}/{found.id}", headers=self._headers)
        )
        data = _data(response)
        return data if isinstance(data, dict) else None

    def _person_body(
        self, contact: CrmContact, found: _Person | None, current: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The create or update body; `current` is the person read when an email or phone
        is cleared (see `_lists_to_clear`)."""
        props = dict(contact.properties)
        cleared = {name for name, value in props.items() if value is None}
        key = contact.key
        email = props.pop("email", None) or (key.value if key.property == "email" else None)
        phone = props.pop("phone", None)
        parts = [str(p) for name in _NAME_PARTS if (p := props.pop(name, None))]
        name = props.pop("name", None) or " ".join(parts)
        body: dict[str, Any] = {}
        if name:
            body["name"] = str(name)
        elif found is None or cleared & {"name", *_NAME_PARTS}:
            # Pipedrive requires a name: on create, and for one whose parts are cleared.
            uid = props.get(self._cauce_id)
            body["name"] = str(email or phone or f"Lead {uid or contact.lead_id}")
        if email and (emails := _contact_list(str(email), found.emails if found else (), True)):
            body["emails"] = emails
        if phone and (phones := _contact_list(str(phone), found.phones if found else (), False)):
            body["phones"] = phones
        for field, plural in _CONTACT_LISTS:
            if field in cleared and current is not None and plural not in body:
                body[plural] = _without_primary(current.get(plural))
        for field in _TOP_LEVEL & props.keys():
            value = props.pop(field)
            if value is not None:
                body[field] = value
            elif field in _TOP_LEVEL_CLEAR:
                body[field] = _TOP_LEVEL_CLEAR[field]
        if props:
            body["custom_fields"] = props  # a cleared custom field goes as null
        return body

    async def _find(self, key: CrmKey, *, use_cache: bool) -> _Person | None:
        if use_cache and (cached := self._cache.get(self._cache_key(key))) is not None:
            return cached
        is_email = key.property == "email"
        params = {
            "term": key.value,
            "fields": "email" if is_email else "custom_fields",
            "limit": "10",
        }
        if len(key.value) <= _EXACT_MATCH_MAX:
            params["exact_match"] = "true"
        try:
            response = await self._send(
                Request.get(f"{self._base}{_SEARCH}", params=params, headers=self._headers)
            )
        except UpstreamClientError as exc:
            raise CrmRejected(_error_text(exc.body, exc.status)) from exc
        data = _data(response)
        items = data.get("items") if isinstance(data, dict) else None
        matches: list[_Person] = []
        for entry in items or []:
            item = entry.get("item") if isinstance(entry, dict) else None
            if not isinstance(item, dict) or not isinstance(item.get("id"), int):
                continue
            values = item.get("emails") if is_email else item.get("custom_fields")
            texts = [str(v) for v in values or [] if v is not None]
            wanted = key.value.strip().lower() if is_email else key.value
            if any((t.strip().lower() if is_email else t) == wanted for t in texts):
                matches.append(_person_from(item))
        if not matches:
            return None
        # Pipedrive does not keep emails unique: update the oldest, the same one each time.
        person = min(matches, key=lambda p: p.id)
        self._remember(key, person)
        return person

    async def _send(self, request: Request) -> Response:
        # Checked per request, not only per call: a call making several requests may
        # find the pause begun (by another lane's answer) between two of them.
        self._pause.check()
        try:
            response = await self._client.send(request)
        except UpstreamRateLimitedError as exc:
            raise await self._throttled(exc) from exc
        except Exception as exc:
            mapped = port_error("Pipedrive", exc, self._clock())
            if mapped is None:
                raise
            raise mapped from exc
        if response.headers.get("x-daily-requests-left", "").strip() == "0":
            await self._pause.pause(self._daily_reset(self._clock()), "DAILY")
        return response

    async def _throttled(self, exc: UpstreamRateLimitedError) -> CrmThrottled:
        now = self._clock()
        if exc.response.headers.get("x-daily-requests-left", "").strip() == "0":
            return await self._pause.pause(self._daily_reset(now), "DAILY")
        wait = exc.retry_after if exc.retry_after is not None else _BURST_SECONDS
        return await self._pause.pause(now + timedelta(seconds=wait), "BURST")


def _strings(values: object, field: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in values if isinstance(values, list) else []:
        if isinstance(value, dict):
            value = value.get(field)
        if value:
            out.append(str(value))
    return tuple(out)


def _person_from(data: Mapping[str, Any]) -> _Person:
    return _Person(
        int(data["id"]),
        _strings(data.get("emails"), "value"),
        _strings(data.get("phones"), "value"),
    )


def _record(person_id: int, data: object) -> CrmRecord:
    if not isinstance(data, dict):
        return CrmRecord(str(person_id))
    props: dict[str, Any] = {}
    if data.get("name"):
        props["name"] = data["name"]
    for field, plural in (("email", "emails"), ("phone", "phones")):
        entries = [e for e in data.get(plural) or [] if isinstance(e, dict)]
        primary = next((e for e in entries if e.get("primary")), entries[0] if entries else None)
        if primary is not None and primary.get("value"):
            props[field] = primary["value"]
    custom = data.get("custom_fields")
    if isinstance(custom, dict):
        props.update({k: v for k, v in custom.items() if v is not None})
    return CrmRecord(str(person_id), props)
