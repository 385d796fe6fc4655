"""How an arrival folds into a lead it matched: the fields intake copies and merges, the
merge itself (`apply_merge`) and the history line it leaves (`history_changes`).

Intake (`IntakeWriter.merge` in `intake_writer`) folds each arrival into the stored lead it
matched by these rules, and review (`service_review`) merges a held lead into another by
them too; edits (`service_edit`) change the same fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from cauce.core.config_lead_facts import LEAD_TEXT_FIELDS
from cauce.core.observability.trace_parent import current_traceparent
from cauce.leads.field_types import MAX_CUSTOM_FIELDS
from cauce.leads.matching import FieldChange, email_key, merge
from cauce.leads.matching.merge import consent_stands_after
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


# How far a lead's sales status has come: an arrival's status is taken when it has come
# further than the stored one's (a CRM export's `won` for a lead still `new` here), never
# when it goes back or sideways (`won` against `lost` stays as stored, listed as `kept`).
# `new` is also what a lead sent without a status says: nothing.
STATUS_RANK = {"new": 0, "working": 1, "qualified": 2, "won": 3, "lost": 3, "junk": 3}
# Fields whose values a history line may give (sales data, not the person's): as a
# PATCH's line gives them (`service_edit.TRACKED_VALUES`).
VALUED = ("status", "owner")


def history_changes(changes: list[FieldChange]) -> dict[str, Any]:
    # Names only: values may be personal data and history outlives erasure requests.
    out: dict[str, Any] = {
        "filled": [c.field for c in changes if c.action == "filled"],
        "overwritten": [c.field for c in changes if c.action == "overwritten"],
        "kept": [c.field for c in changes if c.action == "kept"],
    }
    if added := [c.field for c in changes if c.field in OTHER_COLUMNS]:
        out["added"] = added  # other contacts (`other_emails`, `other_phones`)
    if moved := {
        c.field: {"from": c.old, "to": c.new} for c in changes if c.field in VALUED and c.changed
    }:
        out["values"] = moved
    return out


def merge_sales_state(
    lead: Lead, status: str | None, owner: str | None, *, owner_coming: bool = False
) -> list[FieldChange]:
    """Fold an arrival's (or a merged lead's) status and owner into `lead`.

    The status is taken when it has come further (`STATUS_RANK`); the owner with it (who
    took the lead further owns it), or when the lead has none and none is coming
    (`owner_coming`: a lead of this same batch its team's rotation gives one when the
    batch is written, as it had one already when the items go one by one). A status or
    an owner that differs and is not taken is `kept` (named in the history line, as a
    field a merge did not overwrite). Team and score follow elsewhere: the team stays,
    the lead is scored again after every merge."""
    changes: list[FieldChange] = []
    advanced = False
    if status is not None and status != lead.status:
        if STATUS_RANK.get(status, 0) > STATUS_RANK.get(lead.status, 0):
            changes.append(FieldChange("status", "overwritten", lead.status, status))
            lead.status = status
            advanced = True
        elif status != "new":  # `new` says nothing; anything else differs, and stays out
            changes.append(FieldChange("status", "kept", lead.status, status))
    if owner and owner != lead.owner:
        if advanced or not (lead.owner or owner_coming):
            if lead.owner:
                changes.append(FieldChange("owner", "overwritten", lead.owner, owner))
            else:
                changes.append(FieldChange("owner", "filled", lead.owner, owner))
            lead.owner = owner
        else:
            changes.append(FieldChange("owner", "kept", lead.owner, owner))
    return changes


def apply_merge(
    lead: Lead,
    values: dict[str, Any],
    rt: LeadsRuntime,
    now: datetime,
    *,
    owner_coming: bool = False,
    email_taken: bool = False,
) -> tuple[list[FieldChange], list[FieldChange]]:
    """Fold an arrival into a lead: fill its gaps (never overwrite unless configured). A
    lead held for review stays held: an arrival is no person's decision.

    `email_taken`: the arrival's email is another live lead's own (the arrival matched
    this lead by its phone or name, that one by the address). It joins this lead's other
    emails instead of becoming its own: two leads with one email are one contact to a
    CRM, which refused the second (HubSpot's CONFLICT), for good."""
    existing = {name: getattr(lead, name) for name in MERGEABLE if name != "phone_extension"}
    incoming = {name: values[name] for name in existing}
    if email_taken:
        incoming["email"] = None
    extension_before = lead.phone_extension
    dedupe = rt.settings.leads.dedupe
    merged, changes = merge(existing, incoming, dedupe)
    if email_taken:
        incoming["email"] = values["email"]  # listed among the other emails, below
    changes = _consent_for_this_mailbox(existing, merged, changes, values.get("email"))
    changes = _consent_left_with_its_mailbox(existing, merged, changes, values)
    changes = _within_custom_limit(existing["custom_fields"] or {}, merged, changes)
    changed = [c for c in changes if c.action in ("filled", "overwritten")]
    for change in changed:
        top = change.field.split(".", 1)[0]
        setattr(lead, top, merged[top])
    sales = merge_sales_state(
        lead, values.get("status"), values.get("owner"), owner_coming=owner_coming
    )
    changes.extend(sales)
    changed.extend(c for c in sales if c.changed)
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


def _consent_for_this_mailbox(
    had: dict[str, Any], merged: dict[str, Any], changes: list[FieldChange], email: str | None
) -> list[FieldChange]:
    """A marketing "yes" sent with another email than the lead's, or with none, is not the
    lead's: it stays that arrival's (in its `lead_sources` row), `kept` in the history,
    and the lead keeps its consent. Matched by phone or by name, another person may have
    sent it (a colleague on the switchboard, a relative), and even the same person agreed
    to be written at that address, which the lead lists among its other emails. A lead
    without an email takes one sent without one. A "no" reaches the lead whatever
    address it came with: a withdrawal is honoured wherever it comes."""
    out: list[FieldChange] = []
    for change in changes:
        if (
            change.field == "consent"
            and change.changed
            and isinstance(change.new, dict)
            and change.new.get("marketing") is True
            and email_key(email) != email_key(merged.get("email"))
        ):
            merged["consent"] = had["consent"]
            change = FieldChange(change.field, "kept", change.old, change.new)
        out.append(change)
    return out


def consent_left_behind(consent: object, old_email: str | None, new_email: str | None) -> bool:
    """Whether a lead's stored `consent` stays behind when its email goes from
    `old_email` to `new_email`: a marketing "yes" is the agreement of the mailbox it was
    given with (HubSpot keeps subscriptions by address too), so a lead whose email is
    replaced or cleared (a `PATCH`, a merge with `overwrite_fields` naming `email`) does
    not carry it to the new address: before, the new address was synced and subscribed as
    consenting. The proof stays in the history and the arrivals' own consents. A "no"
    stays: a withdrawal is honoured wherever it came from. A lead gaining its first email
    keeps its consent (given without an address: `_consent_for_this_mailbox`)."""
    old_key = email_key(old_email)
    return (
        isinstance(consent, dict)
        and consent.get("marketing") is True
        and old_key is not None
        and old_key != email_key(new_email)
    )


def _consent_left_with_its_mailbox(
    had: dict[str, Any], merged: dict[str, Any], changes: list[FieldChange], values: dict[str, Any]
) -> list[FieldChange]:
    """A merge that replaces the lead's email (`overwrite_fields`) leaves a "yes" of the old
    address behind (`consent_left_behind`): the lead takes the arrival's consent when it
    came from the new address (whatever its date: the old one's no longer counts), else
    it has none."""
    if merged.get("consent") is not had.get("consent") or not consent_left_behind(
        had.get("consent"), had.get("email"), merged.get("email")
    ):
        return changes
    sent = values.get("consent")
    same = email_key(values.get("email")) == email_key(merged.get("email"))
    merged["consent"] = sent if same and sent is not None else None
    out = [c for c in changes if c.field != "consent"]
    out.append(FieldChange("consent", "overwritten", had["consent"], merged["consent"]))
    return out


def overwrites_email(overwrite_fields: Sequence[str]) -> bool:
    """Whether a merge replaces a lead's email with an arrival's (`overwrite_fields`)."""
    return any(fnmatchcase("email", pattern) for pattern in overwrite_fields)


def is_withdrawal(values: dict[str, Any]) -> bool:
    """Whether an arrival's consent is a marketing "no"."""
    consent = values.get("consent")
    return isinstance(consent, dict) and consent.get("marketing") is False


def withdrawal_for(lead: Lead, values: dict[str, Any]) -> dict[str, Any] | None:
    """The marketing "no" that an arrival held for review against `lead` carries to it at
    once, or None.

    A possible duplicate waits for a person before its data joins the lead; a withdrawal
    sent from one of the lead's own mailboxes cannot wait (GDPR art. 7(3): the mailbox's
    owner said no, whoever the review finds the rest of the arrival to be). It reaches the
    lead as a merge would take it: when the lead's consent is not a "no" already nor a
    "yes" given after it. From another mailbox, or with none (a shared phone, a namesake),
    it stays the held lead's until the review."""
    if not is_withdrawal(values):
        return None
    consent: dict[str, Any] = values["consent"]
    key = email_key(values.get("email"))
    mailboxes = (lead.email, *(lead.other_emails or "").split())
    if key is None or key not in {email_key(mailbox) for mailbox in mailboxes}:
        return None
    had = lead.consent
    if isinstance(had, dict) and (
        had.get("marketing") is False or not consent_stands_after(had, consent)
    ):
        return None
    return consent


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
