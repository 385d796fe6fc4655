"""The rows one intake writes: new leads, merges into stored ones, and what goes with them.

`service._intake` decides, item by item, which lead each arrival merges into or whether
it is new (`Step`); `IntakeWriter` then builds the new leads without the ORM's
per-attribute events, folds merges into the stored leads (locked), scores and routes
them, and writes every row of the intake (leads, match keys, arrivals, history) in bulk.
The rules of a merge, which review shares, are in `intake_merge`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import class_mapper

from cauce.leads import bulk
from cauce.leads import repository as repo
from cauce.leads.delivery import EmailHold, hand_over_email
from cauce.leads.intake_merge import (
    OTHER_COLUMNS,
    SCALAR_FIELDS,
    apply_merge,
    history_changes,
    withdrawal_for,
)
from cauce.leads.matching import Match
from cauce.leads.matching.known import Known
from cauce.leads.matching.plan import (
    MATCH_COLUMNS,
    BatchMatcher,
    provisional,
    record_of,
    shared_row,
    stored_keys,
)
from cauce.leads.matching.record import Features, prepare
from cauce.leads.models import Lead, search_text_of
from cauce.leads.routing import choose_team, owner_at
from cauce.leads.scoring import Score, facts_of

if TYPE_CHECKING:
    from cauce.leads.service import LeadsRuntime

Outcome = Literal["created", "merged", "held_for_review"]


@dataclass(frozen=True, slots=True)
class DuplicateFound:
    """The existing lead an incoming one matched, and what was done about it."""

    lead_uid: str
    match: str  # email | phone | external_id | fuzzy
    confidence: float
    action: Literal["merged", "held_for_review"]
    merged_fields: tuple[str, ...] = ()


def lead_facts(lead: Lead, arrivals: int) -> dict[str, Any]:
    """What scoring reads of a lead that arrived `arrivals` times."""
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
    for kind in ("email", "phone"):
        if kind in rule:
            return kind
    return "fuzzy"


@dataclass(frozen=True, slots=True)
class Incoming:
    """One validated arrival, as intake matches and stores it."""

    values: dict[str, Any]
    features: Features
    keys: frozenset[str]
    actor: str | None  # who sent it, for the history line
    # The span of the request (or job) it came with, which its CRM delivery links to.
    trace_parent: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """What matching decided for one item: merge into `lead_id`, or file it as new."""

    outcome: Outcome
    lead_id: int  # merged: the lead merged into; otherwise the new lead (provisional)
    match: Match[int] | None


_LEADS_MANAGER = class_mapper(Lead).class_manager


def _new_lead(values: dict[str, Any], held: bool, now: datetime, trace_parent: str | None) -> Lead:
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
        other_emails=None,
        other_phones=None,
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
        hold_evidence=None,
        match_keys=[],
        version=1,
        # A possible duplicate waits for a person before it goes to the CRM.
        sync_status="held" if held else "pending",
        synced_version=0,
        crm_id=None,
        synced_at=None,
        sync_attempts=0,
        last_sync_error=None,
        crm_sent_properties=None,
        crm_create_sent_at=None,
        crm_create_doubt_at=None,
        crm_event_at=None,
        crm_deleted_at=None,
        trace_parent=trace_parent,
        erased_at=None,
        created_at=now,
        updated_at=now,
    )
    return lead


def _source_row(lead_id: int, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "source": values["source"],
        "external_id": values["external_id"],
        "email": values["email"],
        "phone": values["phone"],
        "phone_extension": values["phone_extension"],
        "utm": values["utm"],
        "consent": values["consent"],
        "received_at": now,
    }


class IntakeWriter:
    """The rows an intake writes, gathered in item order and written in bulk."""

    def __init__(
        self,
        rt: LeadsRuntime,
        stored: dict[int, Lead],
        arrivals: dict[int, int],
        against: dict[int, Lead] | None = None,
        owners: dict[str, set[int]] | None = None,
        sharing: set[int] | None = None,
    ):
        self.rt = rt
        self.stored = stored  # stored leads merged into (ORM objects, flushed at the end)
        self.arrivals = arrivals
        # Stored leads that arrivals carrying a marketing "no" are held against (locked):
        # one such "no" may reach its lead at once (`withdrawal_for`); the lead then joins
        # `stored`. `withdrawn` counts them.
        self.against = against or {}
        self.withdrawn = 0
        # Email -> the leads whose own email it is: the stored ones read for the merges
        # that may give a lead an email (`email_owners`), and the batch's as it goes.
        self.owners = owners or {}
        # Each stored lead merged into, as it was before its first merge: one whose email
        # a merge replaced (`overwrite_fields`) may have held it at the CRM (`_hand_over`).
        self.holds: dict[int, EmailHold] = {}
        # The other leads on those addresses, locked with the rest (`_hand_over`), and
        # whether any was handed an address.
        self.sharing = sharing or set()
        self.handed_over = False
        self.new: dict[int, Lead] = {}  # provisional id -> lead to insert, in item order
        self.new_keys: dict[int, frozenset[str]] = {}
        self.held: dict[int, int] = {}  # provisional id -> the lead it may duplicate
        self.rekey: set[int] = set()  # leads whose fields a merge changed
        self.routes: list[tuple[str, Lead]] = []  # leads waiting for an owner, in order
        # Of those, the ones a later item of the batch gave an owner (`merge_sales_state`):
        # their turns are taken all the same, as they were taken one item at a time.
        self.owned: set[int] = set()
        self.routed: set[int] = set()  # `id` of each lead in `routes`
        self.turns: dict[int, str | None] = {}  # `id` of a lead in `routes` -> its turn's owner
        self.took_turn: list[tuple[Lead, dict[str, Any]]] = []  # owned leads, their lines
        self.sources: list[tuple[int, dict[str, Any]]] = []
        self.events: list[tuple[int, str, dict[str, Any], str | None]] = []

    def lead(self, lead_id: int) -> Lead:
        return self.new[lead_id] if provisional(lead_id) else self.stored[lead_id]

    def _score(self, lead: Lead, lead_id: int) -> Score:
        score = self.rt.scorer.score(lead_facts(lead, self.arrivals[lead_id]))
        apply_score(lead, score)
        return score

    def create(self, step: Step, item: Incoming, now: datetime) -> tuple[Lead, Score]:
        lead = _new_lead(item.values, step.match is not None, now, item.trace_parent)
        self.new[step.lead_id] = lead
        self.new_keys[step.lead_id] = item.keys
        self.arrivals[step.lead_id] = 1
        if lead.email:
            self.owners.setdefault(lead.email, set()).add(step.lead_id)
        created: dict[str, Any] = {}
        if step.match is not None:
            self.held[step.lead_id] = step.match.id
            lead.__dict__["hold_evidence"] = evidence = hold_evidence(step.match)
            created["held"] = {k: evidence[k] for k in ("match", "confidence")}
            self._withdraw(step.match.id, lead, item, now)
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
            # An owner given by the caller is kept. A held lead waits for a person's
            # decision before it goes to anyone: routed if told distinct (`release_hold`),
            # and no turn of the rotation is spent on a duplicate a review merges away.
            if not lead.owner and step.match is None:
                self.routes.append((decision.team, lead))
                self.routed.add(id(lead))
        self.sources.append((step.lead_id, item.values))
        self.events.append((step.lead_id, "created", created, item.actor))
        return lead, score

    def _withdraw(self, target_id: int, held: Lead, item: Incoming, now: datetime) -> None:
        """Carry a held arrival's marketing "no" to the lead it is held against, when it
        came from one of that lead's mailboxes (`withdrawal_for`), with an `updated`
        line naming the held lead."""
        found = self.lead(target_id) if target_id in self.stored or provisional(target_id) else None
        target = found or self.against.get(target_id)
        if target is None:
            return
        consent = withdrawal_for(target, item.values)
        if consent is None:
            return
        before, score_before = target.consent, target.score
        target.consent = consent
        if not provisional(target_id):
            self.stored[target_id] = target  # flushed at the end, and cached as written
            self.withdrawn += 1
            target.version += 1
            target.updated_at = now
            target.trace_parent = item.trace_parent  # its next delivery links to this one
            if target.sync_status != "held":
                target.sync_status = "pending"
        self._score(target, target_id)
        moved: dict[str, Any] = {"consent": {"from": before, "to": consent}}
        if target.score != score_before:
            moved["score"] = {"from": score_before, "to": target.score}
        line = {"fields": ["consent"], "values": moved, "withdrawn_by": held.uid}
        self.events.append((target_id, "updated", line, item.actor))

    def merge(self, step: Step, item: Incoming, now: datetime) -> tuple[Lead, Score, list[str]]:
        lead = self.lead(step.lead_id)
        score_before = lead.score
        coming = not lead.owner and id(lead) in self.routed
        email = item.values.get("email")
        taken = bool(email and self.owners.get(email, set()) - {step.lead_id})
        if not provisional(step.lead_id) and step.lead_id not in self.holds:
            self.holds[step.lead_id] = EmailHold.of(lead)
        changes, changed = apply_merge(
            lead, item.values, self.rt, now, owner_coming=coming, email_taken=taken
        )
        if email and lead.email == email:
            self.owners.setdefault(email, set()).add(step.lead_id)
        if lead.sync_status == "held":
            target = self.held.get(step.lead_id, lead.possible_duplicate_of)
            if target is not None:
                self._withdraw(target, lead, item, now)
        lead.trace_parent = item.trace_parent  # its next delivery links to this arrival
        if changed or any(c.field in OTHER_COLUMNS for c in changes):
            self.rekey.add(step.lead_id)
        self.arrivals[step.lead_id] += 1
        self.sources.append((step.lead_id, item.values))
        line = history_changes(changes)
        self.events.append((step.lead_id, "merged", line, item.actor))
        if coming and lead.owner:  # its owner came before its turn did (`_took_turns`)
            self.owned.add(id(lead))
            self.took_turn.append((lead, line))
        # Scored as it stands after this arrival (a later merge in the batch re-scores it).
        score = self._score(lead, step.lead_id)
        if lead.score != score_before:  # the line says how the score moved, as a PATCH's
            line.setdefault("values", {})["score"] = {"from": score_before, "to": lead.score}
        return lead, score, [c.field for c in changed]

    def _waiting(self) -> dict[str, list[Lead]]:
        # The new leads each team's rotation gives an owner, in item order.
        waiting: dict[str, list[Lead]] = {}
        for team, lead in self.routes:
            waiting.setdefault(team, []).append(lead)
        return waiting

    def owner_coming(self, lead: Lead) -> bool:
        """Whether `lead` waits for its team's rotation to give it an owner (at `write`)."""
        return id(lead) in self.routed and id(lead) not in self.owned

    def turn_owner(self, lead: Lead) -> str | None:
        """The owner `lead`'s turn of the rotation gave (after `write`): its own, unless a
        later item of the batch gave it another (`owned`)."""
        return self.turns.get(id(lead), lead.owner)

    def _give_owners(self, team: str, leads: list[Lead], first: int) -> list[Lead]:
        """Owners from the rotation at `first`, one turn a lead; the leads given one."""
        members = tuple(self.rt.settings.leads.teams.get(team, ()))
        given: list[Lead] = []
        for offset, lead in enumerate(leads):
            self.turns[id(lead)] = owner = owner_at(members, first + offset)
            if id(lead) not in self.owned:
                lead.owner = owner
                given.append(lead)
        return given

    async def _route(self, session: AsyncSession) -> dict[str, int] | None:
        """Give the new leads their owners, each team's rotation advancing once for the
        whole batch, owners in item order.

        On SQLite the rotations advance here (the one writer runs one intake at a time).
        On PostgreSQL advancing locks the team's rotation row until the commit, which
        would make every intake creating leads for that team wait for the others' whole
        writes: the owners are given from the positions as read now, and the rotations
        advance after the writes (`_advance`), which mends the owners of a team whose
        rotation another intake advanced meanwhile. Returns the positions used then.
        """
        waiting = self._waiting()
        if not waiting:
            return None
        if repo.locks_rows(session):
            read = await repo.route_positions(session, waiting)
            for team, leads in waiting.items():
                self._give_owners(team, leads, read[team])
            return read
        for team, leads in sorted(waiting.items()):
            self._give_owners(team, leads, await repo.advance_route(session, team, len(leads)))
        return None

    async def _advance(self, session: AsyncSession, read: dict[str, int]) -> None:
        # The rotations' rows are locked in team order, last of all the intake's locks:
        # two intakes side by side never wait for each other in a circle (repository.py).
        mended: list[tuple[int, str | None]] = []
        for team, leads in sorted(self._waiting().items()):
            first = await repo.advance_route(session, team, len(leads))
            if first != read[team]:  # another intake took these turns meanwhile
                given = self._give_owners(team, leads, first)
                mended.extend((lead.id, lead.owner) for lead in given)
        await bulk.set_owners(session, mended)

    async def _insert_new(self, session: AsyncSession) -> dict[int, int]:
        for lead_id, target in self.held.items():
            if not provisional(target):
                self.new[lead_id].possible_duplicate_of = target
        for lead in self.new.values():  # as the batch's merges left it
            lead.__dict__["search_text"] = search_text_of(lead)
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
            values = shared_row(tuple(getattr(lead, name) for name in MATCH_COLUMNS))
            out[lead.id] = Known(lead.version, lead.uid, values, matcher.prepared(lead_id, values))
        return out

    def _took_turns(self) -> None:
        # A lead whose owner a later item gave before the rotation gave its turn's: the
        # item's line says it was overwritten from that turn's owner, as one by one.
        # (On PostgreSQL `_advance` may mend the turns after the lines are written: a
        # line then names the owner the turn was read to give.)
        for lead, line in self.took_turn:
            turn = self.turns.get(id(lead))
            if turn is None or "owner" not in line.get("filled", ()):
                continue
            line["filled"] = [name for name in line["filled"] if name != "owner"]
            line["overwritten"] = [*line["overwritten"], "owner"]
            line["values"]["owner"]["from"] = turn

    async def write(self, session: AsyncSession, now: datetime) -> None:
        """Insert the new leads, their keys, every arrival and history line; update the rest."""
        read = await self._route(session)
        self._took_turns()
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
        await self._hand_over(session)  # lead rows first, the rotations last (repository.py)
        if read is not None:
            await self._advance(session, read)

    async def _hand_over(self, session: AsyncSession) -> None:
        """The other leads on an address a merge took off a stored lead (its email replaced,
        `overwrite_fields`) are sent again if that lead held it (`hand_over_email`), as
        after a PATCH; only those locked with the rest (`sharing`). `handed_over`: a
        delivery is asked for."""
        for lead_id, before in self.holds.items():
            key_now = self.stored[lead_id].email_key
            if key_now != before.key:
                self.handed_over |= await hand_over_email(
                    session, self.rt.settings.crm, before, key_now, among=self.sharing
                )


def _columns(lead: Lead) -> dict[str, Any]:
    return {name: getattr(lead, name) for name in MATCH_COLUMNS}


def hold_evidence(match: Match[int]) -> dict[str, Any]:
    """Why an arrival is held for review, as its lead keeps it (`Lead.hold_evidence`):
    the match kind, the confidence and the comparison's explanation lines (reasons of
    fields, never their values)."""
    return {
        "match": _match_kind(match),
        "confidence": round(match.decision.score, 4),
        "reasons": match.decision.explain(),
    }


def duplicate_found(
    step: Step, fields: list[str], writer: IntakeWriter, uids: dict[int, str]
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
