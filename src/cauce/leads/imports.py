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

An import can be cancelled (`imports_upkeep.cancel_import`): a queued one ends
`cancelled` at once and never starts; a running one is marked `cancelling` (the request is
that state, so it survives a crash), and its job, which reads the import's row at the start
of every chunk, stops at the next chunk boundary and ends it `cancelled`: the rows of the
chunks committed stay imported, their rejected rows stay in the report.

When the job stops for good, and when the upload is deleted: `imports_upkeep`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.ports import (
    PermanentJobError,
)
from cauce.leads import erased_contacts
from cauce.leads.csv_columns import ColumnPlan
from cauce.leads.csv_import import (
    CsvLeadReader,
    CsvRow,
    ReportLine,
    column_of,
    validate_row,
)
from cauce.leads.errors import ImportNotFound, LeadImportError
from cauce.leads.field_types import IntakeOptions
from cauce.leads.metrics import count_on_commit
from cauce.leads.models import LeadImport
from cauce.leads.models import LeadImportError as ImportErrorRow
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_requests import ImportOptionsIn
from cauce.leads.service import LeadsRuntime, intake_many

log = structlog.get_logger("cauce.leads.imports")

IMPORT_TASK = "leads.import"
IMPORT_QUEUE = "imports"
CHUNK_ROWS = 200
# Error report lines read per query: a page is formatted and sent before the next is read.
REPORT_PAGE = 2000
RUNNING = "running"
# A cancel was asked for while the import ran: its job stops at the next chunk boundary.
CANCELLING = "cancelling"
CANCELLED = "cancelled"
# States after which an import never runs again (its upload is not needed any more).
FINAL_STATES = ("succeeded", "failed", CANCELLED)
# States of an import not over yet: its report is not complete, its upload is kept.
LIVE_STATES = ("queued", RUNNING, CANCELLING)
# The import's `detail` while its job has not yet seen the cancel request.
CANCEL_PENDING = (
    f"cancel requested: the import stops once the rows it is importing now (at most "
    f"{CHUNK_ROWS}) are committed"
)


class ImportMustWait(Exception):
    """The import would start reading rows, but its job got no import slot
    (`leads.import_concurrency`): the job is to be postponed, nothing was changed."""


class _StopRequested(Exception):
    """The import's row no longer says `running` at a chunk boundary: a cancel was asked
    for (`cancelling`), so the chunk is not imported and the job stops."""


async def get_import(session: AsyncSession, import_id: int, *, lock: bool = False) -> LeadImport:
    """An import by id, or 404; `lock` takes its row lock (`FOR UPDATE` on PostgreSQL;
    SQLite's write transactions are serial anyway) for a change of its state."""
    record = await session.get(LeadImport, import_id, with_for_update=lock or None)
    if record is None:
        raise ImportNotFound(f"no import with id {import_id}")
    return record


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
        if record.status != RUNNING:
            raise _StopRequested  # nothing of this chunk is written
        if record.rows_processed == 0:
            # The status shows how every column is read, defaults and ignored ones too,
            # one entry per column (its label is unique even where its header is not).
            record.mapping = dict(plan.columns())
        _record_format(record, reader)  # shown while running, not only at the end
        valid: list[LeadIn] = []
        numbers: list[int] = []
        rejected = 0
        for row in chunk:
            outcome = validate_row(row, plan, options)
            if isinstance(outcome, LeadIn):
                valid.append(outcome)
                numbers.append(row.number)
            else:
                rejected += 1
                session.add_all(
                    ImportErrorRow(
                        import_id=record_id,
                        row=line.row,
                        field=line.field[:200],
                        reason=line.reason,
                    )
                    for line in outcome
                )
        # A person erased (GDPR) is not brought back by a file (`erased_contacts`).
        secret = erased_contacts.secret_of(rt.settings)
        if erased := await erased_contacts.erased_rows(session, secret, valid):
            for index, (field, at) in erased.items():
                session.add(
                    ImportErrorRow(
                        import_id=record_id,
                        row=numbers[index],
                        field=field,
                        reason=f"belongs to a person erased on {at.date().isoformat()} at "
                        "their request: a file cannot bring them back (they may come back "
                        "by themselves, through a form or the API)",
                    )
                )
            rejected += len(erased)
            valid = [lead for i, lead in enumerate(valid) if i not in erased]
        record.rows_rejected += rejected
        # Counted as the API's rejected leads are, once this chunk commits.
        count_on_commit(session, rt.metrics, ["rejected"] * rejected)
        # The valid rows as one batch: each decided as it would be after the rows before
        # it, at a batch's cost rather than a lead's each.
        # Not live: a row's consent without its time is not given now (`consent_record`).
        for result in await intake_many(session, rt, valid, actor=actor, live=False):
            if result.outcome == "merged":
                record.rows_merged += 1
            elif result.outcome == "held_for_review":
                record.rows_held += 1
            else:
                record.rows_accepted += 1
        record.rows_processed += len(chunk)
        record.bytes_read = reader.bytes_read


@dataclass(frozen=True, slots=True)
class _Started:
    path: Path
    already: int
    options: ImportOptionsIn
    actor: str | None


async def run_import(rt: LeadsRuntime, import_id: int, *, may_start: bool = True) -> None:
    """Import every row not imported yet; safe to run again after a crash.

    An import asked to stop (`cancelling`) ends `cancelled`, before its first chunk or at
    the next chunk boundary. With `may_start` false (its job got no import slot), an
    import that would read rows raises `ImportMustWait` instead, changing nothing; one
    that is over or asked to stop is still ended (that reads no row)."""
    started = await _start(rt, import_id, may_start=may_start)
    if started is None:
        return
    path, already, actor = started.path, started.already, started.actor
    options_in = started.options
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
    except _StopRequested:
        await _stop(rt, import_id, reader)
        await discard_upload(path)
        return
    except LeadImportError as exc:
        detail = _reason(exc)
        await _finish(rt, import_id, "failed", detail, reader)
        await discard_upload(path)
        raise PermanentJobError(detail) from exc
    except FileNotFoundError as exc:
        await _finish(rt, import_id, "failed", "the uploaded file is gone", reader)
        raise PermanentJobError("the uploaded file is gone") from exc
    # Any other error leaves the import running and its file in place: the job is tried
    # again, and once its attempts are spent it may still be replayed.
    await _finish(rt, import_id, "succeeded", None, reader)
    await discard_upload(path)


async def _start(rt: LeadsRuntime, import_id: int, *, may_start: bool) -> _Started | None:
    """Mark the import running and say where to resume; None when it is over (or asked
    to stop: it is ended `cancelled` here), its upload then deleted."""
    async with unit_of_work(rt.sessionmaker) as session:
        # Locked: a cancel of the queued import and this start never both win.
        record = await get_import(session, import_id, lock=True)
        path = Path(record.path)
        if record.status == CANCELLING:
            mark_cancelled(record)  # asked to stop before a crash, or before it ran again
            log.info("leads.import.cancelled", import_id=import_id, rows=record.rows_processed)
        elif record.status not in FINAL_STATES:
            if not may_start:
                raise ImportMustWait
            record.status = RUNNING
            record.started_at = record.started_at or utcnow()
            return _Started(
                path,
                record.rows_processed,
                ImportOptionsIn.model_validate(record.options or {}),
                record.created_by,
            )
    await discard_upload(path)  # or left by a crash between the end and its deletion
    return None


def mark_cancelled(record: LeadImport) -> None:
    """End `record` (locked) as cancelled: the rows of the chunks committed stay."""
    rows = record.rows_processed
    record.status = CANCELLED
    record.finished_at = utcnow()
    if rows == 0:
        record.error = "cancelled on request before any row was imported"
    else:
        plural = "" if rows == 1 else "s"
        record.error = (
            f"cancelled on request after {rows} row{plural}: those stay imported (the "
            "rejected ones are in the error report); the rest of the file was not read"
        )


async def _stop(rt: LeadsRuntime, import_id: int, reader: CsvLeadReader) -> None:
    """End the import the job found asked to stop at a chunk boundary."""
    async with unit_of_work(rt.sessionmaker) as session:
        record = await get_import(session, import_id, lock=True)
        if record.status != CANCELLING:
            return  # ended meanwhile by someone else (the cancel itself, the sweep)
        mark_cancelled(record)
        if record.rows_processed == 0 and reader.plan is not None:
            record.mapping = dict(reader.plan.columns())
        _record_format(record, reader)
    log.info("leads.import.cancelled", import_id=import_id, rows=record.rows_processed)


async def discard_upload(path: Path) -> None:
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
        # Locked: a cancel asked for now finds the import over, or is seen here.
        record = await get_import(session, import_id, lock=True)
        if status == "succeeded" and record.status == CANCELLING:
            error = "finished before the cancel request took effect: every row was read"
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
