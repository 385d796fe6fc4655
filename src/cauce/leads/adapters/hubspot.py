"""HubSpot CRM v3 contacts behind the `CrmClient` port.

* **Upsert**: ``POST /crm/v3/objects/contacts/batch/upsert`` with at most 100 inputs and
  one ``idProperty`` per input; a batch is split by key property (email-keyed and
  Cauce-id-keyed contacts go in separate requests, the latter first, so a partial answer
  is possible for them: HubSpot does not support partial upserts keyed on email). A lead
  synced before (``crm_id``) is sent by its Cauce id, its email as a property, so a new
  or changed email updates its own contact instead of clashing with it (409); a refusal
  that says the other key finds the contact switches it, once (``UpsertKeys``). Results
  are matched back by key (:mod:`.hubspot_batch`). A property to clear (None at the
  port) is sent as ``""``: HubSpot ignores ``null``.
* **A whole batch refused for one record** (400/409 on an email-keyed batch): the record
  is named from the message when possible, else the batch is bisected, so one bad lead
  costs a few requests instead of blocking the account's delivery. A refusal that names
  the setup (a non-unique idProperty, a property the portal lacks) is `CrmRejected`.
* **Rate limits**: a 429's ``policyName`` and the ``X-HubSpot-RateLimit-*`` headers
  become `CrmThrottled`: the rolling windows until ``Retry-After`` or one interval, and
  ``DAILY`` until the account's next midnight (``daily_reset``, injectable). The pause is
  kept here (calls before it ends raise at once, without a request) and fed to the
  upstream's rate limiter (``drain``), which pauses every caller of the upstream, in
  every process when the limiter is shared through Redis. A success whose
  ``X-HubSpot-RateLimit-Daily-Remaining`` is 0 starts the daily pause before the 429.
* **Outages**: 5xx, timeouts, connection failures, an open circuit: `CrmUnavailable`
  with the upstream's ``Retry-After`` or the circuit's remaining open time.
* **Delete**: ``POST /crm/v3/objects/contacts/gdpr-delete`` by ``idProperty`` (a
  permanent deletion, as erasure requires); 404 means there was nothing to delete. By
  record id, the id is fetched first (``GET``): a merged contact's old id answers the
  merged record, under its new id, and that record is the one deleted (HubSpot documents
  the fetch, not what a delete by an old id does). ``delete_contact`` (`CrmWithMerges`)
  says which record went, its id and ``hs_merged_object_ids``, for an erasure to send
  again the other leads whose contacts a user merged into it: by the Cauce id it first
  fetches the record by it (one GET more per erasure).
* **Read**: ``POST /crm/v3/objects/contacts/batch/read`` with ``idProperty``; by record
  id, an old id of a merged contact reads the merged record (``hs_merged_object_ids``).
* **Merges** made in HubSpot: a lead whose contact was merged into one another lead's
  Cauce id keeps fails for good (``MERGED``) instead of adopting it by its email
  (:func:`~cauce.leads.adapters.hubspot_batch.merged_away`).
* **Subscription status** (optional, ``subscription``): after the upserts, the lead's
  marketing consent (``CrmContact.consent``) sets an email subscription type's status,
  a yes only when it is newer than any opt-out HubSpot holds
  (:mod:`.hubspot_subscriptions`). A status request that fails (429, 5xx, an outage)
  gives the contacts it was for a retryable outcome, so a withdrawal is not lost.

In-call retries (decision): batch upsert, batch read and GDPR delete are idempotent in
effect (keyed by a unique property), so each request carries an idempotency key (a hash
of its body) and the upstream's pipeline may retry a 5xx or a timeout inside the call,
under its retry budget and breaker. DESIGN.md asks for job-level retries for deliveries;
here a job-level retry would postpone the whole account's delivery by seconds for one
failed request, which at HubSpot's 10 % background of 5xx under load (the benchmark's
setting) would waste most of the rate limit. The cost: the first DAILY 429 of a day may
be met up to ``max_attempts`` times before the pause starts. Pass
``retry_in_call=False`` for a single attempt per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import structlog

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
from cauce.leads.adapters.hubspot_batch import (
    HUBSPOT_API,
    MAX_INPUTS,
    MERGED_IDS,
    HubSpotError,
    UpsertKeys,
    attribute,
    describe,
    existing_id,
    item_errors,
    map_upsert_results,
    merged_away,
    merged_ids,
    normalise,
    parse_error,
    rejection_kind,
    upsert_inputs,
)
from cauce.leads.adapters.hubspot_subscriptions import SubscriptionSetup, SubscriptionStatuses
from cauce.leads.ports import (
    OBJECT_ID,
    CrmContact,
    CrmDeletion,
    CrmKey,
    CrmRecord,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
)

__all__ = ["HUBSPOT_API", "HubSpotCrm", "SubscriptionSetup"]

log = structlog.get_logger("cauce.leads.adapters.hubspot")

_CONTACTS: Final = "/crm/v3/objects/contacts"
_UPSERT: Final = f"{_CONTACTS}/batch/upsert"
_READ: Final = f"{_CONTACTS}/batch/read"
_GDPR_DELETE: Final = f"{_CONTACTS}/gdpr-delete"
_DAILY: Final = "DAILY"
_SECONDLY: Final = "SECONDLY"
_DEFAULT_WINDOW_SECONDS: Final = 10.0
_DUPLICATE_IN_BATCH: Final = "same CRM contact as another lead in this batch; sent next time"


class HubSpotCrm:
    """`CrmClient` for HubSpot's CRM v3 contacts (see the module docstring).

    ``client`` is the upstream's guarded client (``HttpClients.get("hubspot")``);
    ``clock`` gives wall time for throttle deadlines; ``daily_reset`` (default: midnight
    in ``timezone``, the account's time zone) says when a DAILY limit ends;
    ``read_properties`` are the properties :meth:`read` asks for; ``subscription`` (None:
    off) names the email subscription type that follows each lead's marketing consent.
    """

    name = "hubspot"

    def __init__(
        self,
        client: HttpClient,
        *,
        token: str,
        base_url: str = HUBSPOT_API,
        cauce_id_property: str = "cauce_id",
        clock: WallClock = utc_now,
        timezone: str = "UTC",
        daily_reset: DailyReset | None = None,
        read_properties: Iterable[str] = ("email", "firstname", "lastname"),
        retry_in_call: bool = True,
        max_batch: int = MAX_INPUTS,
        subscription: SubscriptionSetup | None = None,
    ) -> None:
        if not 1 <= max_batch <= MAX_INPUTS:
            raise ValueError(f"max_batch must be within [1, {MAX_INPUTS}]")
        self._client = client
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._cauce_id = cauce_id_property
        self._clock = clock
        self._daily_reset = daily_reset if daily_reset is not None else next_midnight(timezone)
        self._read_properties = tuple(dict.fromkeys(read_properties))
        self._retry_in_call = retry_in_call
        self.max_batch = max_batch
        self._statuses = (
            None
            if subscription is None
            else SubscriptionStatuses(subscription, self._post_call, max_batch)
        )
        self._pause = RatePause("HubSpot", client, clock)

    @property
    def paused_until(self) -> datetime | None:
        """When the current rate-limit pause ends (None: not paused)."""
        return self._pause.until

    # -- the port ------------------------------------------------------------------------

    async def upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        """Create or update each contact by its key; one outcome per contact, same order.

        With a ``subscription``, the contacts upserted then get their consent's status.
        """
        outcomes = await self._upsert_all(contacts)
        if self._statuses is None:
            return outcomes
        return await self._statuses.apply(contacts, outcomes)

    async def _upsert_all(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        self._pause.check()
        keys = UpsertKeys(contacts, self._cauce_id)
        groups, repeated = keys.groups()
        outcomes: list[UpsertOutcome | None] = [None] * len(contacts)
        try:
            for positions in groups:
                for start in range(0, len(positions), self.max_batch):
                    await self._upsert_chunk(
                        keys, positions[start : start + self.max_batch], outcomes
                    )
        except (CrmThrottled, CrmUnavailable) as exc:
            done = settle_partial(contacts, outcomes, exc)
            return self._fill_repeated(contacts, done, repeated)
        for position in repeated:
            outcomes[position] = UpsertOutcome(
                contacts[position].lead_id, error=_DUPLICATE_IN_BATCH, retryable=True
            )
        return [
            outcome
            if outcome is not None
            else UpsertOutcome(
                c.lead_id, error="HubSpot did not report this contact", retryable=True
            )
            for c, outcome in zip(contacts, outcomes, strict=True)
        ]

    async def delete(self, key: CrmKey) -> bool:
        """GDPR-delete the contact with this key; False if HubSpot has no such contact.

        By record id, a contact merged since is found under the merged record's id, which
        is deleted: the erased lead's data is in it (and so is the other records')."""
        return (await self._delete(key, learn=False)).found

    async def delete_contact(self, key: CrmKey) -> CrmDeletion:
        """As `delete`, saying which record went: its id and the ids merged into it
        (``hs_merged_object_ids``), whose leads lost their contact with it. By record id
        it costs nothing more (the id is fetched anyway); by another property (the Cauce
        id) the record is fetched by it first: one GET more, and the deletion as before."""
        return await self._delete(key, learn=True)

    async def _delete(self, key: CrmKey, *, learn: bool) -> CrmDeletion:
        self._pause.check()
        payload: dict[str, Any] = {"objectId": key.value}
        by_id = key.property in ("hs_object_id", OBJECT_ID)
        current: tuple[str, frozenset[str]] | None = None
        if not by_id:
            payload["idProperty"] = key.property
            if learn:
                current = await self._current(key.value, key.property)
        elif (current := await self._current(key.value)) is not None and current[0] != key.value:
            log.info("crm.hubspot.erase_merged", crm_id=key.value, merged_into=current[0])
            payload["objectId"] = current[0]
        try:
            await self._send(self._post(_GDPR_DELETE, payload))
        except UpstreamClientError as exc:
            if exc.status == 404:
                return CrmDeletion(found=False)
            raise CrmRejected(f"HubSpot refused the deletion (HTTP {exc.status})") from exc
        went = {key.value} if by_id else set()
        if current is not None:
            went |= {current[0], *current[1]}
        return CrmDeletion(found=True, crm_ids=frozenset(went))

    async def read(self, keys: Sequence[CrmKey]) -> list[CrmRecord | None]:
        """Read contacts back by key, ``read_properties`` plus the key property."""
        self._pause.check()
        records: list[CrmRecord | None] = [None] * len(keys)
        groups: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(key.property, []).append(position)
        for prop, positions in groups.items():
            for start in range(0, len(positions), MAX_INPUTS):
                chunk = positions[start : start + MAX_INPUTS]
                found = await self._read_chunk(prop, [keys[p].value for p in chunk])
                for position in chunk:
                    records[position] = found.get(normalise(prop, keys[position].value))
        return records

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the composition root."""

    async def _current(
        self, value: str, id_property: str | None = None
    ) -> tuple[str, frozenset[str]] | None:
        """The record ``value`` finds (by record id, else by ``id_property``): the id it is
        under now (a merge gives it a new one) and the ids merged into it; None if HubSpot
        has no live record by it (deleted, archived, or never there)."""
        params = {"properties": MERGED_IDS}
        if id_property is not None:
            params["idProperty"] = id_property
        request = Request.get(
            f"{self._base}{_CONTACTS}/{quote(value, safe='')}",
            params=params,
            headers=self._headers,
        )
        try:
            response = await self._send(request)
        except UpstreamClientError as exc:
            # 400: not a record id HubSpot could have (by a property: one that is not
            # unique, which the deletion then reports)
            if exc.status in (400, 404):
                return None
            raise CrmRejected(f"HubSpot refused a read of the contact (HTTP {exc.status})") from exc
        try:
            body = response.json()
        except ValueError:
            raise CrmUnavailable("HubSpot answered a read with an unreadable body") from None
        found = body.get("id") if isinstance(body, dict) else None
        if found is None:
            return None
        properties = body.get("properties")
        merged = merged_ids(properties.get(MERGED_IDS)) if isinstance(properties, dict) else []
        return str(found), frozenset(merged)

    # -- upsert internals ----------------------------------------------------------------

    async def _upsert_chunk(
        self, keys: UpsertKeys, positions: list[int], outcomes: list[UpsertOutcome | None]
    ) -> None:
        chunk = [keys.sent[p] for p in positions]
        prop = chunk[0].key.property
        try:
            response = await self._send(self._post(_UPSERT, {"inputs": upsert_inputs(chunk)}))
        except UpstreamClientError as exc:
            error = parse_error(exc.body)
            if exc.status not in (400, 409) or rejection_kind(error, exc.status) == "config":
                raise CrmRejected(
                    f"HubSpot refused the batch (HTTP {exc.status} {error.category}); "
                    "check the portal's properties and CAUCE_CRM__FIELD_MAPPING"
                ) from exc
            await self._isolate(keys, positions, outcomes, error)
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        done = map_upsert_results(prop, chunk, body)
        failed = {
            positions[offset]: error
            for offset, error in item_errors(prop, chunk, body).items()
            if (outcome := done[offset]) is not None and not outcome.ok
        }
        settled = await self._merged_away(keys, failed, outcomes)
        switched = [
            position
            for position, error in failed.items()
            if position not in settled and keys.switch(position, error)
        ]
        for offset, outcome in enumerate(done):
            if outcome is not None and positions[offset] not in {*switched, *settled}:
                outcomes[positions[offset]] = outcome
        if switched:
            log.info("crm.hubspot.rekey", size=len(switched), category="CONFLICT")
            await self._upsert_chunk(keys, switched, outcomes)

    async def _isolate(
        self,
        keys: UpsertKeys,
        positions: list[int],
        outcomes: list[UpsertOutcome | None],
        error: HubSpotError,
    ) -> None:
        """Find the record(s) a whole-batch 400/409 is about; resend the others, then
        those whose other key finds their contact (``UpsertKeys.switch``)."""
        chunk = [keys.sent[p] for p in positions]
        refused: set[int]
        later: set[int]
        if len(positions) == 1:
            refused, later = {0}, set()
        else:
            refused, later = attribute(error, chunk[0].key.property, chunk, self._cauce_id)
        if not refused and not later:
            log.info("crm.hubspot.bisect", size=len(positions), category=error.category)
            half = len(positions) // 2
            await self._upsert_chunk(keys, positions[:half], outcomes)
            await self._upsert_chunk(keys, positions[half:], outcomes)
            return
        settled = await self._merged_away(
            keys, {positions[offset]: error for offset in refused}, outcomes
        )
        rekey = [
            positions[offset]
            for offset in refused
            if positions[offset] not in settled and keys.switch(positions[offset], error)
        ]
        for offset in refused:
            if positions[offset] not in {*rekey, *settled}:
                outcomes[positions[offset]] = UpsertOutcome(
                    chunk[offset].lead_id, error=describe(error)
                )
        for offset in later:
            outcomes[positions[offset]] = UpsertOutcome(
                chunk[offset].lead_id, error=_DUPLICATE_IN_BATCH, retryable=True
            )
        rest = [p for offset, p in enumerate(positions) if offset not in refused | later]
        if rest:
            await self._upsert_chunk(keys, rest, outcomes)
        if rekey:
            log.info("crm.hubspot.rekey", size=len(rekey), category=error.category)
            await self._upsert_chunk(keys, rekey, outcomes)

    async def _merged_away(
        self,
        keys: UpsertKeys,
        failed: Mapping[int, HubSpotError],
        outcomes: list[UpsertOutcome | None],
    ) -> set[int]:
        """Settle (as failed for good) the contacts whose refusal would have them adopt, by
        their email, the contact their own was merged into while that one keeps another
        lead's Cauce id; their positions.

        Asked only of a lead synced before whose refusal does not name its own contact:
        the contact the refusal names (else the lead's ``crm_id``) is read, one batch read
        for all; it is the merged one if its ``hs_merged_object_ids`` has the ``crm_id``
        (a read by an old id answers the merged record too). One gone instead (deleted)
        is adopted as before. A read that fails leaves them to be adopted: the call goes
        on, as it did before this check.
        """
        asked: dict[int, str] = {}
        read: set[str] = set()
        for position, error in failed.items():
            crm_id = keys.given[position].crm_id
            named = existing_id(error)
            if crm_id and keys.adopts(position, error) and named != crm_id:
                asked[position] = crm_id
                read.add(named or crm_id)
        if not asked:
            return set()
        try:
            records = await self._read_chunk("hs_object_id", sorted(read), (self._cauce_id,))
        except (CrmRejected, CrmThrottled, CrmUnavailable) as exc:
            # The upserts HubSpot applied stand whatever this read meets.
            log.warning(
                "crm.hubspot.merge_check_failed", size=len(asked), error_class=type(exc).__name__
            )
            return set()
        settled: set[int] = set()
        for position, crm_id in asked.items():
            record = records.get(crm_id)
            if record is None or record.crm_id == crm_id:
                continue
            holder = record.properties.get(self._cauce_id)
            if holder and holder != keys.sent[position].key.value:
                outcomes[position] = UpsertOutcome(
                    keys.given[position].lead_id, error=merged_away(crm_id, record.crm_id)
                )
                settled.add(position)
        if settled:
            log.info("crm.hubspot.merged_away", size=len(settled))
        return settled

    @staticmethod
    def _fill_repeated(
        contacts: Sequence[CrmContact], outcomes: list[UpsertOutcome], repeated: list[int]
    ) -> list[UpsertOutcome]:
        for position in repeated:
            outcomes[position] = UpsertOutcome(
                contacts[position].lead_id, error=_DUPLICATE_IN_BATCH, retryable=True
            )
        return outcomes

    # -- read internals ------------------------------------------------------------------

    async def _read_chunk(
        self, prop: str, values: list[str], properties: Sequence[str] | None = None
    ) -> dict[str, CrmRecord]:
        """Records by ``prop``'s value (``properties``: asked instead of the read ones).

        By record id, an old id of a merged contact answers the merged record under its
        new id: it is found again by the ids the record says were merged into it."""
        by_id = prop in ("hs_object_id", OBJECT_ID)
        names = [*(self._read_properties if properties is None else properties), prop]
        if by_id:
            names.append(MERGED_IDS)
        payload: dict[str, Any] = {
            "inputs": [{"id": value} for value in values],
            "properties": list(dict.fromkeys(names)),
        }
        if not by_id:
            payload["idProperty"] = prop
        try:
            response = await self._send(self._post(_READ, payload))
        except UpstreamClientError as exc:
            if exc.status == 404:
                return {}
            raise CrmRejected(f"HubSpot refused the read (HTTP {exc.status})") from exc
        try:
            body = response.json()
        except ValueError:
            raise CrmUnavailable("HubSpot answered a read with an unreadable body") from None
        found: dict[str, CrmRecord] = {}
        for result in (body.get("results") if isinstance(body, dict) else None) or []:
            if not isinstance(result, dict) or result.get("id") is None:
                continue
            properties = result.get("properties")
            props = (
                {k: v for k, v in properties.items() if v is not None}
                if isinstance(properties, dict)
                else {}
            )
            record = CrmRecord(str(result["id"]), props)
            if by_id:
                for old_id in merged_ids(props.get(MERGED_IDS)):
                    found.setdefault(old_id, record)
                found[record.crm_id] = record
                continue
            value = props.get(prop)
            if isinstance(value, str):
                found[normalise(prop, value)] = record
        return found

    # -- HTTP and rate limits ------------------------------------------------------------

    def _post(
        self, path: str, payload: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> Request:
        # Every POST here is idempotent in effect: keyed upserts, reads, GDPR deletes, and
        # status writes (the same status again is HubSpot's NO_STATUS_CHANGE).
        return Request(
            "POST",
            self._base + path,
            headers=self._headers,
            json=payload,
            params=params,
            idempotency_key=body_key(payload) if self._retry_in_call else None,
        )

    async def _post_call(
        self, path: str, payload: Mapping[str, Any], params: Mapping[str, str] | None
    ) -> Response:
        """One POST, sent: what the subscription statuses' requests go through."""
        return await self._send(self._post(path, payload, params))

    async def _send(self, request: Request) -> Response:
        """Send; raise the port's errors, except other 4xx which the caller reads."""
        # Checked per request, not only per call: a call making several requests may
        # find the pause begun (by another lane's answer) between two of them.
        self._pause.check()
        try:
            response = await self._client.send(request)
        except UpstreamRateLimitedError as exc:
            raise await self._throttled(exc) from exc
        except Exception as exc:
            mapped = port_error("HubSpot", exc, self._clock())
            if mapped is None:
                raise
            raise mapped from exc
        await self._observe(response)
        return response

    async def _observe(self, response: Response) -> None:
        """Start the daily pause as soon as HubSpot says no daily request is left."""
        remaining = response.headers.get("x-hubspot-ratelimit-daily-remaining", "").strip()
        if remaining == "0":
            await self._pause.pause(self._daily_reset(self._clock()), _DAILY)

    async def _throttled(self, exc: UpstreamRateLimitedError) -> CrmThrottled:
        now = self._clock()
        policy = parse_error(exc.body).policy_name
        if policy == _DAILY:
            until = self._daily_reset(now)
        else:
            wait = exc.retry_after  # Retry-After, or one interval when Remaining is 0
            if wait is None:
                wait = 1.0 if policy == _SECONDLY else _interval(exc.response)
            until = now + timedelta(seconds=wait)
        log.warning("crm.hubspot.throttled", policy=policy, until=until.isoformat())
        return await self._pause.pause(until, policy)


def _interval(response: Response) -> float:
    raw = response.headers.get("x-hubspot-ratelimit-interval-milliseconds", "")
    try:
        milliseconds = float(raw)
    except ValueError:
        return _DEFAULT_WINDOW_SECONDS
    return milliseconds / 1000.0 if milliseconds > 0 else _DEFAULT_WINDOW_SECONDS
