"""CSV import endpoints and the inbound CRM webhook endpoint."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response, StreamingResponse

from cauce.core.db import unit_of_work
from cauce.core.errors import NotFound, ServiceUnavailable, UnsupportedMediaType, malformed_json
from cauce.core.security.apikeys import Principal
from cauce.core.web.auth import require_scope
from cauce.core.web.problems import json_pointer
from cauce.core.web.routing import CauceRoute
from cauce.leads import imports
from cauce.leads.csv_columns import check_mapping
from cauce.leads.csv_export import REPORT_COLUMNS, csv_export
from cauce.leads.endpoints import idempotent, parse_id, runtime
from cauce.leads.errors import (
    FieldError,
    ImportFileInvalid,
    ImportMappingInvalid,
    ImportNotFinished,
    ImportRequestInvalid,
    ImportTooLarge,
    LeadImportError,
)
from cauce.leads.models import LeadImport
from cauce.leads.responses import ImportColumn, ImportStatus
from cauce.leads.schemas import ImportOptionsIn, field_errors
from cauce.leads.service import LeadsRuntime
from cauce.leads.webhooks import (
    INBOUND_TASK,
    SOURCE_HUBSPOT,
    InvalidSignature,
    parse_events,
    record_events,
    verify_hubspot,
)

imports_router = APIRouter(prefix="/v1/leads/import", route_class=CauceRoute, tags=["leads"])
webhooks_router = APIRouter(prefix="/v1/webhooks", route_class=CauceRoute, tags=["webhooks"])

Write = Annotated[Principal, Depends(require_scope("leads:write"))]
Read = Annotated[Principal, Depends(require_scope("leads:read"))]
UPLOAD_CHUNK = 256 * 1024


def _status(record: LeadImport) -> ImportStatus:
    mapping = record.mapping or {}
    return ImportStatus(
        id=str(record.id),
        state=record.status,  # type: ignore[arg-type]
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
        detail=record.error,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


def _import_id(raw: str) -> int:
    import_id = parse_id(raw)
    if import_id is None:
        raise NotFound(f"no import with id {raw}")
    return import_id


_FORM_PARTS = ("file", "options")
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The CSV: UTF-8 (with or without BOM), UTF-16, "
                            "cp1252 or Latin-1; `,`, `;`, tab or `|`",
                        },
                        "options": {
                            "type": "string",
                            "description": "JSON: mapping, unknown_columns, delimiter, "
                            "encoding, default_phone_region, consent_wording_version",
                            "contentSchema": ImportOptionsIn.model_json_schema(),
                        },
                    },
                }
            }
        },
    }
}


def _part_error(name: str, detail: str, kind: str) -> FieldError:
    return FieldError(pointer=json_pointer(("body", name)), detail=detail, type=kind)


def _form_parts(form: FormData) -> tuple[UploadFile, str | None]:
    """The file and the options of the form, or `ImportRequestInvalid` naming each bad
    part (the parts are read by hand so that every mistake gets its own words)."""
    errors: list[FieldError] = []
    for name in dict.fromkeys(form.keys()):
        if name not in _FORM_PARTS:
            hint = " (the mapping goes inside `options`)" if name == "mapping" else ""
            shown = name if len(name) <= 100 else name[:100] + "…"
            errors.append(
                _part_error(
                    name,
                    f"this endpoint takes a `file` and an `options` part, not '{shown}'{hint}",
                    "part_unknown",
                )
            )
        elif len(form.getlist(name)) > 1:
            errors.append(_part_error(name, f"`{name}` is sent more than once", "part_repeated"))
    file, options = form.get("file"), form.get("options")
    if file is None:
        errors.append(
            _part_error(
                "file",
                "the CSV file is missing: send it as a multipart part named `file`",
                "missing",
            )
        )
    elif not isinstance(file, UploadFile):
        errors.append(
            _part_error(
                "file",
                "`file` came as a plain form field, not a file: a file part needs a "
                "filename, and an empty one makes some clients send a plain field "
                "(e.g. curl -F file=@leads.csv)",
                "file_expected",
            )
        )
    if options is not None and not isinstance(options, str):
        errors.append(
            _part_error("options", "`options` is a file: send it as a plain JSON field", "text")
        )
    if errors:
        raise ImportRequestInvalid(errors)
    assert isinstance(file, UploadFile)
    return file, options if isinstance(options, str) else None


class ImportOptionsInvalid(LeadImportError):
    """The `options` JSON is not an object, or one of its options other than the mapping
    is wrong (an unknown option, a delimiter or encoding not offered...); `errors` points
    into it (`/options`, `/options/delimiter`).

    Its own code, not `import_mapping_invalid`: a client told its mapping is wrong would
    look for the mistake in the wrong place.
    """

    # Belongs in `cauce.leads.errors` next to `ImportMappingInvalid`; here until it moves.
    status_code = 422
    code = "import_options_invalid"
    title = "Invalid import options"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        super().__init__(detail or f"{len(errors)} import option(s) are invalid", errors=errors)
        self.errors = errors


def _in_mapping(pointer: str) -> bool:
    return pointer == "/options/mapping" or pointer.startswith("/options/mapping/")


def _parse_options(options: str | None) -> ImportOptionsIn:
    try:
        parsed = ImportOptionsIn.model_validate_json(options or "{}")
    except ValidationError as exc:
        malformed = malformed_json(
            exc.errors(), json_pointer(("body", "options")), "the `options` form field"
        )
        if malformed is not None:
            raise malformed from None
        errors = field_errors(exc, "/options")
        # Only errors inside `mapping` are mapping errors; with any other, every error is
        # reported as an options error (a mapping error among them keeps its pointer).
        if all(_in_mapping(e["pointer"]) for e in errors):
            raise ImportMappingInvalid(errors) from None
        raise ImportOptionsInvalid(errors) from None
    check_mapping(parsed.mapping)  # before the upload is stored, not after
    return parsed


async def _store(
    rt: LeadsRuntime, chunks: AsyncIterator[bytes], parsed: ImportOptionsIn
) -> tuple[Path, int]:
    """Store the upload; a file refused as a whole names the `file` part."""
    try:
        return await imports.store_upload(rt, chunks, parsed)
    except (ImportFileInvalid, ImportTooLarge) as exc:
        if "errors" in exc.extra:
            raise
        error = _part_error("file", exc.detail, exc.code)
        raise type(exc)(exc.detail, errors=[error], **exc.extra) from exc


@imports_router.post(
    "",
    status_code=202,
    response_model=ImportStatus,
    summary="Import a CSV",
    openapi_extra=_UPLOAD_BODY,
)
async def start_import(request: Request, principal: Write) -> Response:
    """Store the file and queue its import; poll the returned status for progress.

    The body is `multipart/form-data`: the CSV as the file part `file`, and optionally
    the JSON `options` field. With an `Idempotency-Key`, the same file (same name, same
    options) sent again answers the first import's status (`Idempotent-Replayed: true`)
    instead of importing it twice; the key with another file is refused."""
    rt = runtime(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            "send the CSV as multipart/form-data: a file part named `file`, and optionally "
            "an `options` JSON field"
        )
    async with request.form(max_files=2, max_fields=len(_FORM_PARTS) + 8) as form:
        file, options = _form_parts(form)
        parsed = _parse_options(options)
        digest = hashlib.sha256()

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await file.read(UPLOAD_CHUNK):
                digest.update(chunk)
                yield chunk

        path, size = await _store(rt, chunks(), parsed)
    created = False

    async def work(session: AsyncSession) -> tuple[int, object]:
        nonlocal created
        record = await imports.create_import(
            session,
            rt,
            path=path,
            size=size,
            filename=file.filename,
            options=parsed,
            actor=f"apikey:{principal.key_id}",
        )
        await session.flush()
        await session.refresh(record)
        created = True
        return 202, _status(record).model_dump(mode="json")

    # The request, for the key: the file's digest, its name and the options.
    sent = b"\0".join([digest.digest(), (file.filename or "").encode(), (options or "").encode()])
    try:
        response = await idempotent(request, principal, sent, rt, work)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if not created:  # a replay: the first upload of this file is the one imported
        path.unlink(missing_ok=True)
    return response


@imports_router.get("/{import_id}", response_model=ImportStatus, summary="Import progress")
async def import_status(request: Request, principal: Read, import_id: str) -> ImportStatus:
    """Progress and counts of an import."""
    rt = runtime(request)
    async with rt.sessionmaker() as session:
        return _status(await imports.get_import(session, _import_id(import_id)))


@imports_router.get(
    "/{import_id}/errors.csv",
    response_class=StreamingResponse,
    summary="Rejected rows of an import",
    responses={200: {"content": {"text/csv": {}}}},
)
async def import_errors(request: Request, principal: Read, import_id: str) -> StreamingResponse:
    """One line per rejected field: row, the CSV column (its header as in the file),
    the lead field, reason."""
    rt = runtime(request)
    async with rt.sessionmaker() as session:
        record = await imports.get_import(session, _import_id(import_id))
        if record.status in ("queued", "running"):
            raise ImportNotFinished("the import is still running; its report is not complete")
        lines = await imports.error_lines(session, record.id)
    rows = ({"row": x.row, "column": x.column, "field": x.field, "reason": x.reason} for x in lines)
    return StreamingResponse(
        csv_export(rows, REPORT_COLUMNS),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{record.id}-errors.csv"'},
    )


@webhooks_router.post("/hubspot", status_code=204, summary="HubSpot webhook (signed)")
async def hubspot_webhook(request: Request) -> Response:
    """Verify HubSpot's v3 signature, record each event once, process them in a job.

    Authenticated by the signature, not an API key (HubSpot cannot send one).
    """
    rt = runtime(request)
    secret = rt.settings.crm.webhook_secret
    if secret is None:
        raise ServiceUnavailable("HubSpot webhooks are not configured (CAUCE_CRM__WEBHOOK_SECRET)")
    body = await request.body()
    try:
        verify_hubspot(
            secret.get_secret_value(), request.method, str(request.url), body, request.headers
        )
    except InvalidSignature:
        rt.metrics.webhooks_rejected.labels(SOURCE_HUBSPOT, "signature").inc()
        raise
    events = parse_events(body)
    async with unit_of_work(rt.sessionmaker) as session:
        new = await record_events(session, SOURCE_HUBSPOT, events)
        if new:
            await rt.queue.defer(
                session, INBOUND_TASK, {"source": SOURCE_HUBSPOT}, dedupe_key="crm-inbound"
            )
    return Response(status_code=204, headers={"X-Cauce-Recorded": orjson.dumps(new).decode()})
