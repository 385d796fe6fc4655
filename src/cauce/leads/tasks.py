"""Job handlers of the leads context: CRM delivery, re-delivery, erasure, CSV imports.

Handlers are idempotent: a job may run again after a crash (DESIGN.md §1).

An erasure's `crm.erase` job keeps its tombstone's `sync_status` (`sync_backlog`:
ERASING, ERASED, ERASE_FAILED) up to date: the failed job is purged after
`jobs.retention_failed_days`, the tombstone stays, and `cauce leads erasures --retry`
queues it again (`retry_erasures`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import structlog
from opentelemetry.trace import Tracer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import Settings
from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.http.errors import UpstreamStatusError
from cauce.core.jobs.db_analyze import request_analyze
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import (
    JobContext,
    JobFilter,
    JobQueue,
    JobStatus,
    JsonDict,
    PermanentJobError,
    RetryLater,
)
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import budget_state
from cauce.leads.adapters.pipedrive import CREATE_SETTLE_SECONDS
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
    CrmDeletion,
    CrmKey,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    CrmWithMerges,
)
from cauce.leads.sync_backlog import ERASE_FAILED, ERASED, ERASING, OWED
from cauce.leads.webhooks import INBOUND_TASK, crm_erasure, process_inbox
from cauce.leads.webhooks_purge import register_inbox_purge

log = structlog.get_logger("cauce.leads.tasks")

# Deliveries wait out outages and rate limits as postponements (not counted); a CRM that
# keeps failing still ends in `failed` after this many real failures, replayable.
DELIVERY_POLICY = RetryPolicy(
    max_attempts=10, base_seconds=2.0, cap_seconds=300.0, fail_on=(CrmRejected,)
)
# An erasure's: the same. Its handler reads it too, to tell its job's last attempt (the
# tombstone then says the erasure failed, `ERASE_FAILED`), a postponement refused past
# `max_postponements` included.
ERASE_POLICY = DELIVERY_POLICY
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


# The tables an erasure clears values in (`service_edit.make_tombstone`,
# `erase_personal_data`, `forget_subject`), analyzed after it on PostgreSQL
# (`request_analyze`: their statistics hold column values).
ERASED_TABLES = ("leads", "lead_sources", "lead_match_keys", "lead_history", "idempotency_keys")


async def request_erasure(
    session: AsyncSession,
    queue: JobQueue,
    settings: Settings,
    uid: str,
    *,
    crm_gone: bool = False,
) -> None:
    """Carry an erasure to the CRM (by Cauce's id property: no personal data in the job).

    `crm_gone`: the CRM deleted the contact itself (a GDPR deletion there): the job only
    checks nothing is left, and its failure owes the CRM nothing (the tombstone stays
    ERASED)."""
    if settings.crm.provider == "none":
        return
    account = settings.crm.account
    payload: JsonDict = {"account": account, "uid": uid}
    if crm_gone:
        payload["crm_gone"] = True
    await queue.defer(
        session,
        ERASE_TASK,
        payload,
        queue=CRM_QUEUE,
        lock=delivery_lock(account),
    )


async def erase_again(
    session: AsyncSession, queue: JobQueue, settings: Settings, lead_ids: list[int]
) -> None:
    """Carry the erasure of these leads to the CRM again, in `session`'s transaction: a
    delivery sent them there after they were erased (`deliver`'s `on_erased`). Their
    tombstones say so (ERASING) until the job is done."""
    for lead_id in lead_ids:
        uid = await session.scalar(select(Lead.uid).where(Lead.id == lead_id))
        if uid is not None:
            log.warning("crm.delivery.erased_lead_sent", lead=uid)
            await session.execute(
                update(Lead)
                .where(
                    Lead.id == lead_id,
                    Lead.erased_at.is_not(None),
                    Lead.sync_status.in_((ERASED, ERASE_FAILED)),
                )
                .values(sync_status=ERASING, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            await request_erasure(session, queue, settings, uid)


# A CRM's error category as HubSpot words it (`MISSING_SCOPES`, `VALIDATION_ERROR`): kept
# on a tombstone only in this shape, as its error text may quote the contact.
_CATEGORY = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
_HTTP_STATUS = re.compile(r"\bHTTP ([1-5][0-9]{2})\b")
NO_CRM = "no CRM is configured (CAUCE_CRM__PROVIDER)"


def _upstream_error(exc: BaseException) -> UpstreamStatusError | None:
    """The HTTP error an adapter's error was raised from, if any."""
    seen: BaseException | None = exc
    for _ in range(8):
        if isinstance(seen, UpstreamStatusError):
            return seen
        if seen is None:
            return None
        seen = seen.__cause__ or seen.__context__
    return None


def _category(body: bytes) -> list[str]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(parsed, dict):
        return []
    for name in ("category", "errorType"):
        value = parsed.get(name)
        if isinstance(value, str) and _CATEGORY.fullmatch(value):
            return [value]
    return []


def erasure_failure(exc: BaseException, crm: str, attempts: int) -> str:
    """Why an erasure failed for good, as its tombstone keeps it (`last_sync_error`): the
    CRM, and for a refusal the HTTP status and the CRM's error category
    (`hubspot refused: HTTP 403 MISSING_SCOPES`), else the error's type and the attempts
    made. Never an error's text: a CRM's may quote the contact (`make_tombstone`)."""
    if isinstance(exc, CrmRejected):
        upstream = _upstream_error(exc)
        if upstream is not None:
            words = [f"HTTP {upstream.status}", *_category(upstream.body)]
        elif (status := _HTTP_STATUS.search(str(exc))) is not None:
            words = [f"HTTP {status.group(1)}"]
        else:
            cause = exc.__cause__ or exc.__context__
            words = [type(cause).__name__] if cause is not None else []
        return " ".join([f"{crm} refused:" if words else f"{crm} refused", *words])
    return f"{crm}: {type(exc).__name__}, {attempts} attempt{'' if attempts == 1 else 's'}"


# Why an erasure's job asks to run later when the CRM found nothing (`erase_at_crm`).
CREATE_MAY_NOT_SHOW = "a create of the lead may not show in the CRM yet"


def _times(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def erasure_gave_up(exc: RetryLater, crm: str, postponed: int, attempts: int) -> str:
    """Why an erasure failed for good after waiting more often than its task allows (the
    runner took its last `RetryLater` as a failure, on its last attempt), as its tombstone
    keeps it: what the CRM kept answering, by kind only (`erasure_failure`), and the
    postponements and attempts the job spent."""
    cause = exc.__cause__
    if isinstance(cause, CrmThrottled):
        what = f"{crm} kept rate-limiting (HTTP 429)"
    elif isinstance(cause, CrmUnavailable):
        what = f"{crm} kept being unavailable (5xx, timeout or open circuit)"
    elif exc.reason == CREATE_MAY_NOT_SHOW:
        what = f"{crm}: {CREATE_MAY_NOT_SHOW}"
    else:
        what = f"{crm}: {type(cause or exc).__name__}"
    spent = f"{_times(postponed, 'postponement')}, {_times(attempts, 'attempt')}"
    return f"{what}: gave up after {spent}"


def _last_attempt(ctx: JobContext, exc: BaseException) -> bool:
    """Whether the job fails for good with `exc` (as the runner decides it)."""
    return not ERASE_POLICY.is_retryable(exc) or ctx.attempt >= ERASE_POLICY.max_attempts


async def _postponements_refused(
    sessionmaker: async_sessionmaker[AsyncSession], ctx: JobContext, exc: RetryLater
) -> int | None:
    """The postponements the job made, if it fails for good with `exc`: the runner takes a
    `RetryLater` past `max_postponements` as a failure (`AttemptRunner`), retried while
    attempts are left. None while the job runs again. Read from the attempts log as the
    runner does, only on a last attempt."""
    if not _last_attempt(ctx, exc):
        return None  # postponed, or retried as a failure
    async with sessionmaker() as session:
        postponed = (await budget_state(session, ctx.job_id))[1]
    return postponed if postponed >= ERASE_POLICY.max_postponements else None


async def _erasure_state(
    session: AsyncSession, uid: str, status: str, error: str | None, among: Collection[str]
) -> None:
    """Move the tombstone `uid` to `status` if it is in one of `among`."""
    await session.execute(
        update(Lead)
        .where(Lead.uid == uid, Lead.erased_at.is_not(None), Lead.sync_status.in_(sorted(among)))
        .values(sync_status=status, last_sync_error=error, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def erasures_waiting(queue: JobQueue, page: int = 500) -> set[str]:
    """The leads (uids) with a `crm.erase` job waiting or running."""
    uids: set[str] = set()
    for status in (JobStatus.TODO, JobStatus.DOING):
        after: int | None = None
        while True:
            jobs = await queue.list(
                JobFilter(status=status, task=ERASE_TASK), after_id=after, limit=page
            )
            uids.update(str(job.payload.get("uid")) for job in jobs)
            if len(jobs) < page:
                break
            after = jobs[-1].id
    return uids


async def retry_erasures(
    session: AsyncSession, queue: JobQueue, settings: Settings, waiting: Collection[str]
) -> list[str]:
    """Queue again, in `session`'s transaction, the erasure of every tombstone whose CRM
    erasure failed, and of every one still pending with no job waiting or running for it
    (`waiting`, from `erasures_waiting`: cancelled, or its failure not noted on it);
    the leads' uids. They are pending (ERASING) until their job is done. A lead with a job
    waiting or running is left to it."""
    rows = await session.execute(
        select(Lead.uid, Lead.sync_status)
        .where(Lead.sync_status.in_(OWED), Lead.erased_at.is_not(None))
        .order_by(Lead.erased_at, Lead.id)
    )
    queued = []
    for uid, status in rows.all():
        if uid in waiting:  # its job decides (a failed one replayed with `cauce jobs retry`)
            continue
        if status == ERASE_FAILED:
            await session.execute(
                update(Lead)
                .where(Lead.uid == uid, Lead.sync_status == ERASE_FAILED)
                .values(sync_status=ERASING, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        await request_erasure(session, queue, settings, uid)
        queued.append(uid)
    return queued


def _later(exc: CrmThrottled | CrmUnavailable) -> RetryLater:
    if isinstance(exc, CrmThrottled):
        return RetryLater(exc.until, f"CRM rate limit {exc.policy}".strip())
    at = exc.retry_at or utcnow() + OUTAGE_RECHECK
    return RetryLater(at, f"CRM unavailable: {exc}")


def waiting_dedupe_key(account: str, lead_ids: Collection[int]) -> str:
    """One delivery of the same leads waiting for a create in doubt waits at a time (each
    delivery run meanwhile finds them waiting again)."""
    digest = hashlib.sha256(",".join(map(str, sorted(lead_ids))).encode()).hexdigest()
    return f"crm-deliver-waiting:{account}:{digest[:32]}"


async def deliver_when_allowed(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    account: str,
    waiting: Mapping[int, datetime],
) -> None:
    """Ask for a delivery of just the leads waiting for a create in doubt
    (`DeliveryReport.waiting`) at the earliest time one may go, under the account's
    delivery lock; the delivery job itself ends, so leads accepted meanwhile are sent at
    once. In a transaction of its own: the job that asks may yet be put off (RetryLater
    rolls its own back)."""
    ids = sorted(waiting)
    async with unit_of_work(sessionmaker) as session:
        await queue.defer(
            session,
            REDELIVER_TASK,
            {"lead_ids": ids, "waiting": True},
            queue=CRM_QUEUE,
            run_at=min(waiting.values()),
            lock=delivery_lock(account),
            dedupe_key=waiting_dedupe_key(account, ids),
        )


async def redeliver_refused(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    account: str,
    lead_ids: Collection[int],
) -> None:
    """A redelivery of the leads the CRM refused for good, which fails for them
    (replayable once they are fixed), in a transaction of its own."""
    async with unit_of_work(sessionmaker) as session:
        await queue.defer(
            session,
            REDELIVER_TASK,
            {"lead_ids": sorted(lead_ids)},
            queue=CRM_QUEUE,
            lock=delivery_lock(account),
        )


async def _still_pending(
    sessionmaker: async_sessionmaker[AsyncSession], lead_ids: Collection[int]
) -> list[int]:
    """Those of `lead_ids` still to be delivered (another delivery may have sent them)."""
    async with unit_of_work(sessionmaker) as session:
        rows = await session.scalars(
            select(Lead.id).where(
                Lead.id.in_(sorted(lead_ids)),
                Lead.sync_status == "pending",
                Lead.erased_at.is_(None),
            )
        )
        return sorted(rows.all())


async def delete_at_crm(client: CrmClient, key: CrmKey) -> CrmDeletion:
    """Delete the contact `key` finds, and say which CRM ids went with it: from a CRM
    whose users merge contacts (`CrmWithMerges`), the deleted record's and those merged
    into it; from another, the id it was deleted by, if it was one."""
    if isinstance(client, CrmWithMerges):
        return await client.delete_contact(key)
    found = await client.delete(key)
    by_id = found and key.property == OBJECT_ID
    return CrmDeletion(found, frozenset({key.value}) if by_id else frozenset())


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
        if report.waiting:
            await deliver_when_allowed(
                deps.sessionmaker, ctx.queue_port, crm_settings.account, report.waiting
            )
        if report.failed_for_good:
            # In a transaction of its own: `RetryLater` below rolls the job's back, and the
            # refused leads were left with no job to replay.
            await redeliver_refused(
                deps.sessionmaker, ctx.queue_port, crm_settings.account, report.failed_for_good
            )
        if report.out_of_time:
            await request_delivery(ctx.session, ctx.queue_port, deps.settings)
        if report.retry_later:
            # Some records failed for a passing reason: run again soon, spread out.
            delay = timedelta(seconds=rng.uniform(1.0, 5.0))
            raise RetryLater(utcnow() + delay, f"{len(report.retry_later)} records to retry")

    async def redeliver_handler(ctx: JobContext, payload: JsonDict) -> None:
        ids = [int(i) for i in payload.get("lead_ids", [])]
        # Leads that waited for a create in doubt (`deliver_when_allowed`), not failed ones.
        waited = bool(payload.get("waiting"))
        if waited and not (ids := await _still_pending(deps.sessionmaker, ids)):
            return
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
        if waited:
            await _after_the_wait(ctx, report)
            return
        if report.waiting:
            # A create in doubt in a replay of refused leads: asked for again at its time
            # (in a transaction of its own: the failure below rolls the job's back).
            await deliver_when_allowed(
                deps.sessionmaker, ctx.queue_port, crm_settings.account, report.waiting
            )
        if report.failed_for_good:
            raise PermanentJobError(
                f"the CRM refused leads {report.failed_for_good}; fix them (PATCH) or replay"
            )

    async def _after_the_wait(ctx: JobContext, report: DeliveryReport) -> None:
        """The leads a delivery after a create in doubt did not sync go on as a delivery
        job's do: those still waiting are asked for again at their time, those refused
        for good in a redelivery that fails (replayable), the others (a passing failure,
        out of time) in a delivery."""
        if report.waiting:
            await deliver_when_allowed(
                deps.sessionmaker, ctx.queue_port, crm_settings.account, report.waiting
            )
        if report.failed_for_good:
            await redeliver_refused(
                deps.sessionmaker, ctx.queue_port, crm_settings.account, report.failed_for_good
            )
        if report.retry_later or report.out_of_time:
            await request_delivery(ctx.session, ctx.queue_port, deps.settings)

    async def erase_at_crm(uid: str) -> CrmDeletion:
        """Delete the erased lead's contact in the CRM; what went (`CrmDeletion`)."""
        async with unit_of_work(deps.sessionmaker) as session:
            row = (
                await session.execute(
                    select(Lead.crm_id, Lead.crm_create_sent_at, Lead.crm_create_doubt_at).where(
                        Lead.uid == uid
                    )
                )
            ).first()
        crm_id, sent_at, doubt_at = row if row is not None else (None, None, None)
        client = crm()
        try:
            deleted = await delete_at_crm(client, CrmKey(crm_settings.cauce_id_property, uid))
            # Not found by its Cauce id: the contact it was synced to may have been taken
            # over by another lead with its email, arriving after the erasure and upserted
            # (keyed by email) before this job ran, its Cauce id with it, or merged by a
            # user into a record with another lead's. That contact goes too, by the CRM's
            # own id.
            if not deleted.found and crm_id is not None:
                deleted = await delete_at_crm(client, CrmKey(OBJECT_ID, crm_id))
        except (CrmThrottled, CrmUnavailable) as exc:
            raise _later(exc) from exc
        # A create of it may have been applied without Cauce learning it (in doubt, or
        # sent and its answer not recorded: the lead was erased meanwhile), and a CRM
        # without an upsert finds a new contact only once its search has it: nothing
        # found is no proof yet. Asked again once such a create would show.
        marked = [at for at in (sent_at, doubt_at) if at is not None]
        if not deleted.found and marked:
            shows = max(marked) + timedelta(seconds=CREATE_SETTLE_SECONDS)
            if utcnow() < shows:
                raise RetryLater(shows, CREATE_MAY_NOT_SHOW)
        return deleted

    async def erase_failed(uid: str, reason: str) -> None:
        """The job's last attempt failed: the tombstone says the erasure is owed, and why,
        after the failed job is purged."""
        try:
            async with unit_of_work(deps.sessionmaker) as session:
                await _erasure_state(
                    session, uid, ERASE_FAILED, reason, (ERASING, ERASED, ERASE_FAILED)
                )
        except Exception as noted:  # noqa: BLE001 - logged; the job's own error is raised
            log.warning("crm.erase.note_failed", error_class=type(noted).__name__)
        log.warning("crm.erase.failed", lead=uid, reason=reason)

    async def erase_handler(ctx: JobContext, payload: JsonDict) -> None:
        uid = str(payload["uid"])
        try:
            deleted = await erase_at_crm(uid)
        except RetryLater as exc:
            # Pending still (ERASING), unless the runner refuses to postpone it again on
            # its last attempt: failed then, as below. Not when the CRM deleted the
            # contact itself.
            if not payload.get("crm_gone"):
                postponed: int | None = None
                try:
                    postponed = await _postponements_refused(deps.sessionmaker, ctx, exc)
                except Exception as noted:  # noqa: BLE001 - logged; the RetryLater is raised
                    log.warning("crm.erase.note_failed", error_class=type(noted).__name__)
                if postponed is not None:
                    reason = erasure_gave_up(exc, crm_settings.provider, postponed, ctx.attempt)
                    await erase_failed(uid, reason)
            raise
        except Exception as exc:
            # Its last attempt. Not when the CRM deleted the contact itself.
            if _last_attempt(ctx, exc) and not payload.get("crm_gone"):
                reason = (
                    NO_CRM
                    if deps.crm is None
                    else erasure_failure(exc, crm_settings.provider, ctx.attempt)
                )
                await erase_failed(uid, reason)
            raise
        async with unit_of_work(deps.sessionmaker) as session:
            # Nothing of it in the CRM now (a 404 says the same).
            await _erasure_state(session, uid, ERASED, None, OWED)
            # The live leads synced to the deleted record (one that took over the erased
            # lead's contact, or whose contact a user merged with it) lost their contact
            # with the erased one's data: they are sent again, as new contacts, with only
            # their own.
            resent = await resend_contact_of(session, *deleted.crm_ids)
            if resent:
                await request_delivery(session, ctx.queue_port, deps.settings)
            if len(deleted.crm_ids) > 1:
                # A record a user merged: the other leads' contacts went with it.
                (log.warning if resent else log.info)(
                    "crm.erase.merged_contact",
                    lead=uid,
                    crm_ids=sorted(deleted.crm_ids),
                    resent=resent,
                )

    async def inbound_handler(ctx: JobContext, payload: JsonDict) -> None:
        # A GDPR deletion in the CRM erases the lead here too, as the API does.
        erase = crm_erasure(deps.settings, deps.sessionmaker, ctx.queue_port, deps.known)
        erased: list[str] = []

        async def erasing(session: AsyncSession, uid: str) -> None:
            await erase(session, uid)
            erased.append(uid)

        # Chunks in their own transactions: a long backlog commits as it goes.
        while True:
            async with unit_of_work(deps.sessionmaker) as session:
                if await process_inbox(session, erase=erasing) == 0:
                    return
                if erased:
                    # Once a chunk, after its last lead's lock (`service_edit.erase`).
                    await request_analyze(session, ctx.queue_port, ERASED_TABLES)
                    erased.clear()

    registry.task(DELIVER_TASK, queue=CRM_QUEUE, retry=DELIVERY_POLICY)(deliver_handler)
    registry.task(INBOUND_TASK, queue=CRM_QUEUE)(inbound_handler)
    registry.task(REDELIVER_TASK, queue=CRM_QUEUE, retry=DELIVERY_POLICY)(redeliver_handler)
    registry.task(ERASE_TASK, queue=CRM_QUEUE, retry=ERASE_POLICY)(erase_handler)
    # The inbox's processed events, past their retention (`webhooks_purge`).
    register_inbox_purge(
        registry,
        deps.sessionmaker,
        timedelta(days=crm_settings.webhook_inbox_retention_days),
        crm_settings.webhook_inbox_purge_cron,
    )
