"""CSV imports: the upload is streamed to disk, then a job reads it row by row.

The endpoint never holds the file in memory: it copies the upload to
`$CAUCE_DATA_DIR/imports/` in chunks, refusing files past `leads.max_import_bytes`, and
probes the first 64 KiB so a file it cannot read or a bad mapping is a 422 at once. The
import row and its job are committed together.

The job takes the rows in chunks, each chunk in one transaction with the import's
counters: a worker killed mid-import leaves the counters at the last committed chunk, and
the re-run skips that many rows, so no row is imported twice (and intake de-duplicates
anyway). Rejected rows go to `lead_import_errors`, downloadable as CSV.
"""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.ports import JobContext, JsonDict, PermanentJobError
from cauce.core.jobs.registry import TaskRegistry
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
    await rt.queue.defer(
        session,
        IMPORT_TASK,
        {"import_id": record.id},
        queue=IMPORT_QUEUE,
        lock=f"import:{record.id}",
        dedupe_key=f"import:{record.id}",
    )
    return record


async def get_import(session: AsyncSession, import_id: int) -> LeadImport:
    """An import by id, or 404."""
    record = await session.get(LeadImport, import_id)
    if record is None:
        raise ImportNotFound(f"no import with id {import_id}")
    return record


async def error_lines(session: AsyncSession, import_id: int) -> list[ReportLine]:
    """The rejected rows of an import, in file order, each naming the CSV column its
    field was read from (from the columns the import recorded as it started: one label
    per column, `Teléfono (column 4)` for a header the file repeats)."""
    record = await get_import(session, import_id)
    mapping = record.mapping or {}
    labels = list(mapping)
    plan = ColumnPlan(headers=labels, targets=list(mapping.values()), labels=labels)
    rows = await session.scalars(
        select(ImportErrorRow)
        .where(ImportErrorRow.import_id == import_id)
        .order_by(ImportErrorRow.row, ImportErrorRow.id)
    )
    return [ReportLine(r.row, column_of(plan, r.field), r.field, r.reason) for r in rows]


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
        if record.status in ("succeeded", "failed"):
            return
        record.status = "running"
        record.started_at = record.started_at or utcnow()
        already = record.rows_processed
        options_in = ImportOptionsIn.model_validate(record.options or {})
        path = Path(record.path)
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
        raise PermanentJobError(detail) from exc
    except FileNotFoundError as exc:
        await _finish(rt, import_id, "failed", "the uploaded file is gone", reader)
        raise PermanentJobError("the uploaded file is gone") from exc
    await _finish(rt, import_id, "succeeded", None, reader)
    await asyncio.to_thread(path.unlink, missing_ok=True)


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
        if reader.format is not None:
            record.encoding = reader.format.encoding
            record.delimiter = reader.format.delimiter
    log.info("leads.import.finished", import_id=import_id, status=status)


def progress(record: LeadImport) -> float | None:
    """Share of the file read so far."""
    if record.status == "succeeded":
        return 1.0
    if not record.size_bytes:
        return None
    return min(1.0, record.bytes_read / record.size_bytes)


def register_import_task(registry: TaskRegistry, rt_of: Any) -> None:
    """Register the import handler; `rt_of()` returns the runtime once built."""

    async def handler(ctx: JobContext, payload: JsonDict) -> None:
        await run_import(rt_of(), int(payload["import_id"]))

    registry.task(IMPORT_TASK, queue=IMPORT_QUEUE)(handler)
