"""A person's decision on a lead held for review (a possible duplicate).

`distinct`: another person after all; the hold is released and the lead delivered.
`duplicate`: the held lead is merged into another (by default the one it was held
against) by the rules intake merges an arrival by (`intake_merge.apply_merge`): empty
fields filled, every source kept, its email and phone among the other contacts, the later
consent. Its arrivals (`lead_sources`) move to that lead; it stays as a tombstone, its
personal data cleared as an erasure clears it (nothing to erase at the CRM: a held lead
was never delivered), `sync_status` "merged" and `possible_duplicate_of` naming the lead
it went into, so `GET` answers 410 `lead_merged` with that lead's id.

The CRM holder of a shared email (`delivery.email_holders`) is never a held lead: merging
one away, or releasing it, takes the address off no contact. A merge that overwrites the
target's own email (`leads.dedupe.overwrite_fields` naming it) takes it off the target:
the other leads on that address are sent again (`delivery.hand_over_email`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db.base import utcnow
from cauce.core.web.idempotency import move_subject
from cauce.leads import repository as repo
from cauce.leads import repository_lead as repo_lead
from cauce.leads.delivery import EmailHold, hand_over_email
from cauce.leads.errors import FieldError, LeadConflict, LeadInvalid, LeadNotHeld
from cauce.leads.intake_merge import MERGEABLE, apply_merge, history_changes
from cauce.leads.intake_writer import apply_score, lead_facts
from cauce.leads.matching import FieldChange, blocking_keys
from cauce.leads.matching.plan import OTHER_CONTACTS, other_contacts
from cauce.leads.models import Lead, LeadEvent
from cauce.leads.schemas_requests import LeadReviewIn
from cauce.leads.service import LeadsRuntime
from cauce.leads.service_edit import (
    MERGED,
    live_lead,
    make_tombstone,
    release_hold,
    route_held,
    tombstone_error,
)
from cauce.leads.tasks import request_delivery

HELD = "held"


async def review(
    session: AsyncSession, rt: LeadsRuntime, uid: str, decision: LeadReviewIn, actor: str | None
) -> Lead:
    """Apply a person's decision on the held lead `uid`; the lead that now holds its data
    (itself for `distinct`, the lead merged into for `duplicate`)."""
    if decision.decision == "distinct":
        lead = await live_lead(session, uid, for_update=True)
        _require_held(lead)
        # The line says which lead it was told apart from, and how sure the match was.
        line: dict[str, Any] = {"decision": "distinct"}
        if lead.possible_duplicate_of is not None:
            line["against"] = await session.scalar(
                select(Lead.uid).where(Lead.id == lead.possible_duplicate_of)
            )
        if lead.hold_evidence is not None:
            line["confidence"] = lead.hold_evidence.get("confidence")
        await release_hold(session, rt, lead, actor=actor, changes=line)
        return lead
    return await _merge_held(session, rt, uid, decision.into, actor)


def _require_held(lead: Lead) -> None:
    if lead.sync_status != HELD:
        raise LeadNotHeld(f"lead {lead.uid} is not held for review")


def _into_error(kind: str, detail: str) -> LeadInvalid:
    return LeadInvalid([FieldError(pointer="/into", detail=detail, type=kind)])


async def _target_id(session: AsyncSession, held: Lead, into: str | None) -> int:
    """The row id of the lead to merge `held` into: `into`, or the lead it is held against."""
    if into is None:
        if held.possible_duplicate_of is None:
            raise LeadConflict(
                f"lead {held.uid} is held against no lead now: name the lead to merge it "
                "into (`into`)",
                errors=[
                    FieldError(pointer="/into", detail="is required here", type="missing"),
                ],
            )
        return held.possible_duplicate_of
    if into == held.uid:
        raise _into_error("same_lead", "is the lead reviewed: a lead cannot merge into itself")
    target = await repo_lead.by_uid(session, into)
    if target is None:
        raise _into_error("lead_not_found", f"no lead with id {into}")
    return target.id


async def _live_target(session: AsyncSession, target: Lead | None, named: bool) -> Lead:
    """`target` if it is live; otherwise why not, at `/into` (422 when the body named the
    lead, 409 when it is the one the lead is held against, gone since)."""
    if target is not None and target.erased_at is None:
        return target
    if target is None:  # leads are never deleted; a foreign key could null the link
        kind, detail = "lead_not_found", "no such lead"
    else:
        gone = await tombstone_error(session, target)
        kind, detail = gone.code, gone.detail
    if named:
        raise _into_error(kind, detail)
    raise LeadConflict(
        f"the lead it is held against is gone ({detail}): name the lead to merge it into (`into`)",
        errors=[FieldError(pointer="/into", detail=detail, type=kind)],
    )


async def _merge_held(
    session: AsyncSession, rt: LeadsRuntime, uid: str, into: str | None, actor: str | None
) -> Lead:
    held = await live_lead(session, uid)
    _require_held(held)
    target_id = await _target_id(session, held, into)
    # Locks as intake takes them: the intake locks of the held lead's exact keys (an
    # arrival with its email waits, then finds the lead it went into), then both rows,
    # in id order (`leads_by_id`). Then everything is checked again, as committed now.
    await repo.lock_exact_keys(session, blocking_keys(repo.match_record(held)))
    # The leads held against it are re-pointed below: locked here with the two, in the
    # one id order every intake locks in (locked one by one later, a batch merging into
    # one of them and into the target could deadlock with this).
    holders = await repo_lead.held_against(session, held.id)
    locked = await repo.leads_by_id(session, {held.id, target_id, *holders})
    held = locked[held.id]
    if held.erased_at is not None:
        raise await tombstone_error(session, held)
    _require_held(held)
    if into is None and held.possible_duplicate_of != target_id:
        raise LeadConflict(f"lead {uid} changed while it was reviewed: review it again")
    target = await _live_target(session, locked.get(target_id), into is not None)
    target_hold = EmailHold.of(target)
    now = utcnow()
    values: dict[str, Any] = {name: getattr(held, name) for name in MERGEABLE}
    values["email_disposable"] = held.email_disposable
    values["email_free"] = held.email_free
    # Its status and owner too: a held lead a salesperson worked (`won`) keeps that in
    # the lead it goes into, by the rule an arrival's go by (`merge_sales_state`).
    values["status"] = held.status
    values["owner"] = held.owner
    changes, _ = apply_merge(target, values, rt, now)  # a held target stays held
    changes.extend(_absorb_other_contacts(target, held))
    # Its own email overwritten (by configuration): the leads on the old one take it.
    handed_over = await hand_over_email(session, rt.settings.crm, target_hold, target.email_key)
    released = target.possible_duplicate_of == held.id
    if released:
        # It was held against the lead now in it: nothing is left to decide about it.
        target.possible_duplicate_of = None
        target.hold_evidence = None
        target.sync_status = "pending"
    await repo_lead.move_sources(session, held.id, target.id)
    await repo_lead.hold_against(session, held.id, target.id)
    arrivals = await repo_lead.arrivals(session, target.id)
    score_before = target.score
    apply_score(target, rt.scorer.score(lead_facts(target, arrivals)))
    # Released, and given no owner while held: routed now, by its score as merged.
    routed = await route_held(session, rt, target) if released else {}
    await repo.replace_match_keys(session, target.id, blocking_keys(repo.match_record(target)))
    history = history_changes(changes)
    if "added" in history:
        history["added"] = list(dict.fromkeys(history["added"]))
    if routed:
        history["values"] = {**history.get("values", {}), **routed}
    if target.score != score_before:
        history.setdefault("values", {})["score"] = {"from": score_before, "to": target.score}
    history["merged_lead"] = held.uid
    history["decision"] = "duplicate"  # a person's review, not an arrival's match
    session.add(LeadEvent(lead_id=target.id, action="merged", changes=history, actor=actor, at=now))

    make_tombstone(held, MERGED, now)
    held.possible_duplicate_of = target.id
    held.hold_evidence = None
    await repo_lead.erase_personal_data(session, held.id)  # its keys, its history's changes
    await move_subject(session, held.uid, target.uid)  # stored answers showing its data
    review_line = {"decision": "duplicate", "into": target.uid}
    session.add(LeadEvent(lead_id=held.id, action="reviewed", changes=review_line, actor=actor))
    rt.known.forget(held.id)  # no copy of its match fields stays in this process
    if target.sync_status == "pending" or handed_over:
        await request_delivery(session, rt.queue, rt.settings)
    return target


def _absorb_other_contacts(target: Lead, held: Lead) -> list[FieldChange]:
    """The held lead's own other contacts (arrivals merged into it while it was held)
    join the target's, as each arrival's would have (`other_contacts`)."""
    changes: list[FieldChange] = []
    for field, column in OTHER_CONTACTS:
        for value in (getattr(held, column) or "").split():
            names = ("email", "phone", "phone_extension", column)
            state = {name: getattr(target, name) for name in names}
            for changed, listed in other_contacts(state, state, {field: value}).items():
                changes.append(FieldChange(changed, "appended", getattr(target, changed), listed))
                setattr(target, changed, listed)
    return changes
