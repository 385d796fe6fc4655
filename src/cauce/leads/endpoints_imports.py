"""CSV import endpoints: upload, progress, cancel and the rejected rows' report."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response, StreamingResponse

from cauce.core.errors import UnsupportedMediaType
from cauce.core.security.apikeys import Principal
from cauce.core.web.auth import require_scope, require_scopes
from cauce.core.web.idempotency import HEADER, canonical_json, check_key
from cauce.core.web.openapi import (
    DATABASE_UNAVAILABLE,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_INVALID,
    IDEMPOTENCY_KEY_REUSED,
    NUL_IN_URL,
    PAYLOAD_TOO_LARGE,
    Reasons,
    key_problems,
    path_parameter,
    problems,
    unsupported_media_type,
)
from cauce.core.web.routing import CauceRoute
from cauce.leads import import_form, imports, imports_upkeep, imports_upload
from cauce.leads.csv_export import ErrorReportWriter
from cauce.leads.endpoints import IDEMPOTENCY, idempotent, parse_id, runtime
from cauce.leads.errors import (
    ImportFileInvalid,
    ImportFinished,
    ImportNotFinished,
    ImportNotFound,
    ImportTooLarge,
)
from cauce.leads.models import LeadImport
from cauce.leads.responses import ImportColumn, ImportState, ImportStatus
from cauce.leads.service import LeadsRuntime

imports_router = APIRouter(prefix="/v1/leads/import", route_class=CauceRoute, tags=["leads"])

# An upload and a cancel answer the import's status, which `GET` shows only to
# `leads:read`: a replayed upload shows its counts (rows merged into stored leads), which
# would tell a web form's write-only key which emails and phones Cauce holds.
WriteRead = Annotated[Principal, Depends(require_scopes("leads:write", "leads:read"))]
Read = Annotated[Principal, Depends(require_scope("leads:read"))]


def _shown_state(record: LeadImport, stopped: str | None) -> ImportState:
    if stopped is None:
        return record.status  # type: ignore[return-value]
    return "cancelled" if record.status == imports.CANCELLING else "failed"


def _status(record: LeadImport, stopped: str | None = None) -> ImportStatus:
    """The import as the API shows it; `stopped` (`imports_upkeep.stopped_detail`) shows an
    import whose job failed or was cancelled as `failed`, saying so, though its row (which
    a replay of the job resumes) still says `queued` or `running`."""
    mapping = record.mapping or {}
    return ImportStatus(
        id=str(record.id),
        state=_shown_state(record, stopped),
        job_id=record.job_id,
        filename=record.filename,
        encoding=record.encoding,
        delimiter=record.delimiter,
        columns=[ImportColumn(column=k, field=v) for k, v in mapping.items()],
        bytes_total=record.size_bytes,
        bytes_read=record.bytes_read,
        progress=imports.progress(record),
        rows_read=record.rows_processed,
        rows_created=record.rows_accepted,
        rows_merged=record.rows_merged,
        rows_held=record.rows_held,
        rows_rejected=record.rows_rejected,
        error_report_url=(
            f"/v1/leads/import/{record.id}/errors.csv" if record.rows_rejected else None
        ),
        detail=stopped or record.error,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


def _import_id(request: Request) -> int:
    """The id in the path; one that is not an id names no import (the same 404 as an
    unknown one)."""
    raw: str = request.path_params["import_id"]
    import_id = parse_id(raw)
    if import_id is None:
        shown = raw if len(raw) <= 100 else raw[:100] + "…"
        raise ImportNotFound(f"no import with id {shown}")
    return import_id


@contextlib.contextmanager
def _names_the_file() -> Iterator[None]:
    """A file refused as a whole (too large, not CSV) names the `file` part."""
    try:
        yield
    except (ImportFileInvalid, ImportTooLarge) as exc:
        if "errors" in exc.extra:
            raise
        error = import_form.part_error("file", exc.detail, exc.code)
        raise type(exc)(exc.detail, errors=[error], **exc.extra) from exc


# The error answers of the routes below, for the OpenAPI document (ADR 0003).
NO_SUCH_IMPORT: Final = "`import_not_found`: no import with this id"
UPLOAD_PROBLEMS: Final[dict[int, Reasons]] = {
    **key_problems("leads:write", "leads:read"),
    400: [
        NUL_IN_URL,
        "`bad_request`: the multipart form cannot be read",
        "`malformed_body`: the `options` field is not JSON (`errors` points at it)",
        IDEMPOTENCY_KEY_INVALID,
    ],
    409: IDEMPOTENCY_KEY_IN_USE,
    413: [
        PAYLOAD_TOO_LARGE,
        "`import_too_large`: the file is over `CAUCE_LEADS__MAX_IMPORT_BYTES`",
    ],
    415: unsupported_media_type("`multipart/form-data`"),
    422: [
        "`validation_failed`: a part of the form is missing, repeated, unknown or of the "
        "wrong kind (`errors` names each)",
        "`import_options_invalid`: an option is unknown or wrong (`errors` points into `/options`)",
        "`import_mapping_invalid`: an entry of the mapping is wrong (`errors` points into "
        "`/options/mapping`)",
        "`import_file_invalid`: the file cannot be read as CSV at all (empty, binary, an "
        "unreadable header...)",
        IDEMPOTENCY_KEY_REUSED,
    ],
    429: "`key_imports_full`: `CAUCE_LEADS__MAX_QUEUED_IMPORTS_PER_KEY` imports of this "
    "API key are not finished; send the file again after `Retry-After` seconds",
    503: [
        DATABASE_UNAVAILABLE,
        "`import_queue_full`: `CAUCE_LEADS__MAX_QUEUED_IMPORTS` imports are not finished; "
        "send the file again after `Retry-After` seconds",
    ],
}


def _import_problems(
    scopes: tuple[str, ...], more: dict[int, Reasons] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route on one import, needing `scopes`, and `more`."""
    answers: dict[int, Reasons] = {400: NUL_IN_URL, **key_problems(*scopes), 404: NO_SUCH_IMPORT}
    return problems(answers | (more or {}))


# The import's id in the path, read by hand (`request.path_params`): any text (one that
# is no id names no import, a 404), so FastAPI has nothing to check, and declared to it
# the parameter would have it document a 422 that never comes.
IMPORT_ID: Final = {"parameters": [path_parameter("import_id", "The import's `id`")]}


@imports_router.post(
    "",
    status_code=202,
    response_model=ImportStatus,
    summary="Import a CSV",
    responses=problems(UPLOAD_PROBLEMS),
    openapi_extra=import_form.UPLOAD_BODY | {"parameters": [IDEMPOTENCY_KEY]},
)
async def start_import(request: Request, principal: WriteRead) -> Response:
    """Store the file and queue its import; poll the returned status for progress.

    The body is `multipart/form-data`: the CSV as the file part `file`, and optionally
    the JSON `options` field. With an `Idempotency-Key`, the same file (same name, same
    options) sent again answers the first import's status (`Idempotent-Replayed: true`)
    instead of importing it twice; the key with another file is refused.

    The file streams straight to disk, refused (413) as soon as it passes the size limit.
    At most `CAUCE_LEADS__MAX_QUEUED_IMPORTS` imports wait or run at once, and
    `CAUCE_LEADS__MAX_QUEUED_IMPORTS_PER_KEY` of one API key: past either an upload is
    refused before its body is read (429 `key_imports_full` when the key is at its share,
    else 503 `import_queue_full`, with `Retry-After`). A retry with an `Idempotency-Key`
    that was answered before is never refused by them: it imports nothing new."""
    rt = runtime(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            "send the CSV as multipart/form-data: a file part named `file`, and optionally "
            "an `options` JSON field"
        )
    actor = f"apikey:{principal.key_id}"
    # A retry of an upload answered before records no import: the bounds do not refuse
    # it (a key at its share could never learn its last import's id otherwise).
    answered = await _answered_before(request, principal, rt)
    async with imports_upload.upload_slot(rt, actor, bounded=not answered):
        with _names_the_file():
            received = await imports_upload.receive_form(
                rt,
                request.headers,
                request.stream(),
                max_files=2,
                max_fields=len(import_form.FORM_PARTS) + 8,
            )
        try:
            file, options = import_form.form_parts(received.form)
            parsed = import_form.parse_options(options)
            with _names_the_file():
                received.probe(parsed)
        except BaseException:
            received.discard()
            raise
        path, size = received.path, received.size
        assert path is not None  # a `file` part is there (`form_parts`), so it was stored
        created = False

        async def work(session: AsyncSession) -> tuple[int, object]:
            nonlocal created
            await imports_upload.check_room(session, rt, actor)
            record = await imports_upload.create_import(
                session,
                rt,
                path=path,
                size=size,
                filename=file.filename,
                options=parsed,
                actor=actor,
            )
            await session.flush()
            await session.refresh(record)
            created = True
            return 202, _status(record).model_dump(mode="json")

        # The request, for the key: the file's digest, its name and the options, these by
        # their JSON value (`{}` is no options, key order and spacing do not count).
        sent = b"\0".join([received.digest, (file.filename or "").encode(), _options_key(options)])
        try:
            response = await idempotent(request, principal, sent, rt, work)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    if created:
        return response
    # A replay: the first upload of this file is the one imported, and the answer is
    # that import as it is now, not as it was queued.
    path.unlink(missing_ok=True)
    return await _replayed(rt, response)


async def _answered_before(request: Request, principal: Principal, rt: LeadsRuntime) -> bool:
    """Whether the request's Idempotency-Key already holds an answer (`idempotent` then
    replays it, or refuses a reuse, once the body is read)."""
    raw_key = request.headers.get(HEADER)
    if raw_key is None:
        return False
    key = check_key(raw_key)  # a bad key is refused before its body is read
    async with rt.sessionmaker() as session:
        return await IDEMPOTENCY.answered(session, str(principal.api_key_id), key)


def _options_key(options: str | None) -> bytes:
    """The options as the idempotency key compares them: by JSON value, no options and
    `{}` alike (they import alike). No options keep the form keys stored before this had
    (an empty string)."""
    if not options:
        return b""
    canonical = canonical_json(options.encode())
    return b"" if canonical == b"{}" else canonical


async def _replayed(rt: LeadsRuntime, response: Response) -> Response:
    """The replayed answer with the import's current status (the stored one, if it is
    not an import's)."""
    try:
        first = orjson.loads(response.body)
        import_id = int(first["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return response
    async with rt.sessionmaker() as session:
        record = await session.get(LeadImport, import_id)
    if record is None:
        return response
    status = _status(record, await imports_upkeep.stopped_detail(rt, record)).model_dump(
        mode="json"
    )
    return Response(
        orjson.dumps(status),
        status_code=response.status_code,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


@imports_router.get(
    "/{import_id}",
    response_model=ImportStatus,
    summary="Import progress",
    responses=_import_problems(("leads:read",)),
    openapi_extra=IMPORT_ID,
)
async def import_status(request: Request, principal: Read) -> ImportStatus:
    """Progress and counts of an import."""
    rt = runtime(request)
    async with rt.sessionmaker() as session:
        record = await imports.get_import(session, _import_id(request))
    # The job is read after the session is closed: one connection at a time.
    return _status(record, await imports_upkeep.stopped_detail(rt, record))


@imports_router.post(
    "/{import_id}/cancel",
    response_model=ImportStatus,
    summary="Cancel an import",
    responses={
        202: {
            "description": "The import is running: it stops at the end of the rows it is "
            "importing now (`state: cancelling`); poll its status",
            "model": ImportStatus,
        },
        **_import_problems(
            ("leads:write", "leads:read"),
            {
                409: "`import_finished`: the import already ended on its own (`state` says "
                "how, `import` is its status)"
            },
        ),
    },
    openapi_extra=IMPORT_ID,
)
async def cancel_import(request: Request, principal: WriteRead) -> Response:
    """Stop an import. A queued one never starts, and the answer (200) says `cancelled`.
    A running one stops at the next chunk boundary (at most 200 rows later): the answer
    is 202 with `state: cancelling`, then its status turns `cancelled`. The rows imported
    until it stopped stay, and so does their error report. Asking again answers the
    import's status as it is then; an import that already succeeded or failed is a 409
    `import_finished`."""
    rt = runtime(request)
    record = await imports_upkeep.cancel_import(
        rt, _import_id(request), f"apikey:{principal.key_id}"
    )
    status = _status(record, await imports_upkeep.stopped_detail(rt, record))
    if record.status not in (imports.CANCELLING, imports.CANCELLED):
        raise ImportFinished(
            f"the import already {record.status}: there is nothing left to cancel",
            state=record.status,
            **{"import": status.model_dump(mode="json")},
        )
    code = 202 if record.status == imports.CANCELLING else 200
    return Response(
        orjson.dumps(status.model_dump(mode="json")),
        status_code=code,
        media_type="application/json",
    )


@imports_router.get(
    "/{import_id}/errors.csv",
    response_class=StreamingResponse,
    summary="Rejected rows of an import",
    responses={
        200: {"content": {"text/csv": {}}},
        **_import_problems(
            ("leads:read",), {409: "`import_not_finished`: the import is still running"}
        ),
    },
    openapi_extra=IMPORT_ID,
)
async def import_errors(request: Request, principal: Read) -> StreamingResponse:
    """One line per rejected field: row, the CSV column (its header as in the file),
    the lead field, reason; in the upload's delimiter (`,`, `;` or tab; commas for any
    other). An import whose job failed or was cancelled has the rows rejected so far."""
    rt = runtime(request)
    async with rt.sessionmaker() as session:
        record = await imports.get_import(session, _import_id(request))
    if (
        record.status in imports.LIVE_STATES
        and await imports_upkeep.stopped_detail(rt, record) is None
    ):
        raise ImportNotFinished("the import is still running; its report is not complete")
    found, mapping, delimiter = record.id, dict(record.mapping or {}), record.delimiter
    return StreamingResponse(
        _report(rt, found, mapping, delimiter),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{found}-errors.csv"'},
    )


async def _report(
    rt: LeadsRuntime, import_id: int, mapping: dict[str, str | None], delimiter: str | None
) -> AsyncIterator[bytes]:
    """The report's bytes, read and written a page at a time: bounded memory whatever
    its length, and the event loop free between pages (a report of 600,000 lines built
    at once took 940 MB and stalled every other request for half a minute)."""
    out = io.BytesIO()
    writer = ErrorReportWriter(out, delimiter=delimiter)
    async for lines in imports.error_pages(rt.sessionmaker, import_id, mapping):
        writer.write(lines)
        if out.tell():
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    writer.close()
    if out.tell():
        yield out.getvalue()
