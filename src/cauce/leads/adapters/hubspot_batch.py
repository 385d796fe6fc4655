"""HubSpot batch bodies in and out: building upsert inputs, reading results and errors back.

Pure functions, kept apart from the HTTP calls so the mapping rules can be read (and
property-tested) in one place. The facts they rely on (HubSpot CRM v3, confirmed in
HubSpot's docs or in bodies recorded from live portals, see ``cauce.sandbox.bodies``):

* one ``idProperty`` per input; email is compared trimmed and lower-cased, other unique
  properties as given;
* results come back in no particular order, so they are matched to inputs by the
  idProperty's value in ``properties`` (an ``objectWriteTraceId`` echoed back is the
  fallback);
* a 207 answer lists failed inputs in ``errors``, each with a ``category`` and a
  ``context`` naming its ``objectWriteTraceId`` or its ``ids``;
* a whole batch refused with 400/409 says why in ``message``: a configuration problem
  (a non-unique idProperty, a property the portal lacks) or one bad record (an invalid
  email, a unique value owned by another contact, duplicate ids), which Cauce isolates;
* a property is cleared by the empty string: HubSpot reads ``""`` as no value ("Clear a
  property value" in HubSpot's CRM guide), while ``null`` is answered 200 and changes
  nothing (HubSpot/hubspot-api-nodejs#324). A clear at the port (a property given None)
  is therefore sent as ``""``;
* an upsert whose key finds no contact creates one, so a key that misses the lead's own
  contact (a new email) clashes with that contact's unique values (409 CONFLICT): which
  key each contact is sent by is :class:`UpsertKeys`'s choice;
* a merge (in HubSpot's UI or ``POST /crm/v3/objects/contacts/merge``) makes one record,
  now under a new id, which fetching by either old id answers; it keeps the primary's
  values and email (the secondary's email becomes an additional one, which no new contact
  may take) and lists the old ids in ``hs_merged_object_ids`` (HubSpot's changelog
  "Updated merge functionality for contacts and companies", knowledge base "Merge
  records"). So the secondary's lead finds no contact by its Cauce id and may not create
  one with its email: the contact with that email is the merged one, which another lead's
  Cauce id keeps, and is not adopted (:func:`merged_away`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import orjson

from cauce.leads.ports import CrmContact, CrmKey, UpsertOutcome

__all__ = [
    "HUBSPOT_API",
    "MAX_ERROR_TEXT",
    "MAX_INPUTS",
    "MERGED_IDS",
    "HubSpotError",
    "UpsertKeys",
    "attribute",
    "clashes_with_own_cauce_id",
    "describe",
    "email_taken",
    "existing_id",
    "group_by_property",
    "item_errors",
    "keyed_by_cauce_id",
    "map_upsert_results",
    "merged_away",
    "merged_ids",
    "normalise",
    "parse_error",
    "rejection_kind",
    "retryable_category",
    "upsert_inputs",
]

HUBSPOT_API: Final = "https://api.hubapi.com"
MAX_INPUTS: Final = 100
MAX_ERROR_TEXT: Final = 500
# Per-record categories a later attempt may get past; every other category is permanent.
_RETRYABLE_CATEGORIES: Final = frozenset(
    {"RATE_LIMIT", "RATE_LIMITS", "INTERNAL_ERROR", "TIMEOUT", "SERVICE_UNAVAILABLE", "LOCKED"}
)
# Property errors that name the portal's schema, not the record: a person must fix the
# field mapping or the portal, so the whole delivery stops instead of failing every lead.
_SCHEMA_ERRORS: Final = frozenset({"PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"})
_PROPERTY_PROBLEMS: Final = "Property values were not valid: "
_DUPLICATE_IDS = re.compile(r"Duplicate IDs found in batch input: \[(.*?)\]")
_TOKEN_SPLIT = re.compile(r"[\s\[\]{}\"'`,;:()]+")
# HubSpot's conflict on an email another contact has (recorded from live portals).
_EMAIL_CONFLICT = re.compile(r"Contact already exists\. Existing ID: \d+")
_EXISTING_ID = re.compile(r"Existing ID: (\d+)")
#: HubSpot's "Merged contact IDs": the ids merged into a record, ``;``-separated.
MERGED_IDS: Final = "hs_merged_object_ids"


def existing_id(error: HubSpotError) -> str | None:
    """The contact a conflict names ("... Existing ID: N"), if it names one."""
    found = _EXISTING_ID.search(error.message)
    return found.group(1) if found is not None else None


def merged_ids(value: object) -> list[str]:
    """The ids a ``hs_merged_object_ids`` value lists (``;``-separated; ``,`` accepted)."""
    if not isinstance(value, str):
        return []
    return [part.strip() for part in re.split(r"[;,]", value) if part.strip()]


def merged_away(crm_id: str, into: str) -> str:
    """The error of a lead whose contact was merged into one another lead's Cauce id keeps."""
    return (
        f"MERGED: its HubSpot contact {crm_id} was merged into contact {into}, which keeps "
        "another lead's Cauce id; merge the two leads in Cauce (not sent, to leave that "
        "lead's contact as it is)"
    )


def normalise(prop: str, value: str) -> str:
    """How HubSpot compares values of a unique property: emails trimmed and lower-cased."""
    return value.strip().lower() if prop == "email" else value


@dataclass(frozen=True, slots=True)
class HubSpotError:
    """The parts of a HubSpot error body Cauce acts on (all optional: bodies may be HTML)."""

    category: str = ""
    message: str = ""
    policy_name: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)


def parse_error(content: bytes) -> HubSpotError:
    """Read a HubSpot error body; anything unreadable (a gateway's HTML) gives empty fields."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return HubSpotError()
    if not isinstance(body, dict):
        return HubSpotError()
    context = body.get("context")
    return HubSpotError(
        category=str(body.get("category") or body.get("errorType") or ""),
        message=str(body.get("message") or ""),
        policy_name=str(body.get("policyName") or ""),
        context=context if isinstance(context, dict) else {},
    )


def describe(error: HubSpotError) -> str:
    """The text stored as a lead's last sync error (never logged: it may hold an email)."""
    text = f"{error.category}: {error.message}" if error.category else error.message
    return (text or "refused by HubSpot")[:MAX_ERROR_TEXT]


def retryable_category(category: str) -> bool:
    """Whether a per-record error of this category may succeed on a later attempt."""
    return category.upper() in _RETRYABLE_CATEGORIES


def rejection_kind(error: HubSpotError, status: int = 400) -> Literal["config", "records"]:
    """Why a whole batch was refused: the setup or our request (stop), or some record.

    Only refusals known to be about a record are isolated: a conflict on a unique value
    (409), property values a record got wrong, duplicate ids. Anything else (a non-unique
    idProperty, a property the portal lacks, a malformed request) would fail every lead
    the same way, so bisecting it would only spend the rate limit.
    """
    if status == 409 or error.category == "CONFLICT":
        return "records"
    message = error.message
    if _DUPLICATE_IDS.search(message):
        return "records"
    if not message.startswith(_PROPERTY_PROBLEMS):
        return "config"
    try:
        problems = orjson.loads(message.removeprefix(_PROPERTY_PROBLEMS))
    except orjson.JSONDecodeError:
        return "records"
    if isinstance(problems, list) and any(
        isinstance(p, dict) and p.get("error") in _SCHEMA_ERRORS for p in problems
    ):
        return "config"
    return "records"


def group_by_property(
    contacts: Sequence[CrmContact], sent: Sequence[CrmContact] | None = None
) -> tuple[dict[str, list[int]], list[int]]:
    """Positions of the contacts per key property, and positions repeating a key.

    HubSpot refuses a batch naming the same contact twice ("Duplicate IDs"), and two
    emails that differ only in case are the same contact to it: the second goes later.
    ``sent`` (default ``contacts``): the same contacts keyed as they will be sent, which
    the groups follow; repeats are found on ``contacts``' keys, so two leads with one
    email stay apart even when one of them is sent by its Cauce id.
    """
    groups: dict[str, list[int]] = {}
    seen: set[tuple[str, str]] = set()
    repeated: list[int] = []
    for position, contact in enumerate(contacts):
        prop = contact.key.property
        key = (prop, normalise(prop, contact.key.value))
        if key in seen:
            repeated.append(position)
            continue
        seen.add(key)
        groups.setdefault((sent or contacts)[position].key.property, []).append(position)
    return groups, repeated


def upsert_inputs(chunk: Sequence[CrmContact]) -> list[dict[str, Any]]:
    """The ``inputs`` of one batch upsert; the trace id is the input's position. A
    property to clear (None) is sent as ``""``, HubSpot's word for no value."""
    return [
        {
            "idProperty": contact.key.property,
            "id": contact.key.value,
            "objectWriteTraceId": str(position),
            "properties": {
                name: "" if value is None else value for name, value in contact.properties.items()
            },
        }
        for position, contact in enumerate(chunk)
    ]


def _position(value: object, size: int) -> int | None:
    if isinstance(value, str) and value.isdigit() and int(value) < size:
        return int(value)
    return None


def map_upsert_results(
    prop: str, chunk: Sequence[CrmContact], body: object
) -> list[UpsertOutcome | None]:
    """One outcome per input of ``chunk`` (None where HubSpot said nothing about it)."""
    outcomes: list[UpsertOutcome | None] = [None] * len(chunk)
    if not isinstance(body, dict):
        return outcomes
    positions = {normalise(prop, c.key.value): p for p, c in enumerate(chunk)}
    for result in body.get("results") or []:
        if not isinstance(result, dict) or result.get("id") is None:
            continue
        properties = result.get("properties")
        value = properties.get(prop) if isinstance(properties, dict) else None
        position = positions.get(normalise(prop, value)) if isinstance(value, str) else None
        if position is None:
            position = _position(result.get("objectWriteTraceId"), len(chunk))
        if position is not None:
            outcomes[position] = UpsertOutcome(chunk[position].lead_id, crm_id=str(result["id"]))
    for position, parsed in item_errors(prop, chunk, body).items():
        if outcomes[position] is None:
            outcomes[position] = UpsertOutcome(
                chunk[position].lead_id,
                error=describe(parsed),
                retryable=retryable_category(parsed.category),
            )
    return outcomes


def item_errors(prop: str, chunk: Sequence[CrmContact], body: object) -> dict[int, HubSpotError]:
    """The per-input errors of a 207 answer by input position (the first for each)."""
    found: dict[int, HubSpotError] = {}
    if not isinstance(body, dict):
        return found
    positions = {normalise(prop, c.key.value): p for p, c in enumerate(chunk)}
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        parsed = HubSpotError(
            category=str(error.get("category") or ""), message=str(error.get("message") or "")
        )
        context = error.get("context") if isinstance(error.get("context"), dict) else {}
        assert isinstance(context, dict)
        named = {
            p
            for trace in context.get("objectWriteTraceId") or []
            if (p := _position(trace, len(chunk))) is not None
        }
        named.update(
            positions[normalise(prop, i)]
            for i in context.get("ids") or []
            if isinstance(i, str) and normalise(prop, i) in positions
        )
        for position in named:
            found.setdefault(position, parsed)
    return found


def attribute(
    error: HubSpotError, prop: str, chunk: Sequence[CrmContact], cauce_id_property: str
) -> tuple[set[int], set[int]]:
    """Which inputs a whole-batch refusal names: (refused for good, to send again later).

    Duplicate ids name the repeats (the first stays in the batch). Otherwise an input
    is named when its key or its Cauce id appears as a whole word of the message (an
    invalid email, a clash on a unique value); nothing else is trusted, since messages
    also list valid values (allowed options).
    """
    duplicates = _DUPLICATE_IDS.search(error.message)
    if duplicates is not None:
        named = {normalise(prop, i.strip()) for i in duplicates.group(1).split(",")}
        seen: set[str] = set()
        later: set[int] = set()
        for position, contact in enumerate(chunk):
            key = normalise(prop, contact.key.value)
            if key in named:
                if key in seen:
                    later.add(position)
                seen.add(key)
        return set(), later
    tokens = {t for t in _TOKEN_SPLIT.split(error.message.lower()) if t}
    if not tokens:
        return set(), set()
    named_inputs: set[int] = set()
    for position, contact in enumerate(chunk):
        candidates = {normalise(prop, contact.key.value).lower()}
        cauce_id = contact.properties.get(cauce_id_property)
        if isinstance(cauce_id, str) and cauce_id:
            candidates.add(cauce_id.lower())
        if candidates & tokens:
            named_inputs.add(position)
    return named_inputs, set()


def clashes_with_own_cauce_id(
    error: HubSpotError, contact: CrmContact, cauce_id_property: str
) -> bool:
    """Whether an email-keyed contact was refused because its own Cauce id is taken.

    That contact is the lead's own, created when the lead had no email: HubSpot tried to
    create a second one for the email and found the Cauce id in use. (The wording of
    HubSpot's conflict on a custom unique property is not public; a message that does
    not quote the value leaves the lead failed, replayable.)
    """
    if contact.key.property != "email" or error.category != "CONFLICT":
        return False
    cauce_id = contact.properties.get(cauce_id_property)
    if not isinstance(cauce_id, str) or not cauce_id:
        return False
    tokens = {t for t in _TOKEN_SPLIT.split(error.message.lower()) if t}
    return cauce_id.lower() in tokens and contact.key.value.strip().lower() not in tokens


def keyed_by_cauce_id(contact: CrmContact, cauce_id_property: str) -> CrmContact | None:
    """The contact keyed by its Cauce id (None without one). An email key sets HubSpot's
    ``email`` by itself, so the email is kept as that property: the contact found by the
    Cauce id gets it (a first email, a changed one)."""
    uid = contact.properties.get(cauce_id_property)
    if uid is None or uid == "":
        return None
    properties = dict(contact.properties)
    if contact.key.property == "email" and not properties.get("email"):
        properties["email"] = contact.key.value
    return replace(contact, key=CrmKey(cauce_id_property, str(uid)), properties=properties)


def email_taken(error: HubSpotError, contact: CrmContact, cauce_id_property: str) -> bool:
    """Whether a contact sent by its Cauce id was refused because another contact has its
    email: no contact had the Cauce id (the lead's own was deleted or merged in HubSpot,
    or predates the property), so HubSpot tried to create one and found the email taken
    ("Contact already exists. Existing ID: N")."""
    if contact.key.property != cauce_id_property or error.category != "CONFLICT":
        return False
    email = contact.properties.get("email")
    if not isinstance(email, str) or not email.strip():
        return False
    tokens = {t for t in _TOKEN_SPLIT.split(error.message.lower()) if t}
    return _EMAIL_CONFLICT.search(error.message) is not None or normalise("email", email) in tokens


@dataclass(slots=True)
class UpsertKeys:
    """The key each contact of one upsert call is sent by.

    A lead synced before (``crm_id``) has a contact holding its Cauce id, so it is sent
    by that id, its email as a property: its own contact is updated, a new or changed
    email included. Keyed by the email, it would miss that contact (no contact has the
    new email), and HubSpot would refuse the whole batch for the Cauce id taken (409). A
    lead never synced keeps the port's key: an email adopts the contact a salesperson
    made with it.

    A refusal may say the other key finds the contact (:meth:`switch`): the email key's
    own Cauce id taken (synced, but Cauce never heard back), or the Cauce id key's email
    on another contact (the lead's own gone from HubSpot: that one is adopted). Each
    contact switches at most once per call, so none goes back and forth.
    """

    given: Sequence[CrmContact]
    cauce_id_property: str
    sent: list[CrmContact] = field(default_factory=list)
    switched: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.sent = [
            (keyed_by_cauce_id(c, self.cauce_id_property) or c)
            if c.crm_id is not None and c.key.property == "email"
            else c
            for c in self.given
        ]

    def groups(self) -> tuple[list[list[int]], list[int]]:
        """Positions per key property as sent, the Cauce id's first, and repeats (later).

        Updates by Cauce id go first: one that moves an email off its contact is done
        before an email key could find that contact and take it for another lead.
        """
        groups, repeated = group_by_property(self.given, self.sent)
        order = sorted(groups, key=lambda prop: prop != self.cauce_id_property)
        return [groups[prop] for prop in order], repeated

    def switch(self, position: int, error: HubSpotError) -> bool:
        """Send the contact at ``position`` by its other key from now on, if ``error``
        says that key finds its contact and it has not switched in this call."""
        if position in self.switched:
            return False
        sent = self.sent[position]
        other: CrmContact | None = None
        if clashes_with_own_cauce_id(error, sent, self.cauce_id_property):
            other = keyed_by_cauce_id(sent, self.cauce_id_property)
        elif self.adopts(position, error):
            other = self.given[position]
        if other is None:
            return False
        self.sent[position] = other
        self.switched.add(position)
        return True

    def adopts(self, position: int, error: HubSpotError) -> bool:
        """Whether :meth:`switch` would send the contact at ``position`` by its email, to
        adopt the contact that has the address (its Cauce id found none)."""
        sent = self.sent[position]
        return (
            position not in self.switched
            and sent.key != self.given[position].key
            and email_taken(error, sent, self.cauce_id_property)
        )
