"""Group commit for `POST /v1/leads`: concurrent single leads share one transaction.

Each request validates its lead on its own, then hands it to `IntakeGroups.submit` and
waits. One drain task takes every lead waiting (up to `leads.intake_group_max`, in
arrival order) and runs them through `intake_many` in one unit of work, with their
`Idempotency-Key` look-ups and records; each request answers only after that transaction
has committed. Under load a group pays one transaction, a fixed number of statements and
one delivery request instead of one each per lead; on SQLite, whose writers take turns
anyway, the write lock is held once per group instead of once per lead. A lone request
runs at once as a group of one: nothing waits for a group to fill (ADR 0009).

The outcome is the one the leads would get one after the other in arrival order
(`intake_many` matches each against the ones before it). A group never holds two leads
with one idempotency key, so the second sees the first's stored answer. When a group's
transaction fails, nothing of it was written, and each of its leads runs again alone, so
one lead's failure never fails another's request; unless the database itself failed (lost,
locked, out of connections): then every lead of the group gets that answer (503) at once,
rather than waiting out the same outage one after another.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Tracer
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db import unit_of_work
from cauce.core.errors import CauceError
from cauce.core.observability.trace_parent import traceparent_of
from cauce.core.web.idempotency import Fingerprint, IdempotencyStore
from cauce.leads.errors import IntakeBusy
from cauce.leads.schemas import LeadIn
from cauce.leads.service import LeadsRuntime, intake_many
from cauce.leads.views import created_view

log = structlog.get_logger("cauce.leads.intake_groups")


@dataclass(frozen=True, slots=True)
class Claim:
    """An `Idempotency-Key` of one request: the caller's scope, the key, the fingerprint."""

    scope: str
    key: str
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request answers: the status, the JSON body, whether it is a replay."""

    status: int
    body: Any
    replayed: bool = False


@dataclass(slots=True)
class _Arrival:
    lead_in: LeadIn
    actor: str | None
    claim: Claim | None
    future: asyncio.Future[Answer]
    # The submitting request's context: a group runs in its first request's context, so
    # its statements and the delivery job it defers join that request's trace.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    # The request's span, which the group's span links to; and the group's span, which
    # the request's span links to once the group is through.
    span: SpanContext = field(default_factory=lambda: trace.get_current_span().get_span_context())
    group_span: SpanContext | None = None
    queued: bool = True  # counted in `IntakeGroups.queued` (waiting, its request alive)


class IntakeGroups:
    """Commits concurrent single-lead intakes in groups (see the module docstring)."""

    def __init__(
        self,
        rt: LeadsRuntime,
        store: IdempotencyStore,
        max_group: int | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.rt = rt
        self.store = store
        self.tracer = tracer
        self.max_group = max_group or rt.settings.leads.intake_group_max
        self.max_waiting = rt.settings.leads.intake_queue_max
        self._waiting: deque[_Arrival] = deque()
        # Leads waiting whose requests are still there: the queue bound counts these (a
        # cancelled request stays in `_waiting` until the drain reaches it).
        self.queued = 0
        self._drain: asyncio.Task[None] | None = None
        self.groups = 0  # transactions committed or tried, for tests and metrics
        self.grouped = 0  # leads that went through them
        # Leads submitted, and of those the ones whose group is through (or that were
        # left out): what `through` waits on.
        self._submitted = 0
        self._through = 0
        self._moved: asyncio.Event | None = None  # set when `_through` grows (`through`)

    async def submit(self, lead_in: LeadIn, actor: str | None, claim: Claim | None) -> Answer:
        """Accept one validated lead; its answer once its group has committed.

        Raises what its own transaction raised (a database error, a reused key). A
        request cancelled before its group starts is left out of it. Refused at once
        (`IntakeBusy`, 503 with Retry-After) when `max_waiting` leads wait already: the
        database is not keeping up, and a longer queue would only make every lead late.
        """
        if self.queued >= self.max_waiting:
            self.rt.metrics.intake.labels("busy").inc()
            raise IntakeBusy(
                f"{self.queued} leads are waiting to be stored; "
                "try again in a moment or send them in batches (POST /v1/leads/batch)"
            )
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        arrival = _Arrival(lead_in, actor, claim, future)
        self._waiting.append(arrival)
        self.queued += 1
        self._submitted += 1
        if self._drain is None:
            # A fresh context: the drain outlives the request that started it.
            self._drain = asyncio.create_task(
                self._run_drain(), name="leads-intake-groups", context=contextvars.Context()
            )
        try:
            return await future
        finally:
            self._unqueue(arrival)  # if its request went away while it waited
            group = arrival.group_span
            if group is not None and group.trace_id != arrival.span.trace_id:
                # Another request's trace holds the group's statements: link to them.
                trace.get_current_span().add_link(group)

    def _unqueue(self, arrival: _Arrival) -> None:
        if arrival.queued:
            arrival.queued = False
            self.queued -= 1

    async def through(self) -> None:
        """Wait until the leads submitted so far are through their groups: a batch lets
        the single leads that came during one of its parts go before its next part
        (`batch_parts`, which bounds the wait)."""
        target = self._submitted
        while self._through < target:
            if self._moved is None:
                self._moved = asyncio.Event()
            await self._moved.wait()

    def _count_through(self, leads: int) -> None:
        self._through += leads
        if self._moved is not None:  # wake every waiter; the next wait takes a new one
            self._moved.set()
            self._moved = None

    async def aclose(self) -> None:
        """Wait for the leads already submitted to be committed."""
        if self._drain is not None:
            await asyncio.shield(self._drain)

    def _next_group(self) -> list[_Arrival]:
        group: list[_Arrival] = []
        claims: set[tuple[str, str]] = set()
        while self._waiting and len(group) < self.max_group:
            arrival = self._waiting[0]
            if arrival.future.done():  # its request was cancelled: nothing to do
                self._unqueue(self._waiting.popleft())
                self._count_through(1)
                continue
            claim = arrival.claim
            if claim is not None:
                if (claim.scope, claim.key) in claims:
                    break  # the same key again: it waits for the next group
                claims.add((claim.scope, claim.key))
            self._unqueue(arrival)
            group.append(self._waiting.popleft())
        return group

    async def _run_drain(self) -> None:
        try:
            while group := self._next_group():
                # Its own task, in the first request's context (see `_Arrival.context`).
                try:
                    await asyncio.create_task(self._commit(group), context=group[0].context)
                finally:
                    self._count_through(len(group))
        finally:
            self._drain = None
            for arrival in self._waiting:  # only when the drain itself was cancelled
                self._unqueue(arrival)
                arrival.future.cancel()
            self._count_through(len(self._waiting))
            self._waiting.clear()

    async def _commit(self, group: list[_Arrival]) -> None:
        self.groups += 1
        self.grouped += len(group)
        self.rt.metrics.intake_group.observe(len(group))
        try:
            if self.tracer is None:
                await self._commit_or_split(group)
            else:
                with self.tracer.start_as_current_span(
                    "leads.intake_group",
                    links=[Link(a.span) for a in group[1:] if a.span.is_valid],
                    attributes={"cauce.leads.group_size": len(group)},
                ) as span:
                    for arrival in group:
                        arrival.group_span = span.get_span_context()
                    await self._commit_or_split(group)
        finally:  # cancelled (shutdown): whoever still waits is told so
            for arrival in group:
                if not arrival.future.done():
                    arrival.future.cancel()

    async def _commit_or_split(self, group: list[_Arrival]) -> None:
        try:
            answers = await self._in_transaction(group)
        except Exception as exc:  # noqa: BLE001 - the requests' answer, whatever it is
            if len(group) == 1 or _whole_database(exc):
                for arrival in group:  # each retry alone would wait out the same outage
                    _settle(arrival, _own(exc))
                return
            log.warning(
                "leads.intake_group.retry_alone", leads=len(group), error=type(exc).__name__
            )
            for arrival in group:  # nothing was written: each lead on its own
                try:
                    _settle(arrival, await self._alone(arrival, first=arrival is group[0]))
                except Exception as alone:  # noqa: BLE001 - it is that request's answer
                    _settle(arrival, alone)
            return
        for arrival, answer in zip(group, answers, strict=True):
            _settle(arrival, answer)

    async def _alone(self, arrival: _Arrival, *, first: bool) -> Answer | Exception:
        """`arrival` in a transaction of its own, in its own request's context (its logs
        and statements carry its own request id and trace); the group's first request is
        the context this runs in already."""
        if first:
            return (await self._in_transaction([arrival]))[0]
        task = asyncio.create_task(self._in_transaction([arrival]), context=arrival.context)
        return (await task)[0]

    async def _in_transaction(self, group: list[_Arrival]) -> list[Answer | Exception]:
        """Run a group in one unit of work; per lead, its answer or its own refusal."""
        async with unit_of_work(self.rt.sessionmaker, short=True) as session:
            answers: list[Answer | Exception | None] = [None] * len(group)
            fresh: list[int] = []
            for i, arrival in enumerate(group):
                replay = await self._replay(session, arrival.claim)
                if replay is None:
                    fresh.append(i)
                else:
                    answers[i] = replay
            results = await intake_many(
                session,
                self.rt,
                [group[i].lead_in for i in fresh],
                actor=[group[i].actor for i in fresh],
                trace_parent=[traceparent_of(group[i].span) for i in fresh],
            )
            await session.flush()
            for i, result in zip(fresh, results, strict=True):
                status = 201 if result.outcome != "merged" else 200
                answer = Answer(status, created_view(result).model_dump(mode="json"))
                answers[i] = answer
                claim = group[i].claim
                if claim is not None:
                    await self.store.remember(
                        session, claim.scope, claim.key, claim.fingerprint, status, answer.body
                    )
        return [a for a in answers if a is not None]

    async def _replay(
        self, session: AsyncSession, claim: Claim | None
    ) -> Answer | Exception | None:
        """The stored answer of a key seen before, its refusal, or None for a new key."""
        if claim is None:
            return None
        try:
            stored = await self.store.lookup(session, claim.scope, claim.key, claim.fingerprint)
        except CauceError as exc:  # the key was first used with another body
            return exc
        if stored is None:
            return None
        return Answer(stored.status_code, stored.body, replayed=True)


def _whole_database(exc: Exception) -> bool:
    """A failure no lead caused: the database lost, locked or out of connections (the
    requests answer 503 and may retry), as opposed to one lead's data failing. A deadlock
    or a serialization failure is this transaction's alone: its leads run again alone."""
    if conflict(exc):
        return False
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeout) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


# PostgreSQL's deadlock_detected and serialization_failure.
_CONFLICTS = frozenset({"40P01", "40001"})


def conflict(exc: Exception) -> bool:
    """Whether PostgreSQL ended the transaction as a deadlock's victim or a serialization
    failure: nothing of it was written, and it may simply run again."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _CONFLICTS


def _own(exc: Exception) -> Exception:
    """A copy of `exc` for one request: each raises it in its own task, and a shared
    exception object would collect every task's traceback."""
    mine = copy.copy(exc)
    mine.__cause__, mine.__traceback__ = exc.__cause__, exc.__traceback__
    return mine


def _settle(arrival: _Arrival, outcome: Answer | BaseException) -> None:
    if arrival.future.done():  # its request went away; its lead is stored all the same
        return
    if isinstance(outcome, Answer):
        arrival.future.set_result(outcome)
    else:
        arrival.future.set_exception(outcome)
