"""Lead intake: de-duplicate, merge or create, score, route, and ask for a CRM delivery.

Everything happens on the caller's session, so the lead, its history and the delivery
job are committed together by the request (or import job) boundary, or not at all.
Edits, erasure and queries live in `service_edit.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import Settings
from cauce.core.db.base import utcnow
from cauce.core.jobs.ports import JobQueue
from cauce.leads import repository as repo
from cauce.leads.matching import FieldChange, Match, Verdict, blocking_keys, merge, rank
from cauce.leads.metrics import LeadsMetrics
from cauce.leads.models import Lead, LeadEvent, LeadSource
from cauce.leads.routing import choose_team, owner_at
from cauce.leads.schemas import LeadIn
from cauce.leads.scoring import PointsModel, Score, facts_of
from cauce.leads.tasks import request_delivery

# The lead fields intake copies from a validated `LeadIn`.
SCALAR_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "country",
    "region",
    "city",
    "language",
    "external_id",
)
MERGEABLE = (*SCALAR_FIELDS, "custom_fields")

Outcome = Literal["created", "merged", "held_for_review"]


class Scorer(Protocol):
    """The points model or a learned model: facts in, a score with reasons out."""

    def score(self, facts: Mapping[str, Any]) -> Score:
        """Score one lead's facts."""
        ...


@dataclass
class LeadsRuntime:
    """What the leads service needs, built once by the composition root."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    queue: JobQueue
    scorer: Scorer = field(default_factory=PointsModel)
    metrics: LeadsMetrics = field(default_factory=LeadsMetrics)


@dataclass(frozen=True, slots=True)
class DuplicateFound:
    """The existing lead an incoming one matched, and what was done about it."""

    lead_uid: str
    match: str  # email | phone | external_id | fuzzy
    confidence: float
    action: Literal["merged", "held_for_review"]
    merged_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """The lead that now holds the data, and how it got there."""

    lead: Lead
    outcome: Outcome
    score: Score
    duplicate: DuplicateFound | None = None


def incoming_values(lead_in: LeadIn) -> dict[str, Any]:
    """The stored form of a validated lead."""
    values: dict[str, Any] = {name: getattr(lead_in, name) for name in SCALAR_FIELDS}
    values["source"] = str(lead_in.source)
    values["status"] = str(lead_in.status)
    values["owner"] = lead_in.owner
    values["utm"] = lead_in.utm.model_dump(exclude_none=True) if lead_in.utm else {}
    values["consent"] = lead_in.consent.model_dump(mode="json") if lead_in.consent else None
    values["custom_fields"] = dict(lead_in.custom_fields)
    values["email_disposable"] = lead_in.is_disposable_email
    values["email_free"] = lead_in.is_free_email
    return values


def _facts(lead: Lead, arrivals: int) -> dict[str, Any]:
    values = {
        name: getattr(lead, name)
        for name in (*SCALAR_FIELDS, "source", "utm", "consent", "custom_fields")
    }
    values["email_free"] = lead.email_free
    values["email_disposable"] = lead.email_disposable
    return facts_of(values, arrivals=arrivals)


def apply_score(lead: Lead, score: Score) -> None:
    """Store a score and its reasons on the lead."""
    lead.score = score.value
    lead.score_model = score.model
    lead.score_reasons = [reason.as_dict() for reason in score.reasons]


async def _route(session: AsyncSession, rt: LeadsRuntime, lead: Lead) -> None:
    leads_settings = rt.settings.leads
    decision = choose_team(
        leads_settings.routing_rules,
        {
            "country": lead.country,
            "region": lead.region,
            "source": lead.source,
            "custom_fields": lead.custom_fields,
        },
        lead.score,
        leads_settings.default_team,
    )
    if decision is None:
        return
    lead.team = decision.team
    if lead.owner:
        return  # an owner given by the caller is kept
    members = leads_settings.teams.get(decision.team, ())
    position = await repo.next_route_position(session, decision.team)
    lead.owner = owner_at(tuple(members), position)


def _match_kind(match: Match[int]) -> str:
    rule = (match.decision.rule or "").lower()
    for kind in ("email", "phone", "external_id"):
        if kind in rule:
            return kind
    return "fuzzy"


async def _best_match(
    session: AsyncSession, rt: LeadsRuntime, values: dict[str, Any], keys: frozenset[str]
) -> tuple[Match[int], Lead] | None:
    dedupe = rt.settings.leads.dedupe
    ids = await repo.candidate_ids(session, keys, dedupe.max_block_size)
    if not ids:
        return None
    leads = {lead.id: lead for lead in await repo.live_leads(session, ids)}
    if not leads:
        return None
    record = repo.match_record(values)
    ranked = rank(record, [(i, repo.match_record(lead)) for i, lead in leads.items()], dedupe)
    if not ranked:
        return None
    return ranked[0], leads[ranked[0].id]


def _history_changes(changes: list[FieldChange]) -> dict[str, Any]:
    # Names only: values may be personal data and history outlives erasure requests.
    return {
        "filled": [c.field for c in changes if c.action == "filled"],
        "overwritten": [c.field for c in changes if c.action == "overwritten"],
        "kept": [c.field for c in changes if c.action == "kept"],
    }


async def _merge_into(
    session: AsyncSession,
    rt: LeadsRuntime,
    lead: Lead,
    values: dict[str, Any],
    match: Match[int],
    actor: str | None,
) -> IntakeResult:
    existing = {name: getattr(lead, name) for name in MERGEABLE}
    incoming = {name: values[name] for name in MERGEABLE}
    merged, changes = merge(existing, incoming, rt.settings.leads.dedupe)
    changed = [c for c in changes if c.action in ("filled", "overwritten")]
    for change in changed:
        top = change.field.split(".", 1)[0]
        setattr(lead, top, merged[top])
    if lead.email is not None and lead.email == values["email"]:
        lead.email_key = lead.email
        lead.email_disposable = values["email_disposable"]
        lead.email_free = values["email_free"]
    now = utcnow()
    lead.version += 1
    lead.sync_status = "pending"
    lead.updated_at = now
    session.add(_source_row(lead.id, values, now))
    session.add(
        LeadEvent(lead_id=lead.id, action="merged", changes=_history_changes(changes), actor=actor)
    )
    if changed:
        await repo.replace_match_keys(session, lead.id, blocking_keys(repo.match_record(lead)))
    await session.flush()
    score = rt.scorer.score(_facts(lead, await repo.arrivals(session, lead.id)))
    apply_score(lead, score)
    await request_delivery(session, rt.queue, rt.settings)
    duplicate = DuplicateFound(
        lead.uid,
        _match_kind(match),
        round(match.decision.score, 4),
        "merged",
        tuple(c.field for c in changed),
    )
    return IntakeResult(lead, "merged", score, duplicate)


def _source_row(lead_id: int, values: dict[str, Any], now: Any) -> LeadSource:
    return LeadSource(
        lead_id=lead_id,
        source=values["source"],
        external_id=values["external_id"],
        utm=values["utm"],
        consent=values["consent"],
        received_at=now,
    )


async def _create(
    session: AsyncSession,
    rt: LeadsRuntime,
    values: dict[str, Any],
    keys: frozenset[str],
    actor: str | None,
    held: Match[int] | None,
) -> tuple[Lead, Score]:
    now = utcnow()
    lead = Lead(
        uid=str(uuid.uuid4()),
        email_key=values["email"],
        email_disposable=values["email_disposable"],
        email_free=values["email_free"],
        source=values["source"],
        status=values["status"],
        owner=values["owner"],
        utm=values["utm"],
        consent=values["consent"],
        custom_fields=values["custom_fields"],
        possible_duplicate_of=held.id if held is not None else None,
        # A possible duplicate waits for a person before it goes to the CRM.
        sync_status="held" if held is not None else "pending",
        created_at=now,
        updated_at=now,
        **{name: values[name] for name in SCALAR_FIELDS},
    )
    score = rt.scorer.score(_facts(lead, 1))
    apply_score(lead, score)
    session.add(lead)
    await _route(session, rt, lead)
    await session.flush()
    await repo.replace_match_keys(session, lead.id, keys, fresh=True)
    session.add(_source_row(lead.id, values, now))
    session.add(LeadEvent(lead_id=lead.id, action="created", changes={}, actor=actor, at=now))
    if held is None:
        await request_delivery(session, rt.queue, rt.settings)
    return lead, score


async def intake(
    session: AsyncSession, rt: LeadsRuntime, lead_in: LeadIn, *, actor: str | None = None
) -> IntakeResult:
    """Accept one validated lead: merge it into a duplicate, hold it, or create it."""
    result = await _intake(session, rt, lead_in, actor)
    rt.metrics.intake.labels(result.outcome).inc()
    return result


async def _intake(
    session: AsyncSession, rt: LeadsRuntime, lead_in: LeadIn, actor: str | None
) -> IntakeResult:
    values = incoming_values(lead_in)
    keys = blocking_keys(repo.match_record(values))
    found = await _best_match(session, rt, values, keys)
    policy = rt.settings.leads.dedupe.on_duplicate
    if found is not None:
        match, existing = found
        if match.decision.verdict is Verdict.DUPLICATE and policy == "merge":
            return await _merge_into(session, rt, existing, values, match, actor)
        lead, score = await _create(session, rt, values, keys, actor, held=match)
        duplicate = DuplicateFound(
            existing.uid, _match_kind(match), round(match.decision.score, 4), "held_for_review"
        )
        return IntakeResult(lead, "held_for_review", score, duplicate)
    lead, score = await _create(session, rt, values, keys, actor, held=None)
    return IntakeResult(lead, "created", score)
