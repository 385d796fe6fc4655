"""Lead intake: de-duplicate, merge or create, score, route, and ask for a CRM delivery.

Everything happens on the caller's session, so the lead, its history and the delivery
job are committed together by the request (or import job) boundary, or not at all.
Edits, erasure and queries live in `service_edit.py`.

One lead and a batch take the same path (`_intake`): the members of every item's blocking
keys are read at once, then the candidates each item will be compared with (read again
only for an item whose candidates the batch's earlier items changed), matched in memory
(against stored leads and the batch's earlier items, so the outcome is the one
sequential intake would give), and the new rows are written with bulk inserts.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, class_mapper

from cauce.core.config import Settings
from cauce.core.db.base import utcnow
from cauce.core.jobs.ports import JobQueue
from cauce.leads import bulk
from cauce.leads import repository as repo
from cauce.leads.matching import FieldChange, Match, Verdict, merge
from cauce.leads.matching.known import Known, KnownLeads
from cauce.leads.matching.plan import (
    MATCH_COLUMNS,
    BatchMatcher,
    BlockView,
    match_values,
    prepared_row,
    provisional,
    record_of,
    stored_keys,
)
from cauce.leads.matching.record import Features, prepare
from cauce.leads.metrics import LeadsMetrics
from cauce.leads.models import Lead
from cauce.leads.routing import choose_team, owner_at
from cauce.leads.schemas import LeadIn
from cauce.leads.scoring import PointsModel, Score, facts_of
from cauce.leads.tasks import request_delivery

if TYPE_CHECKING:
    from cauce.leads.intake_groups import IntakeGroups

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
    # Stored leads' prepared match fields, by id and version (intake's candidates).
    known: KnownLeads = field(default_factory=KnownLeads)
    # Group commit of `POST /v1/leads` (None: each lead in its own transaction).
    groups: IntakeGroups | None = None


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


def _match_kind(match: Match[int]) -> str:
    rule = (match.decision.rule or "").lower()
    for kind in ("email", "phone", "external_id"):
        if kind in rule:
            return kind
    return "fuzzy"


def _history_changes(changes: list[FieldChange]) -> dict[str, Any]:
    # Names only: values may be personal data and history outlives erasure requests.
    return {
        "filled": [c.field for c in changes if c.action == "filled"],
        "overwritten": [c.field for c in changes if c.action == "overwritten"],
        "kept": [c.field for c in changes if c.action == "kept"],
    }


@dataclass(frozen=True, slots=True)
class _Incoming:
    values: dict[str, Any]
    features: Features
    keys: frozenset[str]
    actor: str | None  # who sent it, for the history line


@dataclass(frozen=True, slots=True)
class _Step:
    """What matching decided for one item: merge into `lead_id`, or file it as new."""

    outcome: Outcome
    lead_id: int  # merged: the lead merged into; otherwise the new lead (provisional)
    match: Match[int] | None


def _incoming(lead_in: LeadIn, actor: str | None) -> _Incoming:
    values = incoming_values(lead_in)
    features = prepared_row(tuple(values[name] for name in MATCH_COLUMNS))
    return _Incoming(values, features, stored_keys(features), actor)


async def _decide(
    matcher: BatchMatcher,
    items: Sequence[_Incoming],
    policy: str,
    look_up: Callable[[set[int]], Awaitable[None]],
) -> list[_Step]:
    steps: list[_Step] = []
    for item in items:
        # The items before may have changed which stored leads are this one's strongest
        # candidates (`blocking.strongest`): read any not read yet.
        if missing := matcher.unknown(item.keys):
            await look_up(set(missing))
        match = matcher.best(item.features, item.keys)
        if match is not None and match.decision.verdict is Verdict.DUPLICATE and policy == "merge":
            matcher.merge_into(match.id, match_values(item.values))
            steps.append(_Step("merged", match.id, match))
            continue
        new_id = matcher.file(match_values(item.values), item.features, item.keys)
        outcome: Outcome = "held_for_review" if match is not None else "created"
        steps.append(_Step(outcome, new_id, match))
    return steps


_LEADS_MANAGER = class_mapper(Lead).class_manager


def _new_lead(values: dict[str, Any], held: bool, now: datetime) -> Lead:
    """A lead not stored yet: the row is inserted from its attributes, never flushed.

    Built without the ORM constructor's per-attribute events (~50 us a lead, a fifth of
    a batch's bookkeeping); changes made afterwards go through the attributes as usual.
    """
    lead = _LEADS_MANAGER.new_instance()
    lead.__dict__.update(
        {name: values[name] for name in SCALAR_FIELDS},
        uid=str(uuid.uuid4()),
        email_key=values["email"],
        email_disposable=values["email_disposable"],
        email_free=values["email_free"],
        source=values["source"],
        status=values["status"],
        owner=values["owner"],
        team=None,
        utm=values["utm"],
        consent=values["consent"],
        custom_fields=values["custom_fields"],
        score=0,
        score_model="",
        score_reasons=[],
        possible_duplicate_of=None,
        match_keys=[],
        version=1,
        # A possible duplicate waits for a person before it goes to the CRM.
        sync_status="held" if held else "pending",
        synced_version=0,
        crm_id=None,
        synced_at=None,
        sync_attempts=0,
        last_sync_error=None,
        crm_event_at=None,
        crm_deleted_at=None,
        erased_at=None,
        created_at=now,
        updated_at=now,
    )
    return lead


def _apply_merge(
    lead: Lead, values: dict[str, Any], rt: LeadsRuntime, now: datetime
) -> tuple[list[FieldChange], list[FieldChange]]:
    """Fold an arrival into a lead: fill its gaps (never overwrite unless configured)."""
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
    lead.version += 1
    lead.sync_status = "pending"
    lead.updated_at = now
    return changes, changed


def _source_row(lead_id: int, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "source": values["source"],
        "external_id": values["external_id"],
        "utm": values["utm"],
        "consent": values["consent"],
        "received_at": now,
    }


class _Writer:
    """The rows an intake writes, gathered in item order and written in bulk."""

    def __init__(self, rt: LeadsRuntime, stored: dict[int, Lead], arrivals: dict[int, int]):
        self.rt = rt
        self.stored = stored  # stored leads merged into (ORM objects, flushed at the end)
        self.arrivals = arrivals
        self.new: dict[int, Lead] = {}  # provisional id -> lead to insert, in item order
        self.new_keys: dict[int, frozenset[str]] = {}
        self.held: dict[int, int] = {}  # provisional id -> the lead it may duplicate
        self.rekey: set[int] = set()  # leads whose fields a merge changed
        self.routes: list[tuple[str, Lead]] = []  # leads waiting for an owner, in order
        self.sources: list[tuple[int, dict[str, Any]]] = []
        self.events: list[tuple[int, str, dict[str, Any], str | None]] = []

    def lead(self, lead_id: int) -> Lead:
        return self.new[lead_id] if provisional(lead_id) else self.stored[lead_id]

    def _score(self, lead: Lead, lead_id: int) -> Score:
        score = self.rt.scorer.score(_facts(lead, self.arrivals[lead_id]))
        apply_score(lead, score)
        return score

    def create(self, step: _Step, item: _Incoming, now: datetime) -> tuple[Lead, Score]:
        lead = _new_lead(item.values, step.match is not None, now)
        self.new[step.lead_id] = lead
        self.new_keys[step.lead_id] = item.keys
        self.arrivals[step.lead_id] = 1
        if step.match is not None:
            self.held[step.lead_id] = step.match.id
        score = self._score(lead, step.lead_id)
        leads_settings = self.rt.settings.leads
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
        if decision is not None:
            lead.team = decision.team
            if not lead.owner:  # an owner given by the caller is kept
                self.routes.append((decision.team, lead))
        self.sources.append((step.lead_id, item.values))
        self.events.append((step.lead_id, "created", {}, item.actor))
        return lead, score

    def merge(self, step: _Step, item: _Incoming, now: datetime) -> tuple[Lead, Score, list[str]]:
        lead = self.lead(step.lead_id)
        changes, changed = _apply_merge(lead, item.values, self.rt, now)
        if changed:
            self.rekey.add(step.lead_id)
        self.arrivals[step.lead_id] += 1
        self.sources.append((step.lead_id, item.values))
        self.events.append((step.lead_id, "merged", _history_changes(changes), item.actor))
        # Scored as it stands after this arrival (a later merge in the batch re-scores it).
        return lead, self._score(lead, step.lead_id), [c.field for c in changed]

    async def _route(self, session: AsyncSession) -> None:
        # Each team's rotation advances once for the whole batch, owners in item order.
        teams = self.rt.settings.leads.teams
        waiting: dict[str, list[Lead]] = {}
        for team, lead in self.routes:
            waiting.setdefault(team, []).append(lead)
        for team, leads in waiting.items():
            first = await repo.advance_route(session, team, len(leads))
            members = tuple(teams.get(team, ()))
            for offset, lead in enumerate(leads):
                lead.owner = owner_at(members, first + offset)

    async def _insert_new(self, session: AsyncSession) -> dict[int, int]:
        for lead_id, target in self.held.items():
            if not provisional(target):
                self.new[lead_id].possible_duplicate_of = target
        # The rows are the new leads' own attributes (every column but `id`).
        by_uid = await bulk.insert_leads(session, [lead.__dict__ for lead in self.new.values()])
        ids: dict[int, int] = {}
        for lead_id, lead in self.new.items():
            lead.id = ids[lead_id] = by_uid[lead.uid]
        # Held against a lead of this same batch, whose id is only known now.
        later = [(lead_id, ids[t]) for lead_id, t in self.held.items() if provisional(t)]
        await bulk.hold_against(session, [(ids[lead_id], t) for lead_id, t in later])
        for lead_id, target in later:
            self.new[lead_id].possible_duplicate_of = target
        return ids

    def written(self, matcher: BatchMatcher) -> dict[int, Known]:
        """The leads created or merged into, as `write` left them (by their stored ids):
        later arrivals meet them as candidates without reading them back."""
        out: dict[int, Known] = {}
        for lead_id in [*self.new, *self.stored]:
            lead = self.lead(lead_id)
            values = tuple(getattr(lead, name) for name in MATCH_COLUMNS)
            out[lead.id] = Known(lead.version, lead.uid, values, matcher.prepared(lead_id, values))
        return out

    async def write(self, session: AsyncSession, now: datetime) -> None:
        """Insert the new leads, their keys, every arrival and history line; update the rest."""
        await self._route(session)
        ids = await self._insert_new(session) if self.new else {}

        def real(lead_id: int) -> int:
            return ids.get(lead_id, lead_id)

        keys = {real(i): k for i, k in self.new_keys.items() if i not in self.rekey}
        for lead_id in self.rekey:
            keys[real(lead_id)] = stored_keys(prepare(record_of(_columns(self.lead(lead_id)))))
        replace = [lead_id for lead_id in self.rekey if not provisional(lead_id)]
        await bulk.insert_match_keys(session, keys, replace=replace)
        sources = [_source_row(real(i), values, now) for i, values in self.sources]
        await bulk.insert_sources(session, sources)
        events = [
            {"lead_id": real(i), "action": action, "changes": changes, "actor": actor, "at": now}
            for i, action, changes, actor in self.events
        ]
        await bulk.insert_events(session, events)
        if self.stored:
            await session.flush()


def _columns(lead: Lead) -> dict[str, Any]:
    return {name: getattr(lead, name) for name in SCALAR_FIELDS}


async def intake(
    session: AsyncSession, rt: LeadsRuntime, lead_in: LeadIn, *, actor: str | None = None
) -> IntakeResult:
    """Accept one validated lead: merge it into a duplicate, hold it, or create it."""
    return (await intake_many(session, rt, [lead_in], actor=actor))[0]


async def intake_many(
    session: AsyncSession,
    rt: LeadsRuntime,
    items: Sequence[LeadIn],
    actor: str | Sequence[str | None] | None = None,
) -> list[IntakeResult]:
    """Accept validated leads in order, each as `intake` would after the ones before it.

    Two copies of one new lead in a batch give one lead and one merge, as they would one
    after the other. `actor` is who sent them all, or one actor per item (requests
    committed as a group, `intake_groups.py`). Returns one result per item, in order.
    """
    if not items:
        return []
    actors = [actor] * len(items) if actor is None or isinstance(actor, str) else actor
    incoming = [_incoming(lead_in, by) for lead_in, by in zip(items, actors, strict=True)]
    results = await _intake(session, rt, incoming)
    for result in results:
        rt.metrics.intake.labels(result.outcome).inc()
    return results


async def _candidates(
    session: AsyncSession, cache: KnownLeads, wanted: set[int]
) -> dict[int, Known]:
    """The candidates not erased, prepared: from `cache` when it holds them at their
    current version (one narrow read of the versions), the rest read and prepared; those
    join the cache if the transaction commits (`_hold_after_commit`)."""
    found: dict[int, Known] = {}
    if any(lead_id in cache for lead_id in wanted):
        missing: list[int] = []
        for lead_id, version in await repo.live_versions(session, wanted):
            known = cache.get(lead_id, version)
            if known is None:
                missing.append(lead_id)
            else:
                found[lead_id] = known
    else:  # a cold cache: one read
        missing = list(wanted)
    read = {
        lead_id: Known.read(version, uid, values)
        for lead_id, uid, version, values in await repo.match_rows(session, missing)
    }
    _hold_on_commit(session, cache, read)
    found.update(read)
    return found


def _hold_on_commit(session: AsyncSession, cache: KnownLeads, leads: dict[int, Known]) -> None:
    """Keep `leads` in `cache` if the session's transaction commits (never before)."""
    if leads:
        pending: list[tuple[KnownLeads, dict[int, Known]]]
        pending = session.info.setdefault(_KNOWN_PENDING, [])
        pending.append((cache, leads))


_KNOWN_PENDING = "cauce.leads.known_pending"


@event.listens_for(Session, "after_commit")
def _hold_after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the commit is to come
        return
    for cache, read in session.info.pop(_KNOWN_PENDING, ()):
        for lead_id, known in read.items():
            cache.hold(lead_id, known)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, _previous: Any) -> None:
    # Any rollback, a savepoint's included: what was read may have been rolled back.
    session.info.pop(_KNOWN_PENDING, None)


# From this many items on, intake reads every lead under their keys at once (a batch).
_READ_EVERY_MEMBER = 64


async def _intake(
    session: AsyncSession, rt: LeadsRuntime, items: list[_Incoming]
) -> list[IntakeResult]:
    dedupe = rt.settings.leads.dedupe
    # The members of every item's keys at once (one more than a usable block may have
    # tells a key is too common), then the match fields of the candidates compared.
    all_keys = frozenset().union(*(item.keys for item in items))
    found = await repo.key_members(session, all_keys, dedupe.max_block_size + 1)
    view = BlockView(found.members, dedupe.max_block_size, found.too_common, dedupe.max_candidates)
    matcher = BatchMatcher(view, dedupe)
    uids: dict[int, str] = {}

    async def look_up(wanted: set[int]) -> None:
        for lead_id, known in sorted((await _candidates(session, rt.known, wanted)).items()):
            matcher.know(lead_id, known.values, known.features)
            uids[lead_id] = known.uid
        matcher.looked_up(wanted)

    if len(items) >= _READ_EVERY_MEMBER:
        # Many items: one read of every lead under their keys costs less than working out
        # each item's strongest candidates here and again when it is decided.
        await look_up(view.usable_members())
    else:
        await look_up(set().union(*(matcher.unknown(item.keys) for item in items)))
    steps = await _decide(matcher, items, dedupe.on_duplicate, look_up)

    targets = {s.lead_id for s in steps if s.outcome == "merged" and not provisional(s.lead_id)}
    stored = await repo.leads_by_id(session, targets)
    writer = _Writer(rt, stored, await repo.arrivals_of(session, targets))
    now = utcnow()
    done: list[tuple[_Step, Lead, Score, list[str]]] = []
    for step, item in zip(steps, items, strict=True):
        if step.outcome == "merged":
            done.append((step, *writer.merge(step, item, now)))
        else:
            done.append((step, *writer.create(step, item, now), []))
    await writer.write(session, now)
    _hold_on_commit(session, rt.known, writer.written(matcher))
    if any(step.outcome != "held_for_review" for step in steps):
        await request_delivery(session, rt.queue, rt.settings)
    return [
        IntakeResult(lead, step.outcome, score, _duplicate(step, fields, writer, uids))
        for step, lead, score, fields in done
    ]


def _duplicate(
    step: _Step, fields: list[str], writer: _Writer, uids: dict[int, str]
) -> DuplicateFound | None:
    if step.match is None:
        return None
    target = step.match.id
    uid = writer.new[target].uid if provisional(target) else uids[target]
    action: Literal["merged", "held_for_review"] = (
        "merged" if step.outcome == "merged" else "held_for_review"
    )
    confidence = round(step.match.decision.score, 4)
    return DuplicateFound(uid, _match_kind(step.match), confidence, action, tuple(fields))
