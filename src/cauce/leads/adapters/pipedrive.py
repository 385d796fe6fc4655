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
window is small). Exactly-once then holds while the search sees the person: a crash
after a create and before Cauce records the id, re-run within the index's lag, could
create a second person, which no client of this API can rule out (a bounded in-process
cache of key -> person narrows it to process restarts). Creates are never retried
inside the call (not idempotent); updates are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import orjson

from cauce.core.http import (
    HttpClient,
    Request,
    Response,
    UpstreamClientError,
    UpstreamRateLimitedError,
)
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
    CrmContact,
    CrmKey,
    CrmRecord,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
)

__all__ = ["PIPEDRIVE_API", "PipedriveCrm"]

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

    ``cauce_id_property`` is the key of the person custom field holding Cauce's id.
    """

    name = "pipedrive"

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
        self.max_batch = max_batch

    # -- the port ------------------------------------------------------------------------

    async def upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        """Search each contact, then create or update it; one outcome per contact."""
        self._pause.check()
        outcomes: list[UpsertOutcome | None] = [None] * len(contacts)
        try:
            for position, contact in enumerate(contacts):
                outcomes[position] = await self._upsert_one(contact)
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

    async def _upsert_one(self, contact: CrmContact) -> UpsertOutcome:
        found, current = await self._synced_person(contact)
        if found is None:
            found = await self._find(contact.key, use_cache=True)
        try:
            if current is None:
                current = await self._lists_to_clear(contact, found)
            body = self._person_body(contact, found, current)
            if found is None:
                # A create is not idempotent: one attempt (no idempotency key).
                request = Request.post(f"{self._base}{_PERSONS}", json=body, headers=self._headers)
            else:
                request = Request.patch(
                    f"{self._base}{_PERSONS}/{found.id}",
                    json=body,
                    headers=self._headers,
                    idempotency_key=body_key({"id": found.id, **body}),
                )
            response = await self._send(request)
        except UpstreamClientError as exc:
            self._cache.pop(self._cache_key(contact.key), None)
            if exc.status == 404 and found is not None:  # deleted since the search
                return UpsertOutcome(contact.lead_id, error="person vanished", retryable=True)
            return UpsertOutcome(contact.lead_id, error=_error_text(exc.body, exc.status))
        data = _data(response)
        person_id = data.get("id") if isinstance(data, dict) else None
        if person_id is None:
            return UpsertOutcome(contact.lead_id, error="no person id returned", retryable=True)
        self._remember(contact.key, _person_from(data))
        return UpsertOutcome(contact.lead_id, crm_id=str(person_id))

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
