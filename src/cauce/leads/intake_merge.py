"""How an arrival folds into a lead it matched: the fields intake copies and merges, the
merge itself (`apply_merge`) and the history line it leaves (`history_changes`).

Intake (`IntakeWriter.merge` in `intake_writer`) folds each arrival into the stored lead it
matched by these rules, and review (`service_review`) merges a held lead into another by
them too; edits (`service_edit`) change the same fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cauce.core.config_lead_facts import LEAD_TEXT_FIELDS
from cauce.core.observability.trace_parent import current_traceparent
from cauce.leads.field_types import MAX_CUSTOM_FIELDS
from cauce.leads.matching import FieldChange, merge
from cauce.leads.matching.plan import OTHER_CONTACTS, merged_extension, other_contacts
from cauce.leads.models import Lead

if TYPE_CHECKING:
    from cauce.leads.service import LeadsRuntime

# The lead fields intake copies from a validated `LeadIn`.
SCALAR_FIELDS = LEAD_TEXT_FIELDS
# What a merge folds in. A consent too, kept whole, the later one winning (`merge`): an
# opt-out sent through a later form must reach the lead (each arrival's own stays in its
# `lead_sources` row). UTM fields stay the first touch's.
MERGEABLE = (*SCALAR_FIELDS, "custom_fields", "consent")
OTHER_COLUMNS = frozenset(column for _, column in OTHER_CONTACTS)


def history_changes(changes: list[FieldChange]) -> dict[str, Any]:
    # Names only: values may be personal data and history outlives erasure requests.
    out: dict[str, Any] = {
        "filled": [c.field for c in changes if c.action == "filled"],
        "overwritten": [c.field for c in changes if c.action == "overwritten"],
        "kept": [c.field for c in changes if c.action == "kept"],
    }
    if added := [c.field for c in changes if c.field in OTHER_COLUMNS]:
        out["added"] = added  # other contacts (`other_emails`, `other_phones`)
    return out


def apply_merge(
    lead: Lead, values: dict[str, Any], rt: LeadsRuntime, now: datetime
) -> tuple[list[FieldChange], list[FieldChange]]:
    """Fold an arrival into a lead: fill its gaps (never overwrite unless configured). A
    lead held for review stays held: an arrival is no person's decision."""
    existing = {name: getattr(lead, name) for name in MERGEABLE if name != "phone_extension"}
    incoming = {name: values[name] for name in existing}
    extension_before = lead.phone_extension
    dedupe = rt.settings.leads.dedupe
    merged, changes = merge(existing, incoming, dedupe)
    changes = _within_custom_limit(existing["custom_fields"] or {}, merged, changes)
    changed = [c for c in changes if c.action in ("filled", "overwritten")]
    for change in changed:
        top = change.field.split(".", 1)[0]
        setattr(lead, top, merged[top])
    extension = _merged_extension(
        lead, existing["phone"], values["phone"], values["phone_extension"], dedupe.overwrite_fields
    )
    if extension is not None:
        changes.append(extension)
        if extension.changed:
            changed.append(extension)
    # The arrival's email and phone, if the lead's own differ, join its other contacts
    # (match keys; reported in the history as `added`, not as merged fields).
    before = {
        **existing,
        "phone_extension": extension_before,
        "other_emails": lead.other_emails,
        "other_phones": lead.other_phones,
    }
    after = {**before, **merged, "phone_extension": lead.phone_extension}
    arrival = {**incoming, "phone_extension": values["phone_extension"]}
    for column, listed in other_contacts(before, after, arrival).items():
        changes.append(FieldChange(column, "appended", getattr(lead, column), listed))
        setattr(lead, column, listed)
    if lead.email is not None and lead.email == values["email"]:
        lead.email_key = lead.email
        lead.email_disposable = values["email_disposable"]
        lead.email_free = values["email_free"]
    lead.version += 1
    if lead.sync_status != "held":  # a lead held for review waits for a person's decision
        lead.sync_status = "pending"
    lead.trace_parent = current_traceparent()  # its next delivery links to this work
    lead.updated_at = now
    return changes, changed


def _merged_extension(
    lead: Lead,
    phone_before: str | None,
    phone: str | None,
    extension: str | None,
    overwrite: tuple[str, ...],
) -> FieldChange | None:
    """Fold an arrival's phone extension into `lead`, whose phone the merge has settled
    (`phone_before` it), by `plan.merged_extension`. What changed, if anything."""
    old = lead.phone_extension
    new, kept_out = merged_extension(phone_before, old, lead.phone, phone, extension, overwrite)
    if kept_out:
        return FieldChange("phone_extension", "kept", old, extension)
    if new == old:
        return None
    lead.phone_extension = new
    return FieldChange("phone_extension", "filled" if old is None else "overwritten", old, new)


def _within_custom_limit(
    had: dict[str, Any], merged: dict[str, Any], changes: list[FieldChange]
) -> list[FieldChange]:
    """Keep a merged lead within `MAX_CUSTOM_FIELDS` custom fields: new keys fill the room
    left in arrival order; the rest stay out, reported as `kept` (in the history, never
    stored), as every other incoming value that did not make it."""
    custom = merged.get("custom_fields")
    if not isinstance(custom, dict) or len(custom) <= MAX_CUSTOM_FIELDS:
        return changes
    room = MAX_CUSTOM_FIELDS - len(had)
    out: list[FieldChange] = []
    for change in changes:
        top, _, key = change.field.partition(".")
        if top == "custom_fields" and key and key not in had and change.action == "filled":
            if room > 0:
                room -= 1
            else:
                custom.pop(key, None)
                change = FieldChange(change.field, "kept", change.old, change.new)
        out.append(change)
    return out
