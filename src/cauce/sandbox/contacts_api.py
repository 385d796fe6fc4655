"""HubSpot CRM v3 contacts endpoints as plain functions: request data in, (status, body) out.

Kept free of the web framework so the semantics (what HubSpot answers, when a batch is
rejected whole and when it answers 207) can be read in one place. The batch rules:

* more than ``max_batch_inputs`` inputs: 400 ``VALIDATION_ERROR``, nothing applied;
* ``idProperty`` must name a property with unique values (``email`` or a custom unique
  one), else 400 ``Unable to perform update/upsert by non-unique ...``;
* the same id twice in one batch: 400 ``Duplicate IDs found in batch input``;
* an invalid input (unknown property, bad email, bad option, a unique value owned by
  another contact) rejects the whole batch (400, or 409 for a conflict) and nothing is
  written, *unless* every input carries an ``objectWriteTraceId`` and ``idProperty`` is
  not ``email``: then the valid inputs are written and the answer is 207 Multi-Status
  with one ``errors`` entry per failed input (HubSpot does not support partial upserts
  keyed on email).

Merges (``POST /crm/v3/objects/contacts/merge``, :meth:`ContactsApi.merge`; what the
merged record holds is :meth:`ContactStore.merge`'s): HubSpot documents that fetching by
an old id answers the merged record with its new id, so a GET and a batch read by record
id follow a merge. What a write by an old id does (PATCH, DELETE, batch archive, GDPR
delete) is not documented: by default the sandbox answers as for an id it does not have
(404, or 204 for the deletes that always answer it), so a client has to fetch first;
``follow_merged_writes`` makes writes follow the merge too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cauce.sandbox import bodies
from cauce.sandbox.store import MERGED_IDS, ConflictError, Contact, ContactStore

__all__ = ["ContactsApi", "Reply"]

DEFAULT_READ_PROPERTIES = ["email", "firstname", "lastname"]


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer: a status and a JSON body (``None`` for 204)."""

    status: int
    body: dict[str, Any] | None = None


class _Rejected(Exception):
    """One input failed; carries the whole-batch answer and the 207 error entry."""

    def __init__(self, reply: Reply, item: dict[str, Any]) -> None:
        super().__init__(reply.status)
        self.reply = reply
        self.item = item


class _BatchRejected(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _validation(message: str, **context: list[str]) -> Reply:
    return Reply(400, bodies.error_body(message, "VALIDATION_ERROR", context=context or None))


def _property_problems(problems: list[dict[str, Any]]) -> str:
    return "Property values were not valid: " + orjson.dumps(problems).decode()


class ContactsApi:
    """The contacts endpoints over a :class:`ContactStore`."""

    def __init__(
        self,
        store: ContactStore,
        *,
        max_batch_inputs: int,
        portal_id: int,
        shuffle: Callable[[list[dict[str, Any]]], None] | None = None,
        follow_merged_writes: bool = False,
    ) -> None:
        self.store = store
        self._max = max_batch_inputs
        self._portal = portal_id
        self._shuffle = shuffle
        self.follow_merged_writes = follow_merged_writes

    # -- helpers -------------------------------------------------------------------------

    def _too_many(self, inputs: list[Any]) -> Reply | None:
        if len(inputs) > self._max:
            return _validation(bodies.BATCH_TOO_LARGE_MESSAGE.format(limit=self._max))
        return None

    def _non_unique(self, prop: str) -> Reply:
        message = bodies.NON_UNIQUE_MESSAGE.format(name=prop, portal=self._portal)
        return _validation(message)

    def _conflict(self, exc: ConflictError) -> Reply:
        if exc.prop == "email":
            message = bodies.CONFLICT_MESSAGE.format(id=exc.existing_id)
        else:  # Guessed wording: HubSpot's text for a custom unique clash is not public.
            message = (
                f"A contact with {exc.prop} {exc.value} already exists. "
                f"Existing ID: {exc.existing_id}"
            )
        return Reply(409, bodies.error_body(message, "CONFLICT"))

    @staticmethod
    def _inputs(payload: Any) -> list[Any] | Reply:
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            return _validation("Invalid input JSON: 'inputs' must be an array of objects")
        return inputs

    def _finish(self, results: list[dict[str, Any]], errors: list[dict[str, Any]],
                started: float) -> Reply:  # fmt: skip
        if self._shuffle is not None:
            self._shuffle(results)
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        body["startedAt"] = bodies.iso_millis(started)
        body["completedAt"] = bodies.iso_millis(time.time())
        return Reply(207 if errors else 200, body)

    # -- batch upsert --------------------------------------------------------------------

    def batch_upsert(self, payload: Any, *, id_property: str | None = None) -> Reply:
        """``POST /crm/v3/objects/contacts/batch/upsert``.

        Each input names its ``idProperty``; the ``?idProperty=`` query parameter, which
        HubSpot's reference also documents, fills it in for inputs that do not.
        """
        started = time.time()
        inputs = self._inputs(payload)
        if isinstance(inputs, Reply):
            return inputs
        if (reply := self._too_many(inputs)) is not None:
            return reply
        seen: dict[tuple[str, str], int] = {}
        for item in inputs:
            if id_property and not item.get("idProperty"):
                item["idProperty"] = id_property
            prop, key = item.get("idProperty"), item.get("id")
            if (
                not isinstance(prop, str)
                or not prop
                or not isinstance(key, str | int)
                or not (str(key).strip())
            ):
                return _validation("Each input needs an 'id' and an 'idProperty'")
            if not self.store.is_unique(prop):
                return self._non_unique(prop)
            if not isinstance(item.get("properties", {}), dict):
                return _validation("Invalid input JSON: 'properties' must be an object")
            norm = (prop, self.store.normalize(prop, str(key)))
            seen[norm] = seen.get(norm, 0) + 1
        repeated = [key for (_, key), n in seen.items() if n > 1]
        if repeated:
            message = bodies.DUPLICATE_IDS_MESSAGE.format(ids=", ".join(repeated))
            return _validation(message, ids=repeated)
        partial = all(
            item.get("objectWriteTraceId") and item["idProperty"] != "email" for item in inputs
        )
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        try:
            with self.store.atomic():
                for item in inputs:
                    try:
                        with self.store.atomic():
                            results.append(self._upsert_one(item))
                    except _Rejected as rejected:
                        if not partial:
                            raise _BatchRejected(rejected.reply) from None
                        errors.append(rejected.item)
        except _BatchRejected as whole:
            return whole.reply
        return self._finish(results, errors, started)

    def _upsert_one(self, item: dict[str, Any]) -> dict[str, Any]:
        prop, key = item["idProperty"], str(item["id"])
        trace = item.get("objectWriteTraceId")
        context = {"objectWriteTraceId": [str(trace)]} if trace else {"ids": [key]}
        # The id becomes the idProperty's value, so it is checked like any value (an id
        # that is not an email fails an email upsert with INVALID_EMAIL).
        values, problems = self.store.check({**(item.get("properties") or {}), prop: key})
        if problems:
            message = _property_problems(problems)
            reply = Reply(400, bodies.error_body(message, "VALIDATION_ERROR"))
            raise _Rejected(reply, bodies.batch_item_error("VALIDATION_ERROR", message, context))
        existing = self.store.find(prop, key)
        try:
            if existing is None:
                contact, new = self.store.create(values), True
            else:
                contact, new = self.store.update(existing, values), False
        except ConflictError as exc:
            reply = self._conflict(exc)
            assert reply.body is not None
            raise _Rejected(
                reply, bodies.batch_item_error("CONFLICT", reply.body["message"], context)
            ) from None
        result = contact.to_api(sorted(values))
        result["new"] = new
        if trace:
            result["objectWriteTraceId"] = str(trace)
        return result

    # -- batch read and archive ----------------------------------------------------------

    def batch_read(self, payload: Any, *, archived: bool) -> Reply:
        """``POST /crm/v3/objects/contacts/batch/read``."""
        started = time.time()
        inputs = self._inputs(payload)
        if isinstance(inputs, Reply):
            return inputs
        if (reply := self._too_many(inputs)) is not None:
            return reply
        prop = payload.get("idProperty") or "hs_object_id"
        if prop != "hs_object_id" and not self.store.is_unique(prop):
            return self._non_unique(prop)
        names = payload.get("properties") or DEFAULT_READ_PROPERTIES
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        answered: set[str] = set()
        for item in inputs:
            key = str(item.get("id", ""))
            contact: Contact | None
            if archived:
                contact = self.store.get(key, archived=True) if prop == "hs_object_id" else None
            elif prop == "hs_object_id":
                contact = self.store.resolve(key)  # a fetch follows a merge
            else:
                contact = self.store.find(prop, key)
            if contact is None:
                missing.append(key)
            elif contact.id not in answered:  # two old ids of one merged record: once
                answered.add(contact.id)
                results.append(contact.to_api(list(names)))
        errors = []
        if missing:
            context = {"ids": missing}
            errors.append(
                bodies.batch_item_error("OBJECT_NOT_FOUND", bodies.BATCH_NOT_FOUND_MESSAGE, context)
            )
        return self._finish(results, errors, started)

    def batch_archive(self, payload: Any) -> Reply:
        """``POST /crm/v3/objects/contacts/batch/archive``: 204 whether or not ids exist."""
        inputs = self._inputs(payload)
        if isinstance(inputs, Reply):
            return inputs
        if (reply := self._too_many(inputs)) is not None:
            return reply
        with self.store.atomic():
            for item in inputs:
                self.store.archive(self._written_id(str(item.get("id", ""))))
        return Reply(204)

    def gdpr_delete(self, payload: Any) -> Reply:
        """``POST /crm/v3/objects/contacts/gdpr-delete``: permanent deletion."""
        if not isinstance(payload, dict) or "objectId" not in payload:
            return _validation("Invalid input JSON: 'objectId' is required")
        key = str(payload["objectId"])
        prop = payload.get("idProperty") or "hs_object_id"
        if prop != "hs_object_id" and not self.store.is_unique(prop):
            return self._non_unique(prop)
        contact = self.store.find(prop, key)
        if contact is None and prop == "hs_object_id":
            contact = self.store.get(key, archived=True)
            if contact is None and self.follow_merged_writes:
                contact = self.store.resolve(key)
        if contact is None:
            return self._not_found(key)
        with self.store.atomic():
            self.store.purge(contact)
        return Reply(204)

    # -- single objects ------------------------------------------------------------------

    @staticmethod
    def _not_found(key: str) -> Reply:
        body = bodies.error_body(
            bodies.NOT_FOUND_MESSAGE, "OBJECT_NOT_FOUND", context={"id": [key]}
        )
        return Reply(404, body)

    def _written_id(self, key: str) -> str:
        """The record a write by record id acts on: ``key``, or with
        ``follow_merged_writes`` the record a merge made of it."""
        if self.follow_merged_writes and key not in self.store.live:
            merged = self.store.resolve(key)
            if merged is not None:
                return merged.id
        return key

    def _lookup(
        self, key: str, id_property: str | None, archived: bool, *, write: bool = False
    ) -> Contact | Reply:
        prop = id_property or "hs_object_id"
        if prop != "hs_object_id" and not self.store.is_unique(prop):
            return self._non_unique(prop)
        if archived and prop == "hs_object_id":
            found = self.store.get(key, archived=True) or self.store.get(key)
        elif prop == "hs_object_id" and (not write or self.follow_merged_writes):
            found = self.store.resolve(key)
        else:
            found = self.store.find(prop, key)
        return found if found is not None else self._not_found(key)

    def get_one(
        self, key: str, *, id_property: str | None, names: list[str] | None, archived: bool
    ) -> Reply:
        """``GET /crm/v3/objects/contacts/{id}``."""
        found = self._lookup(key, id_property, archived)
        if isinstance(found, Reply):
            return found
        return Reply(200, found.to_api(names or DEFAULT_READ_PROPERTIES))

    def patch_one(
        self, key: str, payload: Any, *, id_property: str | None, source: str = "API"
    ) -> Reply:
        """``PATCH /crm/v3/objects/contacts/{id}`` (also used by the sandbox's own UI hook)."""
        props = payload.get("properties") if isinstance(payload, dict) else None
        if not isinstance(props, dict):
            return _validation("Invalid input JSON: 'properties' must be an object")
        found = self._lookup(key, id_property, False, write=True)
        if isinstance(found, Reply):
            return found
        values, problems = self.store.check(props)
        if problems:
            message = _property_problems(problems)
            return Reply(400, bodies.error_body(message, "VALIDATION_ERROR"))
        try:
            with self.store.atomic():
                contact = self.store.update(found, values, source)
        except ConflictError as exc:
            return self._conflict(exc)
        return Reply(200, contact.to_api())

    def archive_one(self, key: str) -> Reply:
        """``DELETE /crm/v3/objects/contacts/{id}``: 204 even if it did not exist."""
        with self.store.atomic():
            self.store.archive(self._written_id(key))
        return Reply(204)

    def create_one(self, payload: Any) -> Reply:
        """``POST /crm/v3/objects/contacts``: not idempotent, 409 on an existing email."""
        props = payload.get("properties") if isinstance(payload, dict) else None
        if not isinstance(props, dict):
            return _validation("Invalid input JSON: 'properties' must be an object")
        values, problems = self.store.check(props)
        if problems:
            message = _property_problems(problems)
            return Reply(400, bodies.error_body(message, "VALIDATION_ERROR"))
        try:
            with self.store.atomic():
                contact = self.store.create(values)
        except ConflictError as exc:
            return self._conflict(exc)
        return Reply(201, contact.to_api())

    def merge(self, payload: Any, *, new_record: bool = True) -> Reply:
        """``POST /crm/v3/objects/contacts/merge``: ``objectIdToMerge`` into
        ``primaryObjectId``; 200 with the merged record (``new_record``: under a new id, as
        HubSpot does now; False: the primary's, as before). Also what a merge in HubSpot's
        UI does. The refusals' wording is guessed (no source shows it)."""
        if not isinstance(payload, dict):
            return _validation("Invalid input JSON: expected an object")
        ids = [payload.get("primaryObjectId"), payload.get("objectIdToMerge")]
        if not all(isinstance(i, str | int) and str(i).strip() for i in ids):
            return _validation("Invalid input JSON: 'primaryObjectId' and 'objectIdToMerge' "
                               "are required")  # fmt: skip
        primary_id, secondary_id = (str(i).strip() for i in ids)
        if primary_id == secondary_id:
            return _validation(bodies.MERGE_SELF_MESSAGE.format(id=primary_id))
        primary, secondary = self.store.live.get(primary_id), self.store.live.get(secondary_id)
        if primary is None or secondary is None:
            return self._not_found(primary_id if primary is None else secondary_id)
        with self.store.atomic():
            merged = self.store.merge(primary, secondary, new_record=new_record)
        return Reply(200, merged.to_api([*DEFAULT_READ_PROPERTIES, MERGED_IDS]))

    def list_page(self, *, limit: int, after: str | None, names: list[str] | None) -> Reply:
        """``GET /crm/v3/objects/contacts``: pages in record-id order."""
        limit = max(1, min(limit, 100))
        ids = sorted(self.store.live, key=int)
        if after:
            ids = [i for i in ids if int(i) > int(after)] if after.isdigit() else []
        page = ids[:limit]
        body: dict[str, Any] = {
            "results": [self.store.live[i].to_api(names or DEFAULT_READ_PROPERTIES) for i in page]
        }
        if len(ids) > limit:
            nxt = page[-1]
            body["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
        return Reply(200, body)
