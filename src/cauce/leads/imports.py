"""CSV imports: the upload is streamed to disk, then a job reads it row by row.

The endpoint never holds the file in memory: it copies the upload to
`$CAUCE_DATA_DIR/imports/` in chunks, refusing files past `leads.max_import_bytes`, and
probes the first 64 KiB so a file it cannot read or a bad mapping is a 422 at once. The
import row and its job are committed together.

The job takes the rows in chunks, each chunk in one transaction with the import's
counters: a worker killed mid-import leaves the counters at the last committed chunk, and
the re-run skips that many rows, so no row is imported twice (and intake de-duplicates
anyway). Rejected rows go to `lead_import_errors`, downloadable as CSV (read back a page
at a time: `error_pages`).

The upload holds personal data, so it lives no longer than its import needs it: it is
deleted as the import ends (`succeeded` or `failed`), and `SWEEP_TASK`, run with the job
purge (`jobs.purge_cron`), deletes the ones left behind: a crash between the end and the
deletion, an upload whose request died before its import was recorded, and the upload of
an import whose job is gone (cancelled or failed, then purged: nothing can run it again).
An import whose job failed or was cancelled but is still kept keeps its file, as an
operator may replay that job and the import then resumes where it stopped.

Such an import stays `queued` or `running` on its row (a replay of its job resumes it
from there), but its status reads the job (`job_id`, kept on the row) and shows it
`failed`, saying why and how to resume it: `stopped_detail`. That is worked out at read
time, so the import of a replayed job shows `queued` or `running` again at once.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import (
    REPLAYABLE,
    AttemptOutcome,
    JobContext,
    JobFilter,
    JobStatus,
    JobView,
    JsonDict,
    PermanentJobError,
)
from cauce.core.jobs.registry import TaskRegistry, TaskSpec
from cauce.core.jobs.runner import count_budget
from cauce.leads.csv_columns import ColumnPlan
from cauce.leads.csv_import import (
    SAMPLE_BYTES,
    CsvLeadReader,
    CsvRow,
    ReportLine,
    column_of,
    validate_row,
)
from cauce.leads.errors import ImportNotFound, ImportTooLarge, LeadImportError
from cauce.leads.field_types import IntakeOptions
from cauce.leads.models import LeadImport
from cauce.leads.models import LeadImportError as ImportErrorRow
from cauce.leads.schemas import ImportOptionsIn, LeadIn
from cauce.leads.service import LeadsRuntime, intake_many

log = structlog.get_logger("cauce.leads.imports")

IMPORT_TASK = "leads.import"
IMPORT_QUEUE = "imports"
CHUNK_ROWS = 200
# Error report lines read per query: a page is formatted and sent before the next is read.
REPORT_PAGE = 2000
# States after which an import never runs again (its upload is not needed any more).
FINAL_STATES = ("succeeded", "failed")
SWEEP_TASK = "leads.imports_sweep"
# An upload untouched for this long is old enough for the sweep: one still being written
# (or whose import is being recorded) is newer.
SWEEP_AFTER = timedelta(hours=1)
# The last error a stopped import's `detail` quotes: its first line, this long at most.
STOPPED_ERROR_CHARS = 200


def imports_dir(rt: LeadsRuntime) -> Path:
    """Where uploads wait for their job."""
    path = rt.settings.data_dir / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def store_upload(
    rt: LeadsRuntime, chunks: AsyncIterator[bytes], options: ImportOptionsIn
) -> tuple[Path, int]:
    """Copy an upload to disk, checking its size and that it reads as CSV."""
    limit = rt.settings.leads.max_import_bytes
    target = imports_dir(rt) / f"{uuid.uuid4().hex}.csv"
    size = 0
    head = b""
    try:
        with target.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ImportTooLarge(f"the file is larger than {limit} bytes")
                if len(head) < SAMPLE_BYTES:
                    head += chunk[: SAMPLE_BYTES - len(head)]
                out.write(chunk)
        CsvLeadReader.from_options(options).probe(head, at_eof=size <= len(head))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target, size


def display_filename(filename: str | None) -> str | None:
    """The upload's name as a label (it never names a path): without control characters,
    which PostgreSQL text may not hold (NUL), and at most 255 characters."""
    name = "".join(c for c in filename or "" if unicodedata.category(c) not in ("Cc", "Cs"))
    return name.strip()[:255] or None


async def create_import(
    session: AsyncSession,
    rt: LeadsRuntime,
    *,
    path: Path,
    size: int,
    filename: str | None,
    options: ImportOptionsIn,
    actor: str | None,
) -> LeadImport:
    """Record the import and defer its job, in the caller's transaction."""
    record = LeadImport(
        status="queued",
        filename=display_filename(filename),
        path=str(path),
        mapping={k: v for k, v in (options.mapping or {}).items() if v is not None},
        options=options.model_dump(mode="json"),
        size_bytes=size,
        created_by=actor,
    )
    session.add(record)
    await session.flush()
    deferred = await rt.queue.defer(
        session,
        IMPORT_TASK,
        {"import_id": record.id},
        queue=IMPORT_QUEUE,
        lock=f"import:{record.id}",
        dedupe_key=f"import:{record.id}",
    )
    record.job_id = deferred.job_id
    return record


async def get_import(session: AsyncSession, import_id: int) -> LeadImport:
    """An import by id, or 404."""
    record = await session.get(LeadImport, import_id)
    if record is None:
        raise ImportNotFound(f"no import with id {import_id}")
    return record


async def stopped_detail(rt: LeadsRuntime, record: LeadImport) -> str | None:
    """Why an import left `queued` or `running` stands still: its job failed for good or
    was cancelled. The sentence says what happened (the last error, if any) and how to
    resume it; None while the import can still move on its own, and for an import whose
    job is unknown (recorded before imports kept it) or gone (the sweep then ends it)."""
    if record.status in FINAL_STATES or record.job_id is None:
        return None
    job = await rt.queue.get(record.job_id)
    # A purged job's id may be reused by another job on SQLite: it must be this import's.
    if (
        job is None
        or job.status not in REPLAYABLE
        or job.task != IMPORT_TASK
        or job.payload.get("import_id") != record.id
    ):
        return None
    resume = f"`cauce jobs retry {job.id}` resumes it where it stopped"
    if job.status == JobStatus.CANCELLED:
        return f"stopped: its job was cancelled; {resume}"
    attempts = count_budget(a.outcome for a in job.attempts)[0]
    plural = "" if attempts == 1 else "s"
    error = _last_error(job)
    said = f" (last error: {error})" if error else ""
    return f"stopped: its job failed after {attempts} attempt{plural}{said}; {resume}"


def _last_error(job: JobView) -> str | None:
    """The error of the job's last attempt that recorded one (since its last replay), as
    `Class: first line of the message`, cut short: the stored message is already
    redacted, and its first line leaves out what a driver appends (the SQL, a link)."""
    for attempt in reversed(job.attempts):
        if attempt.outcome == AttemptOutcome.REPLAYED:
            return None
        if attempt.error_class is None and not attempt.error_message:
            continue
        name = (attempt.error_class or "").rsplit(".", 1)[-1]
        lines = (attempt.error_message or "").strip().splitlines()
        text = ": ".join(part for part in (name, lines[0].strip() if lines else "") if part)
        if len(text) > STOPPED_ERROR_CHARS:
            text = text[: STOPPED_ERROR_CHARS - 1].rstrip() + "…"
        return text
    return None


async def error_pages(
    sessionmaker: async_sessionmaker[AsyncSession],
    import_id: int,
    mapping: dict[str, str | None],
    *,
    page: int = REPORT_PAGE,
) -> AsyncIterator[list[ReportLine]]:
    """The rejected rows of a finished import, in file order, `page` lines at a time,
    each naming the CSV column its field was read from (`mapping`, the import's columns
    as it recorded them on starting: one label per column, `Teléfono (column 4)` for a
    header the file repeats).

    Each page is one short query by keyset (the id after the last one sent), in its own
    session: a report of any length is read in bounded memory, and a slow client holds
    no connection between pages. Id order is file order: the job writes the lines a chunk
    at a time in row order, each chunk in a transaction after the one before, and the ORM
    inserts a flush's rows in the order they were added.
    """
    labels = list(mapping)
    plan = ColumnPlan(headers=labels, targets=list(mapping.values()), labels=labels)
    after = 0
    while True:
        async with sessionmaker() as session:
            rows = (
                await session.execute(
                    select(
                        ImportErrorRow.id,
                        ImportErrorRow.row,
                        ImportErrorRow.field,
                        ImportErrorRow.reason,
                    )
                    .where(ImportErrorRow.import_id == import_id, ImportErrorRow.id > after)
                    .order_by(ImportErrorRow.id)
                    .limit(page)
                )
            ).all()
        if not rows:
            return
        after = rows[-1].id
        yield [ReportLine(r.row, column_of(plan, r.field), r.field, r.reason) for r in rows]
        if len(rows) < page:
            return


def _read_rows(reader: CsvLeadReader, path: Path) -> Iterator[CsvRow]:
    with path.open("rb") as source:
        yield from reader.rows(source)


async def _process_chunk(
    rt: LeadsRuntime,
    record_id: int,
    chunk: list[CsvRow],
    reader: CsvLeadReader,
    options: IntakeOptions,
    actor: str | None,
) -> None:
    plan = reader.plan
    assert plan is not None
    async with unit_of_work(rt.sessionmaker) as session:
        record = await get_import(session, record_id)
        if record.rows_processed == 0:
            # The status shows how every column is read, defaults and ignored ones too,
            # one entry per column (its label is unique even where its header is not).
            record.mapping = dict(plan.columns())
        _record_format(record, reader)  # shown while running, not only at the end
        valid: list[LeadIn] = []
        for row in chunk:
            outcome = validate_row(row, plan, options)
            if isinstance(outcome, LeadIn):
                valid.append(outcome)
            else:
                record.rows_rejected += 1
                session.add_all(
                    ImportErrorRow(
                        import_id=record_id,
                        row=line.row,
                        field=line.field[:200],
                        reason=line.reason,
                    )
                    for line in outcome
                )
        # The valid rows as one batch: each decided as it would be after the rows before
        # it, at a batch's cost rather than a lead's each.
        for result in await intake_many(session, rt, valid, actor=actor):
            if result.outcome == "merged":
                record.rows_merged += 1
            elif result.outcome == "held_for_review":
                record.rows_held += 1
            else:
                record.rows_accepted += 1
        record.rows_processed += len(chunk)
        record.bytes_read = reader.bytes_read


async def run_import(rt: LeadsRuntime, import_id: int) -> None:
    """Import every row not imported yet; safe to run again after a crash."""
    async with unit_of_work(rt.sessionmaker) as session:
        record = await get_import(session, import_id)
        path = Path(record.path)
        if record.status in FINAL_STATES:
            await _discard(path)  # left by a crash between the end and its deletion
            return
        record.status = "running"
        record.started_at = record.started_at or utcnow()
        already = record.rows_processed
        options_in = ImportOptionsIn.model_validate(record.options or {})
        actor = record.created_by
    region = options_in.default_phone_region or rt.settings.leads.default_region
    options = IntakeOptions(default_phone_region=region, now=utcnow())
    reader = CsvLeadReader.from_options(options_in)
    try:
        chunk: list[CsvRow] = []
        for index, row in enumerate(_read_rows(reader, path)):
            if index < already:
                continue
            chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                await _process_chunk(rt, import_id, chunk, reader, options, actor)
                chunk = []
        if chunk:
            await _process_chunk(rt, import_id, chunk, reader, options, actor)
    except LeadImportError as exc:
        detail = _reason(exc)
        await _finish(rt, import_id, "failed", detail, reader)
        await _discard(path)
        raise PermanentJobError(detail) from exc
    except FileNotFoundError as exc:
        await _finish(rt, import_id, "failed", "the uploaded file is gone", reader)
        raise PermanentJobError("the uploaded file is gone") from exc
    # Any other error leaves the import running and its file in place: the job is tried
    # again, and once its attempts are spent it may still be replayed.
    await _finish(rt, import_id, "succeeded", None, reader)
    await _discard(path)


async def _discard(path: Path) -> None:
    """Delete an upload no import needs any more; the sweep retries what this cannot."""
    try:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    except OSError as exc:
        log.warning("leads.import.upload_not_deleted", file=path.name, error=str(exc))


def _reason(exc: LeadImportError) -> str:
    """The error as the import's `detail`: a mapping found wrong only by the job (the
    header row was past the probed start) says which entries and why."""
    errors = exc.extra.get("errors") or []
    if not errors:
        return exc.detail
    return f"{exc.detail}: " + "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors)


async def _finish(
    rt: LeadsRuntime, import_id: int, status: str, error: str | None, reader: CsvLeadReader
) -> None:
    async with unit_of_work(rt.sessionmaker) as session:
        record = await get_import(session, import_id)
        record.status = status
        record.error = error
        record.finished_at = utcnow()
        if status == "succeeded":  # the last chunk may have been read before the end
            record.bytes_read = reader.bytes_read
        if record.rows_processed == 0 and reader.plan is not None:
            # No row reached a chunk (a file with a header only): the columns are still
            # the file's, not the mapping that was sent.
            record.mapping = dict(reader.plan.columns())
        _record_format(record, reader)
    log.info("leads.import.finished", import_id=import_id, status=status)


def _record_format(record: LeadImport, reader: CsvLeadReader) -> None:
    """The encoding and delimiter detected so far (the encoding may still change once,
    from a provisional UTF-8 to cp1252, so each chunk records it again)."""
    if reader.format is not None:
        record.encoding = reader.format.encoding
        record.delimiter = reader.format.delimiter


def progress(record: LeadImport) -> float | None:
    """Share of the file read so far."""
    if record.status == "succeeded":
        return 1.0
    if not record.size_bytes:
        return None
    return min(1.0, record.bytes_read / record.size_bytes)


def _old_uploads(directory: Path, cutoff: float) -> list[Path]:
    """The uploads in `directory` last written before `cutoff` (a time.time())."""
    if not directory.is_dir():
        return []
    old = []
    for path in directory.glob("*.csv"):
        try:
            if path.stat().st_mtime < cutoff:
                old.append(path)
        except FileNotFoundError:
            continue  # deleted meanwhile (its import just ended)
    return old


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def _jobs_left(rt: LeadsRuntime) -> set[int]:
    """The imports that still have a job, in any state (a failed or cancelled one may be
    replayed); purged jobs are gone."""
    ids: set[int] = set()
    after: int | None = None
    while True:
        jobs = await rt.queue.list(JobFilter(task=IMPORT_TASK), after_id=after, limit=500)
        ids.update(int(job.payload.get("import_id", 0)) for job in jobs)
        if len(jobs) < 500:
            return ids
        after = jobs[-1].id


async def sweep_uploads(rt: LeadsRuntime, *, older_than: timedelta = SWEEP_AFTER) -> int:
    """Delete the uploads no import can use any more and last written longer than
    `older_than` ago; returns how many.

    An upload is kept while its import is queued or running and has a job (any state);
    an import left queued or running whose job is gone is marked failed. See the module
    docstring.
    """
    cutoff = time.time() - older_than.total_seconds()
    old = await asyncio.to_thread(_old_uploads, rt.settings.data_dir / "imports", cutoff)
    if not old:
        return 0
    async with rt.sessionmaker() as session:
        # Only the file's name: a relative data dir is stored relative to where it ran.
        live = {
            Path(path).name: import_id
            for import_id, path in (
                await session.execute(
                    select(LeadImport.id, LeadImport.path).where(
                        LeadImport.status.not_in(FINAL_STATES)
                    )
                )
            ).all()
        }
    abandoned: list[int] = []
    if any(path.name in live for path in old):
        with_jobs = await _jobs_left(rt)
        abandoned = [live[p.name] for p in old if p.name in live and live[p.name] not in with_jobs]
    if abandoned:
        async with unit_of_work(rt.sessionmaker) as session:
            await session.execute(
                update(LeadImport)
                .where(LeadImport.id.in_(abandoned), LeadImport.status.not_in(FINAL_STATES))
                .values(
                    status="failed",
                    error="the import's job is gone (cancelled or failed, then purged); "
                    "its upload was deleted",
                    finished_at=utcnow(),
                )
            )
    gone = [p for p in old if p.name not in live or live[p.name] in abandoned]
    await asyncio.to_thread(_unlink_all, gone)
    if gone:
        log.info("leads.import.uploads_swept", deleted=len(gone), imports_failed=len(abandoned))
    return len(gone)


def register_import_task(registry: TaskRegistry, rt_of: Any) -> None:
    """Register the import handler and the upload sweep; `rt_of()` returns the runtime
    (already built when this is called: its settings say when the sweep runs)."""

    async def handler(ctx: JobContext, payload: JsonDict) -> None:
        await run_import(rt_of(), int(payload["import_id"]))

    async def sweep(ctx: JobContext, payload: JsonDict) -> None:
        hours = float(payload.get("older_than_hours", SWEEP_AFTER / timedelta(hours=1)))
        await sweep_uploads(rt_of(), older_than=timedelta(hours=hours))

    registry.task(IMPORT_TASK, queue=IMPORT_QUEUE)(handler)
    # One attempt: a sweep that failed is simply done again by the next period.
    registry.add(TaskSpec(SWEEP_TASK, sweep, policy=RetryPolicy(max_attempts=1)))
    cron = rt_of().settings.jobs.purge_cron
    if cron is not None:
        # With a payload of its own: a schedule's identity is its cron and payload, and
        # the job purge runs on the same cron.
        registry.schedule(cron, SWEEP_TASK, {"older_than_hours": SWEEP_AFTER / timedelta(hours=1)})
