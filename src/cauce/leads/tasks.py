"""Job handlers of the leads context: CRM delivery, re-delivery, erasure, CSV imports.

Handlers are idempotent: a job may run again after a crash (DESIGN.md §1).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog
from opentelemetry.trace import Tracer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import Settings
from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JobQueue, JsonDict, PermanentJobError, RetryLater
from cauce.core.jobs.registry import TaskRegistry
from cauce.leads.delivery import (
    CRM_QUEUE,
    DELIVER_TASK,
    ERASE_TASK,
    REDELIVER_TASK,
    DeliveryReport,
    OnErased,
    deliver,
    delivery_dedupe_key,
    delivery_lock,
    resend_contact_of,
)
from cauce.leads.matching.known import KnownLeads
from cauce.leads.metrics import LeadsMetrics
from cauce.leads.models import Lead
from cauce.leads.ports import (
    OBJECT_ID,
    CrmClient,
    CrmKey,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
)
from cauce.leads.webhooks import INBOUND_TASK, crm_erasure, process_inbox

log = structlog.get_logger("cauce.leads.tasks")

# Deliveries wait out outages and rate limits as postponements (not counted); a CRM that
# keeps failing still ends in `failed` after this many real failures, replayable.
DELIVERY_POLICY = RetryPolicy(
    max_attempts=10, base_seconds=2.0, cap_seconds=300.0, fail_on=(CrmRejected,)
)
# A CRM call that failed after its in-call retries, with the circuit still closed (an
# unlucky run of 5xx): look again soon. A real outage opens the circuit, whose own open
# period then sets the next try (CrmUnavailable.retry_at), so this never hammers a CRM.
OUTAGE_RECHECK = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class LeadsTaskDeps:
    """What the leads handlers need, built by the composition root."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    crm: CrmClient | None
    metrics: LeadsMetrics | None = None
    # The process's prepared candidates (`LeadsRuntime.known`): an erasure forgets the
    # lead there too.
    known: KnownLeads | None = None
    # Spans around CRM requests, linked to their leads' own (`delivery.deliver`).
    tracer: Tracer | None = None


def _counting(metrics: LeadsMetrics | None, crm: str) -> Callable[[DeliveryReport], None]:
    """A delivery's `on_batch`: counts the leads each batch synced, as it records them (a
    run that ends in an outage has still synced the batches before it)."""
    counted = 0

    def count(report: DeliveryReport) -> None:
        nonlocal counted
        if metrics is not None and report.synced > counted:
            metrics.synced.labels(crm).inc(report.synced - counted)
        counted = report.synced

    return count


async def request_delivery(session: AsyncSession, queue: JobQueue, settings: Settings) -> None:
    """Ask for a delivery in the caller's transaction (at most one waits per account)."""
    if settings.crm.provider == "none":
        return
    account = settings.crm.account
    await queue.defer(
        session,
        DELIVER_TASK,
        {"account": account},
        queue=CRM_QUEUE,
        lock=delivery_lock(account),
        dedupe_key=delivery_dedupe_key(account),
    )


async def request_erasure(
    session: AsyncSession, queue: JobQueue, settings: Settings, uid: str
) -> None:
    """Carry an erasure to the CRM (by Cauce's id property: no personal data in the job)."""
    if settings.crm.provider == "none":
        return
    account = settings.crm.account
    await queue.defer(
        session,
        ERASE_TASK,
        {"account": account, "uid": uid},
        queue=CRM_QUEUE,
        lock=delivery_lock(account),
    )


async def erase_again(
    session: AsyncSession, queue: JobQueue, settings: Settings, lead_ids: list[int]
) -> None:
    """Carry the erasure of these leads to the CRM again, in `session`'s transaction: a
    delivery sent them there after they were erased (`deliver`'s `on_erased`)."""
    for lead_id in lead_ids:
        uid = await session.scalar(select(Lead.uid).where(Lead.id == lead_id))
        if uid is not None:
            log.warning("crm.delivery.erased_lead_sent", lead=uid)
            await request_erasure(session, queue, settings, uid)


def _later(exc: CrmThrottled | CrmUnavailable) -> RetryLater:
    if isinstance(exc, CrmThrottled):
        return RetryLater(exc.until, f"CRM rate limit {exc.policy}".strip())
    at = exc.retry_at or utcnow() + OUTAGE_RECHECK
    return RetryLater(at, f"CRM unavailable: {exc}")


def register_leads_tasks(registry: TaskRegistry, deps: LeadsTaskDeps) -> None:
    """Register the leads handlers on `registry`."""
    crm_settings = deps.settings.crm
    rng = random.Random()  # noqa: S311 - spreading retries, not secrets

    def crm() -> CrmClient:
        if deps.crm is None:
            raise PermanentJobError("no CRM is configured (CAUCE_CRM__PROVIDER)")
        return deps.crm

    def erasing_again(ctx: JobContext) -> OnErased:
        async def on_erased(session: AsyncSession, lead_ids: list[int]) -> None:
            await erase_again(session, ctx.queue_port, deps.settings, lead_ids)

        return on_erased

    async def deliver_handler(ctx: JobContext, payload: JsonDict) -> None:
        try:
            client = crm()
            report = await deliver(
                deps.sessionmaker,
                client,
                crm_settings,
                on_batch=_counting(deps.metrics, client.name),
                on_erased=erasing_again(ctx),
                tracer=deps.tracer,
            )
        except (CrmThrottled, CrmUnavailable) as exc:
            raise _later(exc) from exc
        if report.failed_for_good:
            await ctx.queue_port.defer(
                ctx.session,
                REDELIVER_TASK,
                {"lead_ids": report.failed_for_good},
                queue=CRM_QUEUE,
                lock=delivery_lock(crm_settings.account),
            )
        if report.out_of_time:
            await request_delivery(ctx.session, ctx.queue_port, deps.settings)
        if report.retry_later:
            # Some records failed for a passing reason: run again soon, spread out.
            delay = timedelta(seconds=rng.uniform(1.0, 5.0))
            raise RetryLater(utcnow() + delay, f"{len(report.retry_later)} records to retry")

    async def redeliver_handler(ctx: JobContext, payload: JsonDict) -> None:
        ids = [int(i) for i in payload.get("lead_ids", [])]
        try:
            client = crm()
            report = await deliver(
                deps.sessionmaker,
                client,
                crm_settings,
                only=ids,
                on_batch=_counting(deps.metrics, client.name),
                on_erased=erasing_again(ctx),
                tracer=deps.tracer,
            )
        except (CrmThrottled, CrmUnavailable) as exc:
            raise _later(exc) from exc
        if report.failed_for_good:
            raise PermanentJobError(
                f"the CRM refused leads {report.failed_for_good}; fix them (PATCH) or replay"
            )

    async def erase_handler(ctx: JobContext, payload: JsonDict) -> None:
        uid = str(payload["uid"])
        async with unit_of_work(deps.sessionmaker) as session:
            crm_id = await session.scalar(select(Lead.crm_id).where(Lead.uid == uid))
        client = crm()
        try:
            found = await client.delete(CrmKey(crm_settings.cauce_id_property, uid))
            # Not found by its Cauce id: the contact it was synced to may have been taken
            # over by another lead with its email, arriving after the erasure and upserted
            # (keyed by email) before this job ran, its Cauce id with it. That contact goes
            # too, by the CRM's own id.
            gone = (
                not found and crm_id is not None and await client.delete(CrmKey(OBJECT_ID, crm_id))
            )
        except (CrmThrottled, CrmUnavailable) as exc:
            raise _later(exc) from exc
        if gone:
            async with unit_of_work(deps.sessionmaker) as session:
                # Such a lead's contact is gone with the erased one's data: it is sent
                # again, as a new contact, with only its own.
                if await resend_contact_of(session, str(crm_id)):
                    await request_delivery(session, ctx.queue_port, deps.settings)

    async def inbound_handler(ctx: JobContext, payload: JsonDict) -> None:
        # A GDPR deletion in the CRM erases the lead here too, as the API does.
        erase = crm_erasure(deps.settings, deps.sessionmaker, ctx.queue_port, deps.known)
        # Chunks in their own transactions: a long backlog commits as it goes.
        while True:
            async with unit_of_work(deps.sessionmaker) as session:
                if await process_inbox(session, erase=erase) == 0:
                    return

    registry.task(DELIVER_TASK, queue=CRM_QUEUE, retry=DELIVERY_POLICY)(deliver_handler)
    registry.task(INBOUND_TASK, queue=CRM_QUEUE)(inbound_handler)
    registry.task(REDELIVER_TASK, queue=CRM_QUEUE, retry=DELIVERY_POLICY)(redeliver_handler)
    registry.task(ERASE_TASK, queue=CRM_QUEUE, retry=DELIVERY_POLICY)(erase_handler)
