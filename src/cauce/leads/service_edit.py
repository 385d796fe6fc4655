"""Lead edits, GDPR erasure and the read side (detail, search)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db.base import utcnow
from cauce.core.jobs.db_analyze import request_analyze
from cauce.core.observability.trace_parent import current_traceparent
from cauce.core.web.idempotency import forget_subject
from cauce.leads import erased_contacts, service_contacts
from cauce.leads import repository as repo
from cauce.leads import repository_lead as repo_lead
from cauce.leads.delivery import EmailHold, hand_over_email
from cauce.leads.errors import (
    FieldError,
    LeadChanged,
    LeadDuplicate,
    LeadErased,
    LeadInvalid,
    LeadMerged,
    LeadNotFound,
)
from cauce.leads.intake_merge import OTHER_COLUMNS, SCALAR_FIELDS, consent_left_behind
from cauce.leads.intake_writer import apply_score, lead_facts
from cauce.leads.matching import blocking_keys
from cauce.leads.matching.blocking import EXACT_PREFIXES
from cauce.leads.matching.merge import consent_time
from cauce.leads.matching.plan import patched_contacts, record_of
from cauce.leads.models import Lead, LeadEvent, LeadSource
from cauce.leads.normalise import is_disposable_domain, is_free_mail_domain
from cauce.leads.places import country_of_region
from cauce.leads.routing import choose_team, owner_at
from cauce.leads.schemas import MAX_CUSTOM_FIELDS, LeadPatch
from cauce.leads.service import LeadsRuntime, consent_record
from cauce.leads.sync_backlog import ERASED, ERASING
from cauce.leads.tasks import ERASED_TABLES, request_delivery, request_erasure

# What a PATCH may change of the exact keys' fields (an extension is part of its phone's).
_CONTACT_FIELDS = ("email", "phone", "phone_extension")
# Fields a PATCH may change directly (full_name is derived; status handled alongside).
PATCHABLE = {*SCALAR_FIELDS, "owner", "status", "source"}
PERSONAL_FIELDS = (
    "email",
    "email_key",
    "phone",
    "phone_extension",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "region",
    "city",
    "external_id",
    "other_emails",
    "other_phones",
)


# `sync_status` of a lead a person merged into another (`service_review`): a tombstone
# (`erased_at` set) whose `possible_duplicate_of` is the lead it was merged into.
MERGED = "merged"


async def live_lead(session: AsyncSession, uid: str, *, for_update: bool = False) -> Lead:
    """The lead with this public id; 404 if unknown, 410 if erased or merged away."""
    lead = await repo_lead.by_uid(session, uid, for_update=for_update)
    if lead is None:
        raise LeadNotFound(f"no lead with id {uid}")
    if lead.erased_at is not None:
        raise await tombstone_error(session, lead)
    return lead


async def tombstone_error(session: AsyncSession, lead: Lead) -> LeadErased:
    """The 410 of an erased lead: `LeadMerged`, naming the lead it went into, for one a
    review merged away."""
    if lead.sync_status == MERGED and lead.possible_duplicate_of is not None:
        into = await repo_lead.uid_of(session, lead.possible_duplicate_of)
        return LeadMerged(f"lead {lead.uid} was merged into lead {into}", merged_into=into)
    return LeadErased(f"lead {lead.uid} was erased")


_EXACT_FIELDS = {"e:": "email", "p:": "phone", "t:": "tax id"}


async def _refuse_duplicates(session: AsyncSession, lead: Lead, added: frozenset[str]) -> None:
    """409 when a key the patch gives `lead` (an email, a phone, a tax id) is another
    live lead's: intake would have merged the two (or, for one mailbox under two people's
    names, held them for a person to decide), and the CRM would get one contact for two
    leads (erasing one would delete the other's). `patch` holds the keys' intake
    locks already, so an intake running now cannot slip in between."""
    exact = sorted(key for key in added if key.startswith(EXACT_PREFIXES))
    if not exact:
        return
    found = await repo.key_members(session, exact, cap=2)
    for key in exact:
        other = next((i for i in found.members.get(key, ()) if i != lead.id), None)
        if other is None:
            continue
        holder = await session.get(Lead, other)
        uid = holder.uid if holder is not None else str(other)
        field = _EXACT_FIELDS[key[:2]]
        raise LeadDuplicate(
            f"lead {uid} has this {field} already: change or erase one of the two",
            duplicate_of=uid,
        )


def _json_value(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    return str(value) if hasattr(value, "value") else value


# Fields whose values an `updated` history line gives, before and after: the lead's
# state in the sales process, none of them the person's data (history outlives erasure).
TRACKED_VALUES = ("status", "source", "owner", "team", "score", "consent")

# A consent is the proof a person agreed (GDPR art. 7): a PATCH records a new one, a
# withdrawal included, and the line of it gives both (`TRACKED_VALUES`), but never erases
# the proof.
_CONSENT_NOT_CLEARABLE: FieldError = {
    "pointer": "/consent",
    "detail": 'is the proof of a consent and cannot be cleared: send {"marketing": false} to '
    "record a withdrawal",
    "type": "consent_not_clearable",
}


def _refuse_older_consent(stored: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    """A "yes" older than the stored consent (by `given_at`) is refused, as a merge keeps
    the later (`matching.merge`): dated before the person's "no", it would undo it. A "no"
    is never refused: a withdrawal is recorded whatever its date."""
    if stored is None or new is None or new.get("marketing") is False:
        return
    stored_at, new_at = consent_time(stored), consent_time(new)
    if stored_at is None or new_at is None or new_at >= stored_at:
        return
    raise LeadInvalid(
        [
            {
                "pointer": "/consent/given_at",
                "detail": f"is before the consent the lead holds (given at "
                f"{stored_at.isoformat()}): an older consent cannot replace a newer one; "
                "send when this one was given, if later, or no time (now)",
                "type": "consent_outdated",
            }
        ]
    )


def etag(lead: Lead) -> str:
    """The lead's entity tag (`ETag`, RFC 9110): its version, which every change grows."""
    return etag_of(lead.version)


def etag_of(version: int) -> str:
    """The entity tag of a lead's `version` (`"3"`)."""
    return f'"{version}"'


def check_version(lead: Lead, if_match: str | None) -> None:
    """Refuse a change whose `If-Match` names no tag of the lead as stored now (`*`: any
    version); no header, no check. The caller holds the lead's row lock."""
    if if_match is None:
        return
    # Strong comparison (RFC 9110 §13.1.1): a weak tag (`W/"3"`) matches no version.
    sent = {tag.strip() for tag in if_match.split(",")}
    if "*" in sent or etag(lead) in sent:
        return
    raise LeadChanged(
        f"lead {lead.uid} changed since it was read: it is at {etag(lead)}, not at the "
        "If-Match sent; read it again and send the change again"
    )


async def patch(
    session: AsyncSession,
    rt: LeadsRuntime,
    uid: str,
    changes: LeadPatch,
    actor: str | None,
    *,
    if_match: str | None = None,
) -> Lead:
    """Apply a JSON merge patch; the lead is re-scored, re-keyed and synced again. With
    `if_match` (the request's `If-Match`), only to the version it names."""
    values = changes.changes()
    others = {name: values.pop(name) for name in service_contacts.FIELDS if name in values}
    # The intake locks of a new email or phone (with its extension: one key) first, then
    # the row: intake takes them in that order too (`repository.lock_exact_keys`), else
    # the two could wait on each other.
    contact = {name: values[name] for name in _CONTACT_FIELDS if values.get(name)}
    if contact:
        await repo.lock_exact_keys(session, blocking_keys(record_of(contact)))
    lead = await live_lead(session, uid, for_update=True)
    check_version(lead, if_match)
    hold_before = EmailHold.of(lead)
    tracked_before = {name: getattr(lead, name) for name in TRACKED_VALUES}
    keys_before = blocking_keys(repo.match_record(lead))
    contacts_before = {name: getattr(lead, name) for name in ("email", "phone", "phone_extension")}
    changed: list[str] = []
    for name, value in values.items():
        if name == "custom_fields":
            # RFC 7396: null removes the member (every custom field); a key set to null
            # removes that key.
            merged = dict(lead.custom_fields or {}) if value is not None else {}
            for key, item in (value or {}).items():
                if item is None:
                    merged.pop(key, None)
                else:
                    merged[key] = item
            if len(merged) > MAX_CUSTOM_FIELDS:  # each patch within the limit, not the sum
                raise LeadInvalid(
                    [
                        {
                            "pointer": "/custom_fields",
                            "detail": f"a lead has at most {MAX_CUSTOM_FIELDS} custom fields: "
                            f"this change would leave {len(merged)}",
                            "type": "too_long",
                        }
                    ]
                )
            if merged != lead.custom_fields:
                lead.custom_fields = merged
                changed.append(name)
        elif name == "consent":
            # Proof as at intake: a missing time is now, a missing place the API's; the
            # same consent sent again (all it says already stored) changes nothing.
            if value is None:
                raise LeadInvalid([_CONSENT_NOT_CLEARABLE])
            sent = _json_value(value)
            stored = lead.consent
            if stored is None or any(stored.get(k) != v for k, v in sent.items()):
                new = consent_record(value, "api")
                _refuse_older_consent(stored, new)
                lead.consent = new
                changed.append(name)
        elif name == "utm":
            # RFC 7396, as custom_fields: the members sent change, a member sent null is
            # removed, the others stay (`{"campaign": "x"}` kept source and medium away).
            new = dict(lead.utm or {}) if value is not None else {}
            for key in value.model_fields_set if value is not None else ():
                if (item := getattr(value, key)) is None:
                    new.pop(key, None)
                else:
                    new[key] = item
            if new != (getattr(lead, name) or {}):
                setattr(lead, name, new)
                changed.append(name)
        elif name in PATCHABLE:
            new = _json_value(value)
            if new != getattr(lead, name):
                setattr(lead, name, new)
                changed.append(name)
    if "phone" in changed and "phone_extension" not in values and lead.phone_extension:
        # A new number without an extension: the old one's extension is not its own.
        lead.phone_extension = None
        changed.append("phone_extension")
    _settle_places(lead, changes, values, changed)
    if lead.phone_extension is not None and lead.phone is None:
        raise LeadInvalid(
            [
                {
                    "pointer": "/phone_extension",
                    "detail": "needs a phone number",
                    "type": "phone_required",
                }
            ]
        )
    if lead.email is None and lead.phone is None:
        raise LeadInvalid(
            [
                {
                    "pointer": pointer,
                    "detail": "at least one of email or phone is required",
                    "type": "contact_required",
                }
                for pointer in ("/email", "/phone")
            ]
        )
    if (
        "email" in changed
        and "consent" not in values  # a consent sent with the new email is its own
        and consent_left_behind(lead.consent, contacts_before["email"], lead.email)
    ):
        lead.consent = None  # a "yes" stays with the address it was given with
        changed.append("consent")
    if "email" in changed:
        lead.email_key = lead.email
        domain = lead.email.rsplit("@", 1)[-1] if lead.email else ""
        lead.email_disposable = bool(domain) and is_disposable_domain(domain)
        lead.email_free = bool(domain) and is_free_mail_domain(domain)
    # An email (phone) changed: the old one joins the other contacts, the new one leaves.
    after = {
        name: getattr(lead, name) for name in ("email", "phone", "phone_extension", *OTHER_COLUMNS)
    }
    for column, listed in patched_contacts(contacts_before, after).items():
        setattr(lead, column, listed)
    # Then the other contacts the patch takes away (the old email just replaced among
    # them: `{"email": new, "other_emails": []}` forgets it).
    if others and (taken := await service_contacts.keep_only(session, lead, others)):
        changed.extend(taken)
        # Stored answers that show the lead (a review's) show what was just forgotten.
        await forget_subject(session, lead.uid)
    # `"owner": null` asks routing for an owner again, by the lead as this PATCH leaves it
    # (routing runs once, at creation; a lead keeps its owner through later changes).
    # A held lead waits for its review to be routed (`release_hold`): it takes no turn.
    reroute = "owner" in values and values["owner"] is None and lead.sync_status != "held"
    if not changed and not (reroute and lead.owner is None):
        return lead
    keys = blocking_keys(repo.match_record(lead))
    await _refuse_duplicates(session, lead, keys - keys_before)
    # Off the address its contact held for the leads sharing it: one of them takes it.
    handed_over = await hand_over_email(session, rt.settings.crm, hold_before, lead.email_key)
    lead.version += 1
    lead.updated_at = utcnow()
    lead.trace_parent = current_traceparent()  # its next delivery links to this request
    if lead.sync_status != "held":
        lead.sync_status = "pending"
    with session.no_autoflush:  # the row is written once, with its score
        arrivals = await repo_lead.arrivals(session, lead.id)
    apply_score(lead, rt.scorer.score(lead_facts(lead, arrivals)))
    if reroute:
        changed.extend(n for n in await route_again(session, rt, lead) if n not in changed)
    await repo.replace_match_keys(session, lead.id, keys)
    line: dict[str, Any] = {"fields": changed}
    if moved := {
        name: {"from": was, "to": getattr(lead, name)}
        for name, was in tracked_before.items()
        if getattr(lead, name) != was
    }:
        line["values"] = moved
    session.add(LeadEvent(lead_id=lead.id, action="updated", changes=line, actor=actor))
    if lead.sync_status == "pending" or handed_over:
        await request_delivery(session, rt.queue, rt.settings)
    return lead


def _settle_places(
    lead: Lead, changes: LeadPatch, values: dict[str, Any], changed: list[str]
) -> None:
    """As at intake (`LeadIn._settle_places`), for what the patch sent: a region name sent
    as the country (`Andalucía`) is the region of a lead that has none, unless the patch
    sends a region (`null` too); a lead left without a country, the patch sending none,
    takes the one its region names when the patch sends a region or a phone, else the
    one the phone sent names by its international prefix (`+34 612...`: ES; a national
    number says nothing), so scoring's market rule and routing see it. A country stored
    or sent is never changed, nor a region stored."""
    typed = changes.region_in_country
    if typed is not None and "region" not in values and lead.region is None:
        lead.region = typed
        changed.append("region")
    if lead.country is not None or "country" in values:
        return
    if not ({"region", "phone"} & values.keys()):
        return
    from_region = country_of_region(lead.region) if lead.region else None
    found = from_region or (changes.phone_country if lead.phone else None)
    if found is not None:
        lead.country = found
        changed.append("country")


async def route_again(session: AsyncSession, rt: LeadsRuntime, lead: Lead) -> list[str]:
    """Give `lead` the team and owner routing gives it now, as at intake (the team's
    rotation moves on one); the names of the fields that changed."""
    leads = rt.settings.leads
    facts = {name: getattr(lead, name) for name in ("country", "region", "source")}
    decision = choose_team(
        leads.routing_rules,
        {**facts, "custom_fields": lead.custom_fields},
        lead.score,
        leads.default_team,
    )
    team = decision.team if decision is not None else None
    owner = None
    if team is not None:
        position = await repo.advance_route(session, team, 1)
        owner = owner_at(tuple(leads.teams.get(team, ())), position)
    changed = [
        name for name, new in (("team", team), ("owner", owner)) if getattr(lead, name) != new
    ]
    lead.team, lead.owner = team, owner
    return changed


def make_tombstone(lead: Lead, sync_status: str, now: datetime) -> None:
    """Clear the lead's personal fields and mark it gone (`erased_at`): only its id,
    dates, status and the like stay. Its match keys and sources are the caller's."""
    for name in PERSONAL_FIELDS:
        setattr(lead, name, None)
    lead.utm = {}
    lead.consent = None
    lead.custom_fields = {}
    lead.match_keys = []
    lead.score_reasons = []
    # A CRM's error text may quote the contact (HubSpot's CONFLICT names the email or
    # phone it clashed with).
    lead.last_sync_error = None
    lead.erased_at = now
    lead.updated_at = now
    lead.version += 1
    lead.sync_status = sync_status


async def erase(
    session: AsyncSession,
    rt: LeadsRuntime,
    uid: str,
    actor: str | None,
    *,
    if_match: str | None = None,
    crm_gone: bool = False,
    analyze: bool = True,
) -> Lead:
    """GDPR erasure: personal data removed, a tombstone kept, the CRM told. With
    `if_match`, only of the version it names. Another lead on its email (a shared
    mailbox) takes the address at the CRM if this one's contact held it
    (`hand_over_email`), sent after the erasure's job is queued.

    With a CRM configured the tombstone says the erasure is owed to it (`erasing`) until
    its job is done (`sync_backlog.ERASING`); `crm_gone`: the CRM deleted the contact
    itself (a GDPR deletion there), so nothing is owed (`erased`). `analyze`: ask for the
    erased tables' statistics to be refreshed (`request_analyze`), else the caller does."""
    lead = await live_lead(session, uid, for_update=True)
    check_version(lead, if_match)
    handed_over = await hand_over_email(session, rt.settings.crm, EmailHold.of(lead), None)
    now = utcnow()
    # Keyed hashes of its contacts, so an old list cannot bring the person back.
    await erased_contacts.remember(session, erased_contacts.secret_of(rt.settings), lead, now)
    owed = rt.settings.crm.provider != "none" and not crm_gone
    make_tombstone(lead, ERASING if owed else ERASED, now)
    lead.hold_evidence = None  # held no more: nothing is left to review
    await repo_lead.erase_personal_data(session, lead.id)
    await forget_subject(session, lead.uid)  # stored answers that show the lead
    session.add(LeadEvent(lead_id=lead.id, action="erased", changes={}, actor=actor, at=now))
    # PostgreSQL's planner statistics hold column values: the erased ones leave them now.
    # Asked after the lead's lock (its dedupe row waits for this transaction); a caller
    # erasing many leads in one transaction asks once, after the last (`analyze`).
    if analyze:
        await request_analyze(session, rt.queue, ERASED_TABLES)
    await request_erasure(session, rt.queue, rt.settings, lead.uid, crm_gone=crm_gone)
    if handed_over:
        await request_delivery(session, rt.queue, rt.settings)
    rt.known.forget(lead.id)  # no copy of its match fields stays in this process
    return lead


async def release_hold(
    session: AsyncSession,
    rt: LeadsRuntime,
    lead: Lead,
    *,
    actor: str | None = None,
    changes: dict[str, Any] | None = None,
) -> None:
    """A person decided a held lead is not a duplicate: deliver it (with a history line,
    `reviewed`, when `changes` says what they decided). Routed now if it has no owner (a
    held lead is given none at intake: `IntakeWriter.create`)."""
    lead.possible_duplicate_of = None
    lead.hold_evidence = None
    lead.sync_status = "pending"
    lead.trace_parent = current_traceparent()
    lead.version += 1
    lead.updated_at = utcnow()
    routed = await route_held(session, rt, lead)
    if changes is not None:
        if routed:
            changes = {**changes, "values": routed}
        session.add(LeadEvent(lead_id=lead.id, action="reviewed", changes=changes, actor=actor))
    await request_delivery(session, rt.queue, rt.settings)


async def route_held(session: AsyncSession, rt: LeadsRuntime, lead: Lead) -> dict[str, Any]:
    """Route a lead released from its hold if it has no owner (a held lead is given
    none at intake); the team and owner it moved from and to, for its history line."""
    if lead.owner is not None:
        return {}
    before = {"team": lead.team, "owner": lead.owner}
    changed = await route_again(session, rt, lead)
    return {name: {"from": before[name], "to": getattr(lead, name)} for name in changed}


# History lines `GET /v1/leads/{id}` shows, newest first (`history_total` counts them all).
HISTORY_SHOWN = 100

# Related leads it shows, oldest first (`duplicates_total` counts those held against it).
DUPLICATES_SHOWN = 50


@dataclass(frozen=True, slots=True)
class LeadDetail:
    """A lead with its sources, related duplicates and history."""

    lead: Lead
    sources: list[LeadSource]
    duplicates: list[Lead]
    history: list[LeadEvent]
    history_total: int = 0
    duplicates_total: int = 0


async def detail(session: AsyncSession, uid: str) -> LeadDetail:
    """Everything `GET /v1/leads/{id}` shows."""
    lead = await live_lead(session, uid)
    history = await repo_lead.history_of(session, lead.id, HISTORY_SHOWN)
    duplicates = await repo_lead.related_duplicates(session, lead, DUPLICATES_SHOWN)
    held = sum(1 for d in duplicates if d.possible_duplicate_of == lead.id)
    return LeadDetail(
        lead,
        await repo_lead.sources_of(session, lead.id),
        duplicates,
        history,
        # Counted only when the page is full: most leads have a few lines.
        await repo_lead.history_count(session, lead.id)
        if len(history) == HISTORY_SHOWN
        else len(history),
        await repo_lead.held_against_count(session, lead.id) if held == DUPLICATES_SHOWN else held,
    )
