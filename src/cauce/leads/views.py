"""Lead rows and service results rendered as the API's response models."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cauce.leads.matching.plan import contact_key, phone_contact
from cauce.leads.models import Lead, LeadSource
from cauce.leads.names import compose_full_name
from cauce.leads.repository_lead import ListedExtras
from cauce.leads.responses import DuplicateInfo, LeadCreated, LeadOut, ScoreReason
from cauce.leads.service import DuplicateFound, IntakeResult
from cauce.leads.service_edit import LeadDetail


def _reasons(raw: list[dict[str, Any]]) -> list[ScoreReason]:
    return [
        ScoreReason(code=str(r.get("rule")), label=str(r.get("reason")), points=r.get("points", 0))
        for r in raw or []
    ]


def _duplicate(found: DuplicateFound | None) -> DuplicateInfo | None:
    if found is None:
        return None
    match = found.match if found.match in ("email", "phone") else "fuzzy"
    return DuplicateInfo(
        lead_id=found.lead_uid,
        match=match,  # type: ignore[arg-type]
        confidence=found.confidence,
        action=found.action,
        merged_fields=list(found.merged_fields),
    )


def lead_view(
    lead: Lead, *, sources: list[str] | None = None, duplicate_of: str | None = None
) -> LeadOut:
    """A lead as the API shows it: `sources` every source it arrived from (its first one
    when not given), `duplicate_of` the public id of the lead it is held against."""
    return LeadOut.model_validate(
        {
            "id": lead.uid,
            "external_id": lead.external_id,
            "source": lead.source,
            "sources": sources or [lead.source],
            "status": lead.status,
            "email": lead.email,
            "phone": lead.phone,
            "phone_extension": lead.phone_extension,
            "first_name": lead.first_name,
            "last_name": lead.last_name,
            "full_name": compose_full_name(lead.first_name, lead.last_name),
            "company": lead.company,
            "job_title": lead.job_title,
            "country": lead.country,
            "region": lead.region,
            "city": lead.city,
            "language": lead.language,
            "is_disposable_email": lead.email_disposable,
            "is_free_email": lead.email_free,
            "utm": lead.utm or None,
            "consent": lead.consent,
            "custom_fields": lead.custom_fields or {},
            "score": lead.score,
            "score_model": lead.score_model,
            "score_reasons": _reasons(lead.score_reasons),
            "owner": lead.owner,
            "team": lead.team,
            "duplicate_of": duplicate_of,
            "hold": (lead.hold_evidence or {}) if lead.sync_status == "held" else None,
            "created_at": lead.created_at,
            "updated_at": lead.updated_at,
        }
    )


def listed_view(lead: Lead, extras: ListedExtras) -> LeadOut:
    """A lead of a page (or a change's answer) with its `listed_extras`."""
    return lead_view(
        lead, sources=extras.sources.get(lead.id), duplicate_of=extras.held_against.get(lead.id)
    )


def created_view(result: IntakeResult) -> LeadCreated:
    """The answer to `POST /v1/leads` (and one batch item)."""
    lead = result.lead
    return LeadCreated(
        id=lead.uid,
        outcome=result.outcome,
        status=result.status,  # type: ignore[arg-type]
        score=result.score.value,
        score_model=result.score.model,
        score_reasons=_reasons([r.as_dict() for r in result.score.reasons]),
        owner=result.owner,
        duplicate=_duplicate(result.duplicate),
    )


def _other_contacts(lead: Lead, field: str, sent: Iterable[str | None]) -> list[str]:
    """The lead's other emails (phones): those its arrivals sent, then those its column
    lists (`other_emails`, `other_phones`: matching's keys), each once by match key, its
    own left out (a phone's number without its extension too)."""
    key = contact_key(field)
    own = getattr(lead, field)
    seen = {key(own), key(phone_contact(own, lead.phone_extension) if field == "phone" else own)}
    listed = (getattr(lead, f"other_{field}s") or "").split()
    out: list[str] = []
    for value in (*sent, *listed):
        if value and (k := key(value)) not in seen:
            seen.add(k)
            out.append(value)
    return out


def _utc(at: datetime) -> str:
    # As the response models write times (`created_at`): UTC with a `Z`.
    text = at.isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def _crm_deleted_at(lead: Lead) -> datetime | None:
    """When the CRM deleted the lead's contact, while that is its state: a sync since then
    (a change in Cauce makes the lead pending, and the upsert creates the contact anew)
    has put it back, and the deletion is history (its `crm_deleted` line)."""
    deleted = lead.crm_deleted_at
    if deleted is None or (lead.synced_at is not None and lead.synced_at > deleted):
        return None
    return deleted


# The arrivals' consents a lead's detail shows (the last ones), as it shows its history.
CONSENTS_SHOWN = 100
_CONSENT_MEMBERS = ("marketing", "given_at", "wording_version", "source")


def _consents(sources: Iterable[LeadSource]) -> tuple[list[dict[str, Any]], int]:
    """Each arrival's own consent (`ConsentEvent`), oldest first: the last
    `CONSENTS_SHOWN`, and how many there are. An arrival without one (or whose consent an
    erasure cleared) is not listed."""
    events = [
        {
            "received_at": _utc(s.received_at),
            "source": s.source,
            "consent": {name: s.consent.get(name) for name in _CONSENT_MEMBERS},
        }
        for s in sources
        if isinstance(s.consent, dict) and "marketing" in s.consent
    ]
    return events[-CONSENTS_SHOWN:], len(events)


def detail_view(found: LeadDetail) -> dict[str, Any]:
    """`GET /v1/leads/{id}`: the lead, its sync state, duplicates, history and the
    consents its arrivals sent."""
    lead = found.lead
    sources = list(dict.fromkeys(s.source for s in found.sources)) or [lead.source]
    held_against = next((d for d in found.duplicates if d.id == lead.possible_duplicate_of), None)
    duplicate_of = held_against.uid if held_against is not None else None
    body = lead_view(lead, sources=sources, duplicate_of=duplicate_of).model_dump(mode="json")
    body["duplicates"] = [
        {
            "lead_id": d.uid,
            "status": d.status,
            "held_for_review": d.possible_duplicate_of == lead.id,
        }
        for d in found.duplicates
        if d.id != lead.possible_duplicate_of
    ]
    body["arrivals"] = len(found.sources)
    # Contacts that arrivals brought and a merge did not make the lead's own, and those
    # matching keeps for it (its columns: an email or phone a PATCH replaced is there).
    body["other_emails"] = _other_contacts(lead, "email", (s.email for s in found.sources))
    body["other_phones"] = _other_contacts(
        lead, "phone", (phone_contact(s.phone, s.phone_extension) for s in found.sources)
    )
    deleted_at = _crm_deleted_at(lead)
    body["sync"] = {
        "status": lead.sync_status,
        "version": lead.version,
        "synced_version": lead.synced_version,
        "crm_id": lead.crm_id,
        "synced_at": lead.synced_at.isoformat() if lead.synced_at else None,
        "attempts": lead.sync_attempts,
        "last_error": lead.last_sync_error,
        "crm_deleted_at": deleted_at.isoformat() if deleted_at else None,
    }
    body["history"] = [
        {"action": e.action, "at": _utc(e.at), "actor": e.actor, "changes": e.changes}
        for e in found.history
    ]
    body["history_total"] = found.history_total
    body["duplicates_total"] = found.duplicates_total
    # The proof of each consent the lead was given (GDPR art. 7), from the arrivals read.
    body["consents"], body["consents_total"] = _consents(found.sources)
    return body
