"""Lead intake: de-duplicate, merge or create, score, route, and ask for a CRM delivery.

Everything happens on the caller's session, so the lead, its history and the delivery
job are committed together by the request (or import job) boundary, or not at all.
Edits, erasure and queries live in `service_edit.py`; the rows an intake writes are built
in `intake_writer.py`, and its candidates read and kept in `candidates.py`.

One lead and a batch take the same path (`_intake`): the members of every item's blocking
keys are read at once, then the candidates each item will be compared with (read again
only for an item whose candidates the batch's earlier items changed), matched in memory
(against stored leads and the batch's earlier items, so the outcome is the one
sequential intake would give), and the new rows are written with bulk inserts.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import Settings
from cauce.core.db.base import utcnow
from cauce.core.jobs.ports import JobQueue
from cauce.core.observability.trace_parent import current_traceparent
from cauce.leads import repository as repo
from cauce.leads.candidates import hold_on_commit, read_candidates
from cauce.leads.errors import IntakeBusy
from cauce.leads.intake_merge import SCALAR_FIELDS, is_withdrawal, overwrites_email
from cauce.leads.intake_writer import (
    DuplicateFound,
    Incoming,
    IntakeWriter,
    Outcome,
    Step,
    duplicate_found,
)
from cauce.leads.matching import Verdict
from cauce.leads.matching.known import KnownLeads
from cauce.leads.matching.plan import (
    MATCH_COLUMNS,
    BatchMatcher,
    BlockView,
    match_values,
    prepared_row,
    provisional,
    stored_keys,
)
from cauce.leads.metrics import LeadsMetrics, count_on_commit
from cauce.leads.models import Lead
from cauce.leads.schemas import Consent, LeadIn
from cauce.leads.scoring import PointsModel, Score
from cauce.leads.tasks import request_delivery

if TYPE_CHECKING:
    from cauce.leads.intake_groups import IntakeGroups

__all__ = [
    "DuplicateFound",
    "IntakeResult",
    "LeadsRuntime",
    "Pace",
    "Scorer",
    "consent_record",
    "incoming_values",
    "intake",
    "intake_many",
]

log = structlog.get_logger("cauce.leads.service")


class Scorer(Protocol):
    """The points model or a learned model: facts in, a score with reasons out."""

    def score(self, facts: Mapping[str, Any]) -> Score:
        """Score one lead's facts."""
        ...


class Recently:
    """When something last happened (the monotonic clock), and whether it was lately."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at = -math.inf

    def note(self) -> None:
        """It happens now."""
        self._at = time.monotonic()

    def within(self, seconds: float) -> bool:
        """Whether it happened in the last `seconds`."""
        return time.monotonic() - self._at <= seconds


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
    # Filling `known` at start-up (`candidates.warm`), while it runs.
    warming: asyncio.Task[int | None] | None = None
    # The last `POST /v1/leads` of this process: large batches commit in parts while
    # single leads come, so they wait for a part, not a whole batch (`batch_parts`).
    singles: Recently = field(default_factory=Recently)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """The lead that now holds the data, and how it got there."""

    lead: Lead
    outcome: Outcome
    score: Score
    duplicate: DuplicateFound | None = None
    # The lead's status and owner as this item left them: a later item of its batch may
    # change both (`merge_sales_state`), and each item answers as if sent on its own.
    status: str = "new"
    owner: str | None = None


# A batch's CPU work (building arrivals, deciding, building rows) hands the event loop a
# turn at least this often, so /healthz, reads and other requests are served meanwhile
# instead of waiting for the whole batch (a 1,000-lead batch is 0.5-1 s of CPU at 20k
# stored leads, several seconds at 200k). Every `_PACE_ITEMS` items (a fixed count: the
# turns do not depend on the machine's pace), or sooner after `_PACE_SECONDS` of work.
# A turn costs ~10 us; a group of single leads (up to 100) takes a few. A request waits
# for one slice of a batch at each of its own turns (parsing, validating, its group...):
# slices of 20 ms kept a single lead ~0.2 s behind a running batch, 5 ms ~0.05 s, and
# the batch's pace is the same (benchmarks/leads_batch_interleave.py).
# On SQLite the turns after the first statement are taken holding the write lock (the
# intake's unit of work took it, and must: its reads decide its writes): requests that
# do not write are served in between, other writers wait for the commit (a large batch
# commits in parts while single leads come: `batch_parts`).
_PACE_ITEMS = 25
_PACE_SECONDS = 0.005


class Pace:
    """Hands the event loop a turn every `items` calls, or once `seconds` have passed
    since the last one: `await pace()` once per item of a long loop."""

    __slots__ = ("_count", "_items", "_seconds", "_since")

    def __init__(self, items: int = _PACE_ITEMS, seconds: float = _PACE_SECONDS) -> None:
        self._items = items
        self._seconds = seconds
        self._count = 0
        self._since = time.perf_counter()

    async def __call__(self) -> None:
        """Count one item; take a turn when it is time."""
        self._count += 1
        if self._count >= self._items or time.perf_counter() - self._since >= self._seconds:
            await asyncio.sleep(0)
            self._count = 0
            self._since = time.perf_counter()


def incoming_values(lead_in: LeadIn, *, live: bool = True) -> dict[str, Any]:
    """The stored form of a validated lead (`live`: sent now, not read from a file)."""
    values: dict[str, Any] = {name: getattr(lead_in, name) for name in SCALAR_FIELDS}
    values["source"] = str(lead_in.source)
    values["status"] = str(lead_in.status)
    values["owner"] = lead_in.owner
    values["utm"] = lead_in.utm.model_dump(exclude_none=True) if lead_in.utm else {}
    values["consent"] = consent_record(lead_in.consent, values["source"], live=live)
    values["custom_fields"] = dict(lead_in.custom_fields)
    values["email_disposable"] = lead_in.is_disposable_email
    values["email_free"] = lead_in.is_free_email
    return values


def consent_record(
    consent: Consent | None, source: str, *, live: bool = True
) -> dict[str, Any] | None:
    """The stored proof of `consent`: what the lead sent, with the lead's `source` and the
    time Cauce received it in place of a `source` or `given_at` left out (as the schema
    promises: a marketing yes without a time or a place proves little).

    Not `live` (a row of an imported file), a "yes" without its time keeps none: the
    file says a person agreed once, not when, and stamping the import's time made a
    year-old list's "yes" newer than the person's later "no" (a merge keeps the later
    consent; one without a time is the older: `matching.merge`). A "no" is stamped all
    the same: a withdrawal counts from when Cauce learns of it, so an unsubscribe list
    (`Baja`) overrides a "yes" it received before."""
    if consent is None:
        return None
    filled: dict[str, Any] = {}
    if consent.given_at is None and (live or consent.marketing is False):
        filled["given_at"] = utcnow()
    if consent.source is None:
        filled["source"] = source
    return (consent.model_copy(update=filled) if filled else consent).model_dump(mode="json")


def _incoming(
    lead_in: LeadIn, actor: str | None, trace_parent: str | None, live: bool = True
) -> Incoming:
    values = incoming_values(lead_in, live=live)
    features = prepared_row(tuple(values.get(name) for name in MATCH_COLUMNS))
    return Incoming(values, features, stored_keys(features), actor, trace_parent)


async def _decide(
    matcher: BatchMatcher,
    items: Sequence[Incoming],
    policy: str,
    look_up: Callable[[set[int]], Awaitable[None]],
    pace: Pace | None = None,
) -> list[Step]:
    pace = pace or Pace()
    steps: list[Step] = []
    for item in items:
        # A turn for other requests: nothing they do changes what this intake read (its
        # transaction holds SQLite's write lock; on PostgreSQL its exact keys are locked,
        # and the leads it merges into are locked and checked again in `_intake`).
        await pace()
        # The items before may have changed which stored leads are this one's strongest
        # candidates (`blocking.strongest`): read any not read yet.
        if missing := matcher.unknown(item.keys):
            await look_up(set(missing))
        match = matcher.best(item.features, item.keys)
        if match is not None and match.decision.verdict is Verdict.DUPLICATE and policy == "merge":
            matcher.merge_into(match.id, match_values(item.values))
            steps.append(Step("merged", match.id, match))
            continue
        new_id = matcher.file(match_values(item.values), item.features, item.keys)
        outcome: Outcome = "held_for_review" if match is not None else "created"
        steps.append(Step(outcome, new_id, match))
    return steps


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
    trace_parent: Sequence[str | None] | None = None,
    *,
    live: bool = True,
) -> list[IntakeResult]:
    """Accept validated leads in order, each as `intake` would after the ones before it.

    Call it once per transaction: it takes the intake locks of the leads' exact keys
    (`repository.lock_exact_keys`) in one go, in an order a second call would not keep.

    Two copies of one new lead in a batch give one lead and one merge, as they would one
    after the other. `actor` is who sent them all, or one actor per item (requests
    committed as a group, `intake_groups.py`). `trace_parent` is each item's request's
    span (a group's), which its CRM delivery links to; by default the current span.
    `live` is false for rows of an imported file (`consent_record`).
    Returns one result per item, in order.
    """
    if not items:
        return []
    actors = [actor] * len(items) if actor is None or isinstance(actor, str) else actor
    parents = trace_parent or [current_traceparent()] * len(items)
    pace = Pace()
    incoming: list[Incoming] = []
    for lead_in, by, parent in zip(items, actors, parents, strict=True):
        await pace()  # before the first statement: nothing held yet (but a key's look-up)
        incoming.append(_incoming(lead_in, by, parent, live))
    results = await _intake(session, rt, incoming, pace)
    count_on_commit(session, rt.metrics, (result.outcome for result in results))
    return results


# From this many items on, intake reads every lead under their keys at once (a batch).
_READ_EVERY_MEMBER = 64


# How many candidates intake reads (and prepares, when not cached) between two turns of
# the event loop (`Pace`).
_READ_SLICE = 256


# How many times intake decides again when leads it was merging into were erased (or
# merged by a review) between its read of them and its lock on them; past that it gives up.
_DECISIONS = 3


async def _intake(
    session: AsyncSession, rt: LeadsRuntime, items: list[Incoming], pace: Pace
) -> list[IntakeResult]:
    for _ in range(_DECISIONS):
        matcher, steps, uids = await _plan(session, rt, items, pace)
        targets = {s.lead_id for s in steps if s.outcome == "merged" and not provisional(s.lead_id)}
        # The stored leads new ones are held against: locked too, so a review cannot
        # merge one away (or an erasure remove it) before the new lead is stored.
        held = (s.match.id for s in steps if s.outcome == "held_for_review" and s.match is not None)
        held_against = {lead_id for lead_id in held if not provisional(lead_id)}
        behind = await _behind_held(session, steps, items)
        sharing = await _sharing_addresses(session, rt, steps, items, targets)
        locked = targets | held_against | set(behind.values()) | sharing
        stored = await repo.leads_by_id(session, locked)
        gone = {i for i in locked if i not in stored or stored[i].erased_at is not None}
        # A lead only a held one points at, gone: the "no" stays with the held lead. One
        # only sharing an address, gone: nothing to hand over to it.
        gone -= (set(behind.values()) | sharing) - targets - held_against
        behind = {h: t for h, t in behind.items() if t in stored and stored[t].erased_at is None}
        if not gone:
            merged_into = {i: stored[i] for i in targets}
            # Held against by an arrival carrying a marketing "no", or by a held lead such
            # an arrival merges into: it may reach them.
            against = {
                s.match.id: stored[s.match.id]
                for s, item in zip(steps, items, strict=True)
                if s.outcome == "held_for_review"
                and s.match is not None
                and s.match.id in held_against
                and is_withdrawal(item.values)
            }
            against.update(
                (target, stored[target])
                for held_id, target in behind.items()
                if provisional(held_id)
                or (
                    stored[held_id].sync_status == "held"
                    and stored[held_id].possible_duplicate_of == target
                )
            )
            return await _write(
                session, rt, items, matcher, steps, uids, merged_into, against, sharing, pace
            )
        # The candidates were read before the lock, as committed then: one of them was
        # erased (or merged by a review) since. Nothing is written yet, so decide again:
        # the next read leaves it out. Merging into it would put an arrival's personal
        # data into a tombstone; holding against it, leave a lead nobody can review.
        for lead_id in gone:
            rt.known.forget(lead_id)
        log.info("leads.intake.target_gone", leads=len(gone))
    raise IntakeBusy("the leads this intake matched keep changing; try again in a moment")


async def _sharing_addresses(
    session: AsyncSession,
    rt: LeadsRuntime,
    steps: list[Step],
    items: list[Incoming],
    targets: set[int],
) -> set[int]:
    """The other leads on the addresses merges may take off stored leads (`overwrite_fields`
    naming `email`), read before the lock to be locked with the rest, in id order: the
    hand-over (`IntakeWriter._hand_over`) may make them pending, and a lead updated
    unlocked, after the rotations were locked, deadlocked two intakes on PostgreSQL.
    Nothing read unless the settings overwrite emails and an arrival brings another."""
    if not targets or not overwrites_email(rt.settings.leads.dedupe.overwrite_fields):
        return set()
    coming = {
        step.lead_id: email
        for step, item in zip(steps, items, strict=True)
        if step.lead_id in targets and (email := item.values.get("email"))
    }
    return await repo.sharing_addresses(session, coming) if coming else set()


async def _behind_held(
    session: AsyncSession, steps: list[Step], items: list[Incoming]
) -> dict[int, int]:
    """The held leads that arrivals carrying a marketing "no" merge into, each with the
    stored lead it is held against (read before the lock, to be locked with the others
    in one order; checked again once locked): the "no" may reach that lead
    (`IntakeWriter._withdraw`). A held lead of this batch is held against its step's
    match. Nothing read unless such an arrival merges into a stored lead."""
    created = {s.lead_id: s.match.id for s in steps if s.outcome == "held_for_review" and s.match}
    behind: dict[int, int] = {}
    stored: set[int] = set()
    for step, item in zip(steps, items, strict=True):
        if step.outcome != "merged" or not is_withdrawal(item.values):
            continue
        if not provisional(step.lead_id):
            stored.add(step.lead_id)
        elif (target := created.get(step.lead_id)) is not None and not provisional(target):
            behind[step.lead_id] = target
    behind.update(await repo.held_against(session, stored))
    return behind


async def _plan(
    session: AsyncSession, rt: LeadsRuntime, items: list[Incoming], pace: Pace
) -> tuple[BatchMatcher, list[Step], dict[int, str]]:
    """Every item's decision against the stored leads (read now) and the items before it."""
    dedupe = rt.settings.leads.dedupe
    # The members of every item's keys at once (one more than a usable block may have
    # tells a key is too common), then the match fields of the candidates compared.
    all_keys = frozenset().union(*(item.keys for item in items))
    await repo.lock_exact_keys(session, all_keys)  # before any read (see the function)
    found = await repo.key_members(session, all_keys, dedupe.max_block_size + 1)
    view = BlockView(found.members, dedupe.max_block_size, found.too_common, dedupe.max_candidates)
    matcher = BatchMatcher(view, dedupe)
    uids: dict[int, str] = {}

    async def look_up(wanted: set[int]) -> None:
        # In slices, with a turn between them: preparing candidates the cache does not
        # hold costs ~0.1 ms each, and a batch may read thousands.
        ordered = sorted(wanted)
        for start in range(0, len(ordered), _READ_SLICE):
            if start:
                await pace()
            part = set(ordered[start : start + _READ_SLICE])
            for lead_id, known in sorted((await read_candidates(session, rt.known, part)).items()):
                matcher.know(lead_id, known.values, known.features)
                uids[lead_id] = known.uid
        matcher.looked_up(wanted)

    if len(items) >= _READ_EVERY_MEMBER:
        # Many items: one read of every lead under their keys costs less than working out
        # each item's strongest candidates here and again when it is decided.
        await look_up(view.usable_members())
    else:
        await look_up(set().union(*(matcher.unknown(item.keys) for item in items)))
    steps = await _decide(matcher, items, dedupe.on_duplicate, look_up, pace)
    return matcher, steps, uids


async def _write(
    session: AsyncSession,
    rt: LeadsRuntime,
    items: list[Incoming],
    matcher: BatchMatcher,
    steps: list[Step],
    uids: dict[int, str],
    stored: dict[int, Lead],
    against: dict[int, Lead],
    sharing: set[int],
    pace: Pace,
) -> list[IntakeResult]:
    """Write the decisions: `stored` holds the leads merged into, `against` those held
    against by an arrival with a marketing "no" (`IntakeWriter._withdraw`), `sharing`
    the ids of the others on the addresses merges may replace, all locked."""
    arrivals = await repo.arrivals_of(session, set(stored) | set(against))
    # The emails merges may give a stored lead that has another (or none): whose they are.
    giving = {
        email
        for step, item in zip(steps, items, strict=True)
        if step.outcome == "merged"
        and (email := item.values.get("email"))
        and (provisional(step.lead_id) or stored[step.lead_id].email != email)
    }
    owners = await repo.email_owners(session, giving)
    writer = IntakeWriter(rt, stored, arrivals, against, owners, sharing)
    now = utcnow()
    done: list[tuple[Step, Lead, Score, list[str]]] = []
    as_of: list[tuple[str, str | None, bool]] = []  # status, owner, owner still to come
    for step, item in zip(steps, items, strict=True):
        await pace()  # the rows are this intake's own: nobody else sees them meanwhile
        if step.outcome == "merged":
            done.append((step, *writer.merge(step, item, now)))
        else:
            done.append((step, *writer.create(step, item, now), []))
        lead = done[-1][1]
        as_of.append((lead.status, lead.owner, writer.owner_coming(lead)))
    await writer.write(session, now)
    hold_on_commit(session, rt.known, writer.written(matcher))
    delivering = writer.withdrawn or writer.handed_over
    if delivering or any(step.outcome != "held_for_review" for step in steps):
        await request_delivery(session, rt.queue, rt.settings)
    return [
        IntakeResult(
            lead,
            step.outcome,
            score,
            duplicate_found(step, fields, writer, uids),
            status,
            writer.turn_owner(lead) if coming else owner,
        )
        for (step, lead, score, fields), (status, owner, coming) in zip(done, as_of, strict=True)
    ]
