"""The in-memory contact store: unique indexes, property checks and all-or-nothing batches.

HubSpot keeps ``email`` unique among contacts (case-insensitively: it lowercases emails) and
any custom property created with unique values. The store enforces the same, so a client
that upserts on a stable key can never create a second contact for it, and a client that
does something else (a plain create, or a key that changes) gets HubSpot's 409.

Writes happen inside :meth:`ContactStore.atomic` blocks that nest like savepoints: a batch
rejected as a whole leaves no trace, and change events (for webhooks) are published only
when the outermost block commits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cauce.sandbox.bodies import iso_millis, property_error
from cauce.sandbox.config import LIFECYCLE_STAGES, READ_ONLY_PROPERTIES

__all__ = ["ChangeEvent", "ConflictError", "Contact", "ContactStore"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


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
        self.clear()

    def clear(self) -> None:
        """Drop every contact and counter."""
        self.live: dict[str, Contact] = {}
        self.archived: dict[str, Contact] = {}
        self._index: dict[str, dict[str, str]] = {name: {} for name in self.unique}
        self._next_id = self._first_id
        self._frames: list[_Frame] = []
        self.created_total = 0
        self.updated_total = 0

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
        return self.live.get(contact_id) if contact_id is not None else None

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
            if name in READ_ONLY_PROPERTIES:
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
            if holder is not None and holder != own_id:
                raise ConflictError(prop, value, holder)

    def _index_add(self, contact: Contact) -> None:
        for prop in self.unique:
            value = contact.properties.get(prop)
            if value:
                self._index[prop][self.normalize(prop, value)] = contact.id

    def _index_remove(self, contact: Contact) -> None:
        for prop in self.unique:
            value = contact.properties.get(prop)
            if value and self._index[prop].get(self.normalize(prop, value)) == contact.id:
                del self._index[prop][self.normalize(prop, value)]

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
