"""The in-memory contact store: unique indexes, property checks and all-or-nothing batches.

HubSpot keeps ``email`` unique among contacts (case-insensitively: it lowercases emails) and
any custom property created with unique values. The store enforces the same, so a client
that upserts on a stable key can never create a second contact for it, and a client that
does something else (a plain create, or a key that changes) gets HubSpot's 409.

Writes happen inside :meth:`ContactStore.atomic` blocks that nest like savepoints: a batch
rejected as a whole leaves no trace, and change events (for webhooks) are published only
when the outermost block commits.

Merges (:meth:`ContactStore.merge`) follow what HubSpot documents, and no more:

* the result is a new record with a new id, and both old ids point to it: fetching by
  either answers the merged record with its new id (developer changelog "Updated merge
  functionality for contacts and companies"). Before that change the primary kept its id
  (``new_record=False``);
* the primary's current values win, the secondary's fill what the primary lacks (same
  changelog; knowledge base "Merge records");
* the primary's email stays the email, the secondary's becomes an additional email
  (``hs_additional_emails``), and no new contact can be created with it (knowledge base
  "Merge contacts"); both old ids are listed in ``hs_merged_object_ids`` ("Merged contact
  IDs").

Guessed, as no source says: the lists are ``;``-separated; the merged record keeps the
primary's ``createdate``; a custom unique value the merged record does not keep is freed;
an email key finds a contact by an additional email only with
``find_by_additional_email`` (off: an upsert by it meets the 409 a create meets); the
merge publishes no webhook event (the sandbox's webhooks know no merge subscription).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cauce.sandbox.bodies import iso_millis, property_error
from cauce.sandbox.config import LIFECYCLE_STAGES, READ_ONLY_PROPERTIES

__all__ = [
    "ADDITIONAL_EMAILS",
    "MERGED_IDS",
    "ChangeEvent",
    "ConflictError",
    "Contact",
    "ContactStore",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: HubSpot's "Merged contact IDs" and the secondary emails a merge leaves on a contact.
MERGED_IDS = "hs_merged_object_ids"
ADDITIONAL_EMAILS = "hs_additional_emails"
# Set by HubSpot, never by a client (guessed read-only: no source shows a write of them).
_CALCULATED = frozenset({MERGED_IDS, ADDITIONAL_EMAILS})
_SYSTEM = frozenset({"hs_object_id", "createdate", "lastmodifieddate", *_CALCULATED})


def split_list(value: str | None) -> list[str]:
    """A ``;``-separated multi-value property as a list (empty parts dropped)."""
    return [part for part in (value or "").split(";") if part]


@dataclass(slots=True)
class Contact:
    """One contact record; every property value is a string, as HubSpot returns them."""

    id: str
    properties: dict[str, str]
    created_at: float
    updated_at: float
    archived: bool = False
    archived_at: float | None = None

    def to_api(self, names: list[str] | None = None) -> dict[str, Any]:
        """The ``SimplePublicObject`` shape, with all properties or only ``names``."""
        if names is None:
            props: dict[str, str | None] = dict(self.properties)
        else:
            wanted = dict.fromkeys([*names, "hs_object_id", "createdate", "lastmodifieddate"])
            props = {name: self.properties.get(name) for name in wanted}
        body: dict[str, Any] = {
            "id": self.id,
            "properties": props,
            "createdAt": iso_millis(self.created_at),
            "updatedAt": iso_millis(self.updated_at),
            "archived": self.archived,
        }
        if self.archived_at is not None:
            body["archivedAt"] = iso_millis(self.archived_at)
        return body


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A change a webhook subscription may report."""

    subscription_type: str
    object_id: int
    occurred_at_ms: int
    change_source: str
    property_name: str | None = None
    property_value: str | None = None


class ConflictError(Exception):
    """A unique property value already belongs to another contact."""

    def __init__(self, prop: str, value: str, existing_id: str) -> None:
        super().__init__(f"{prop}={value!r} already belongs to contact {existing_id}")
        self.prop = prop
        self.value = value
        self.existing_id = existing_id


@dataclass
class _Frame:
    undo: list[Callable[[], None]] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)


class ContactStore:
    """Contacts by record id, with an index per unique property over live contacts."""

    def __init__(
        self,
        *,
        unique_properties: tuple[str, ...],
        known_properties: frozenset[str],
        strict_properties: bool,
        watched_properties: tuple[str, ...],
        wall_clock: Callable[[], float],
        publish: Callable[[list[ChangeEvent]], None] | None = None,
        first_id: int = 1001,
    ) -> None:
        self.unique = ("email", *unique_properties)
        self._known = known_properties
        self._strict = strict_properties
        self._watched = set(watched_properties)
        self._wall = wall_clock
        self.publish = publish
        self._first_id = first_id
        # Whether an email key also finds a contact by an additional email (undocumented).
        self.find_by_additional_email = False
        self.clear()

    def clear(self) -> None:
        """Drop every contact and counter."""
        self.live: dict[str, Contact] = {}
        self.archived: dict[str, Contact] = {}
        self._index: dict[str, dict[str, str]] = {name: {} for name in self.unique}
        # Additional emails (normalized) -> the live contact holding them.
        self._additional: dict[str, str] = {}
        # Old ids of merged contacts -> the id of the record they were merged into.
        self.merged_into: dict[str, str] = {}
        self._next_id = self._first_id
        self._frames: list[_Frame] = []
        self.created_total = 0
        self.updated_total = 0
        self.merges_total = 0

    # -- keys and lookups ---------------------------------------------------------------

    @staticmethod
    def normalize(prop: str, value: str) -> str:
        """How HubSpot compares values: emails trimmed and lowercased, others as given."""
        return value.strip().lower() if prop == "email" else value

    def is_unique(self, prop: str) -> bool:
        """Whether ``prop`` may serve as ``idProperty``."""
        return prop in self.unique

    def find(self, prop: str, value: str) -> Contact | None:
        """The live contact whose unique ``prop`` equals ``value``."""
        if prop in ("hs_object_id", "id"):
            return self.live.get(value)
        contact_id = self._index[prop].get(self.normalize(prop, value))
        if contact_id is None and prop == "email" and self.find_by_additional_email:
            contact_id = self._additional.get(self.normalize(prop, value))
        return self.live.get(contact_id) if contact_id is not None else None

    def resolve(self, contact_id: str) -> Contact | None:
        """The live contact with this id, or the one a merge made of it (HubSpot: "both of
        the previous IDs will point to the resulting merged record")."""
        found = self.live.get(contact_id)
        if found is None and contact_id in self.merged_into:
            found = self.live.get(self.merged_into[contact_id])
        return found

    def get(self, contact_id: str, *, archived: bool = False) -> Contact | None:
        """A contact by record id, from the live or the archived set."""
        return (self.archived if archived else self.live).get(contact_id)

    # -- validation ----------------------------------------------------------------------

    def check(self, props: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """Coerce values to strings and list HubSpot's property errors, if any.

        ``""`` clears a property (HubSpot reads it as no value); ``null`` is left out of
        the values, so it changes nothing, as HubSpot answers it with success and keeps
        the old value (HubSpot/hubspot-api-nodejs#324: only the empty string clears).
        """
        values: dict[str, str] = {}
        problems: list[dict[str, Any]] = []
        for name, raw in props.items():
            value = _as_text(raw)
            if name in READ_ONLY_PROPERTIES or name in _CALCULATED:
                msg = f'"{name}" is a read only property; its value cannot be set.'
                problems.append(property_error(name, msg, "READ_ONLY_VALUE"))
            elif self._strict and name not in self._known:
                msg = f'Property "{name}" does not exist'
                problems.append(property_error(name, msg, "PROPERTY_DOESNT_EXIST"))
            elif raw is None:
                continue
            elif name == "email" and value and not _EMAIL.match(value.strip()):
                msg = f"Email address {value} is invalid"
                problems.append(property_error(name, msg, "INVALID_EMAIL"))
            elif name == "lifecyclestage" and value and value not in LIFECYCLE_STAGES:
                options = ", ".join(LIFECYCLE_STAGES)
                msg = f"{value} was not one of the allowed options: [{options}]"
                problems.append(property_error(name, msg, "INVALID_OPTION"))
            else:
                values[name] = self.normalize(name, value) if name == "email" else value
        return values, problems

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All writes inside happen, or (if the block raises) none do."""
        frame = _Frame()
        self._frames.append(frame)
        try:
            yield
        except BaseException:
            self._frames.pop()
            for undo in reversed(frame.undo):
                undo()
            raise
        self._frames.pop()
        if self._frames:
            parent = self._frames[-1]
            parent.undo.extend(frame.undo)
            parent.events.extend(frame.events)
        elif frame.events and self.publish is not None:
            self.publish(frame.events)

    def _frame(self) -> _Frame:
        if not self._frames:
            raise RuntimeError("store writes must happen inside atomic()")
        return self._frames[-1]

    def _event(self, kind: str, contact: Contact, source: str, **prop: str | None) -> None:
        self._frame().events.append(
            ChangeEvent(kind, int(contact.id), int(self._wall() * 1000), source, **prop)
        )

    # -- writes --------------------------------------------------------------------------

    def _conflicts(self, values: dict[str, str], own_id: str | None) -> None:
        for prop in self.unique:
            value = values.get(prop)
            if not value:
                continue
            holder = self._index[prop].get(self.normalize(prop, value))
            if holder is None and prop == "email":
                # A merged secondary's email stays taken (knowledge base "Merge contacts").
                holder = self._additional.get(self.normalize(prop, value))
            if holder is not None and holder != own_id:
                raise ConflictError(prop, value, holder)

    def _index_add(self, contact: Contact) -> None:
        for prop in self.unique:
            value = contact.properties.get(prop)
            if value:
                self._index[prop][self.normalize(prop, value)] = contact.id
        for email in split_list(contact.properties.get(ADDITIONAL_EMAILS)):
            self._additional[self.normalize("email", email)] = contact.id

    def _index_remove(self, contact: Contact) -> None:
        for prop in self.unique:
            value = contact.properties.get(prop)
            if value and self._index[prop].get(self.normalize(prop, value)) == contact.id:
                del self._index[prop][self.normalize(prop, value)]
        for email in split_list(contact.properties.get(ADDITIONAL_EMAILS)):
            if self._additional.get(self.normalize("email", email)) == contact.id:
                del self._additional[self.normalize("email", email)]

    def create(self, values: dict[str, str], source: str = "API") -> Contact:
        """Create a contact from checked ``values`` (raises :class:`ConflictError`)."""
        self._conflicts(values, None)
        now = self._wall()
        contact_id = str(self._next_id)
        self._next_id += 1
        stamp = iso_millis(now)
        props = {k: v for k, v in values.items() if v != ""}
        props.update(hs_object_id=contact_id, createdate=stamp, lastmodifieddate=stamp)
        contact = Contact(contact_id, props, now, now)
        self.live[contact_id] = contact
        self._index_add(contact)
        self.created_total += 1

        def undo() -> None:
            self._index_remove(contact)
            del self.live[contact_id]
            self.created_total -= 1

        self._frame().undo.append(undo)
        self._event("contact.creation", contact, source)
        for name in self._watched:
            if props.get(name):
                self._event("contact.propertyChange", contact, source,
                            property_name=name, property_value=props[name])  # fmt: skip
        return contact

    def update(self, contact: Contact, values: dict[str, str], source: str = "API") -> Contact:
        """Overwrite the given properties ("" clears one); raises :class:`ConflictError`."""
        self._conflicts(values, contact.id)
        before = dict(contact.properties)
        before_updated = contact.updated_at
        self._index_remove(contact)
        now = self._wall()
        for name, value in values.items():
            if value == "":
                contact.properties.pop(name, None)
            else:
                contact.properties[name] = value
        if values.get("email") and ADDITIONAL_EMAILS in contact.properties:
            # One of its additional emails made its email is additional no more (guessed).
            main = self.normalize("email", values["email"])
            rest = split_list(contact.properties[ADDITIONAL_EMAILS])
            kept = [e for e in rest if self.normalize("email", e) != main]
            if kept:
                contact.properties[ADDITIONAL_EMAILS] = ";".join(kept)
            else:
                del contact.properties[ADDITIONAL_EMAILS]
        contact.properties["lastmodifieddate"] = iso_millis(now)
        contact.updated_at = now
        self._index_add(contact)
        self.updated_total += 1

        def undo() -> None:
            self._index_remove(contact)
            contact.properties = before
            contact.updated_at = before_updated
            self._index_add(contact)
            self.updated_total -= 1

        self._frame().undo.append(undo)
        for name in self._watched:
            if name in values and before.get(name) != contact.properties.get(name):
                self._event("contact.propertyChange", contact, source,
                            property_name=name, property_value=values[name])  # fmt: skip
        return contact

    def archive(self, contact_id: str, source: str = "API") -> bool:
        """Move a live contact to the archive (HubSpot's recycle bin); False if not live."""
        contact = self.live.get(contact_id)
        if contact is None:
            return False
        self._index_remove(contact)
        del self.live[contact_id]
        contact.archived, contact.archived_at = True, self._wall()
        self.archived[contact_id] = contact

        def undo() -> None:
            del self.archived[contact_id]
            contact.archived, contact.archived_at = False, None
            self.live[contact_id] = contact
            self._index_add(contact)

        self._frame().undo.append(undo)
        self._event("contact.deletion", contact, source)
        return True

    def purge(self, contact: Contact, source: str = "API") -> None:
        """Delete a contact for good (GDPR), live or archived."""
        was_live = contact.id in self.live
        if was_live:
            self._index_remove(contact)
            del self.live[contact.id]
        else:
            del self.archived[contact.id]

        def undo() -> None:
            if was_live:
                self.live[contact.id] = contact
                self._index_add(contact)
            else:
                self.archived[contact.id] = contact

        self._frame().undo.append(undo)
        self._event("contact.privacyDeletion", contact, source)

    def merge(self, primary: Contact, secondary: Contact, *, new_record: bool = True) -> Contact:
        """Merge two live contacts (see the module docstring); the resulting record.

        ``new_record``: the result gets a new id, as HubSpot does now; False: the primary
        keeps its id, as it did before. No change event is published.
        """
        if primary.id == secondary.id:
            raise ValueError("a contact cannot be merged into itself")
        first, second = primary.properties, secondary.properties
        values: dict[str, str] = {}
        for name in [*first, *(n for n in second if n not in first)]:
            if name not in _SYSTEM and (value := first.get(name) or second.get(name)):
                values[name] = value
        emails = [
            *split_list(first.get(ADDITIONAL_EMAILS)),
            *([second["email"]] if second.get("email") else []),
            *split_list(second.get(ADDITIONAL_EMAILS)),
        ]
        main = self.normalize("email", values.get("email", ""))
        additional = list(dict.fromkeys(e for e in emails if self.normalize("email", e) != main))
        gone = [primary, secondary] if new_record else [secondary]
        merged_ids = [
            *split_list(first.get(MERGED_IDS)),
            *split_list(second.get(MERGED_IDS)),
            *(contact.id for contact in gone),
        ]
        now = self._wall()
        result_id = primary.id
        if new_record:
            result_id = str(self._next_id)
            self._next_id += 1
        props = {
            **values,
            "hs_object_id": result_id,
            "createdate": first.get("createdate") or iso_millis(primary.created_at),
            "lastmodifieddate": iso_millis(now),
            MERGED_IDS: ";".join(dict.fromkeys(merged_ids)),
        }
        if additional:
            props[ADDITIONAL_EMAILS] = ";".join(additional)
        before_primary = (dict(first), primary.updated_at)
        before_merged = dict(self.merged_into)
        self._index_remove(primary)
        self._index_remove(secondary)
        for contact in gone:
            del self.live[contact.id]
        if new_record:
            result = Contact(result_id, props, primary.created_at, now)
            self.live[result_id] = result
        else:
            result = primary
            result.properties, result.updated_at = props, now
        self._index_add(result)
        old_ids = {contact.id for contact in gone}
        for old, into in list(self.merged_into.items()):
            if into in old_ids:
                self.merged_into[old] = result_id
        for old in old_ids:
            self.merged_into[old] = result_id
        self.merges_total += 1

        def undo() -> None:
            self._index_remove(result)
            if new_record:
                del self.live[result_id]
            primary.properties, primary.updated_at = before_primary
            for contact in gone:
                self.live[contact.id] = contact
            self._index_add(primary)
            self._index_add(secondary)
            self.merged_into = before_merged
            self.merges_total -= 1

        self._frame().undo.append(undo)
        return result

    # -- inspection ----------------------------------------------------------------------

    def duplicates(self, keys: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
        """Values of ``keys`` held by more than one live contact (must stay empty)."""
        found: dict[str, dict[str, list[str]]] = {}
        for key in keys:
            holders: dict[str, list[str]] = {}
            for contact in self.live.values():
                value = contact.properties.get(key)
                if value:
                    holders.setdefault(self.normalize(key, value), []).append(contact.id)
            repeated = {value: ids for value, ids in holders.items() if len(ids) > 1}
            if repeated:
                found[key] = repeated
        return found


def _as_text(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)
