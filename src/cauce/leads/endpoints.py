"""The leads HTTP API: thin handlers that parse, call the service and render.

`POST` handlers read the raw body and validate it with `model_validate_json` (one pass,
no intermediate dict), which matters on the hot intake path; their OpenAPI request
schemas are declared explicitly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import (
    BaseModel,
    ValidationError,
)
from starlette.responses import Response

from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.errors import UnsupportedMediaType, malformed_json
from cauce.core.security.apikeys import Principal
from cauce.core.security.scopes import grants
from cauce.core.web.auth import BEARER_SECURITY, authorize, require_scope, require_scopes
from cauce.core.web.idempotency import (
    HEADER,
    IdempotencyKeyUnfinished,
    IdempotencyStore,
    check_key,
    fingerprint,
)
from cauce.core.web.openapi import (
    DATABASE_UNAVAILABLE,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_INVALID,
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED_BODY,
    NUL_IN_URL,
    PAYLOAD_TOO_LARGE,
    VALIDATION_FAILED,
    Reasons,
    inline_schema,
    key_problems,
    path_parameter,
    problems,
    unsupported_media_type,
)
from cauce.core.web.problems import echo
from cauce.core.web.routing import CauceRoute
from cauce.leads import repository_lead as repo_lead
from cauce.leads import service_edit, service_review
from cauce.leads.batch_parts import Batch, answer_of, in_parts, in_parts_now
from cauce.leads.errors import LeadInvalid, LeadNotFound
from cauce.leads.field_types import IntakeOptions
from cauce.leads.intake_groups import Claim
from cauce.leads.responses import (
    BatchAccepted,
    BatchItemResult,
    BatchResult,
    LeadAccepted,
    LeadCreated,
    LeadDetailOut,
    LeadOut,
)
from cauce.leads.schemas import LeadIn, LeadPatch
from cauce.leads.schemas_batch import (
    MAX_ITEM_ERRORS,
    LeadBatchIn,
    crowded,
    field_errors,
    validate_batch,
)
from cauce.leads.schemas_requests import LeadReviewIn
from cauce.leads.service import IntakeResult, LeadsRuntime, intake, intake_many
from cauce.leads.views import created_view, detail_view, listed_view

router = APIRouter(prefix="/v1/leads", route_class=CauceRoute, tags=["leads"])

READ: Final = "leads:read"
Read = Annotated[Principal, Depends(require_scope(READ))]
WRITE: Final = "leads:write"
Write = Annotated[Principal, Depends(require_scope(WRITE))]
Admin = Annotated[Principal, Depends(require_scope("leads:admin"))]
# A change or a review answers the whole lead: a key that may not read leads is not shown
# one (a form's write-only key could otherwise read any lead by patching it with `{}`).
WriteRead = Annotated[Principal, Depends(require_scopes(WRITE, READ))]

IDEMPOTENCY = IdempotencyStore()


def runtime(request: Request) -> LeadsRuntime:
    """The leads runtime the composition root built."""
    rt: LeadsRuntime = request.app.state.leads
    return rt


def _actor(principal: Principal) -> str:
    return f"apikey:{principal.key_id}"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


JSON: Final = "application/json"
# The header of an answer replayed from its `Idempotency-Key`.
REPLAYED: Final = {"Idempotent-Replayed": "true"}
MERGE_PATCH: Final = "application/merge-patch+json"  # RFC 7396


_BOM = b"\xef\xbb\xbf"
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


async def _json_body(request: Request, accepted: tuple[str, ...] = (JSON,)) -> bytes:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in accepted:
        raise UnsupportedMediaType(f"this endpoint accepts {' or '.join(accepted)} bodies only")
    charset = _CHARSET.search(content_type) if ";" in content_type else None
    if charset is not None and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            f"JSON bodies are read as UTF-8; this one says charset={charset.group(1)}"
        )
    body = await request.body()
    # A UTF-8 byte order mark (Windows tools add one) may be ignored (RFC 8259 §8.1).
    return body[3:] if body.startswith(_BOM) else body


def _invalid(exc: ValidationError, body: bytes, model: type[BaseModel]) -> Exception:
    """A broken JSON body's 400, or the fields' 422: at most `MAX_ITEM_ERRORS` errors, or
    the one of an object with far more members than its model has fields (`crowded`)."""
    count = exc.error_count()
    if count <= MAX_ITEM_ERRORS:
        return malformed_json(exc.errors()) or LeadInvalid(field_errors(exc))
    # Broken JSON is one error, so the body parses. Only this many errors can come from
    # a crowded object, and then turning each into a dict costs more than reading the
    # body again (60,000 unknown members in 1 MiB: 0.3 s, and 5 MB of answer).
    too_many = crowded(_parsed(body), model)
    if too_many is not None:
        return LeadInvalid([too_many])
    return LeadInvalid(field_errors(exc, most=MAX_ITEM_ERRORS), f"{count} field(s) are invalid")


def _parsed(body: bytes) -> Any:
    """`body`, JSON that pydantic read, as Python values (None if it cannot be)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # what orjson refuses and pydantic reads: an integer past 64 bits, NaN...
    try:
        return json.loads(body)
    except ValueError:
        return None


def _options(rt: LeadsRuntime, region: str | None = None) -> IntakeOptions:
    leads = rt.settings.leads
    return IntakeOptions(
        default_phone_region=region or leads.default_region,
        now=utcnow(),
        max_batch=leads.max_batch,
    )


Work = Callable[[Any], Awaitable[tuple[int, Any]]]
# What a caller is shown of an answer's body: its status and body.
Shown = Callable[[Any], tuple[int, Any]]


async def idempotent(
    request: Request,
    principal: Principal,
    body: bytes,
    rt: LeadsRuntime,
    work: Work,
    *,
    shows_lead: bool = False,
    shown: Shown | None = None,
) -> Response:
    """Run `work(session)` in one transaction, remembering its answer under the key
    (`Idempotency-Key`, Stripe's semantics; `body` is what identifies the request).
    Every caller's statements are bounded by its request (`unit_of_work`'s `short`).

    `shows_lead`: the answer is a lead's view, contact data included; it is stored with
    that lead's id as its subject, and the lead's erasure deletes it.

    `shown`: the caller sees only `shown(body)` of the answer (a write-only key, see
    `_lead_accepted`), which is what is stored; a replayed answer goes through it too (one
    stored whole by the group commit, or before keys were shown less)."""
    raw_key = request.headers.get(HEADER)
    async with unit_of_work(rt.sessionmaker, short=True) as session:
        if raw_key is None:
            status, payload = _shown(shown, *(await work(session)))
            return _json(status, payload)
        key = check_key(raw_key)
        scope = str(principal.api_key_id)
        print_ = fingerprint(request.method, request.url.path, body)
        await IDEMPOTENCY.enter(session, scope, key)
        stored = await IDEMPOTENCY.lookup(session, scope, key, print_)
        if stored is not None:
            status, payload = _shown(shown, stored.status_code, stored.body)
            return _json(status, payload, REPLAYED)
        status, payload = _shown(shown, *(await work(session)))
        subject = payload.get("id") if shows_lead and isinstance(payload, dict) else None
        await IDEMPOTENCY.remember(session, scope, key, print_, status, payload, subject)
    return _json(status, payload)


def _claim(request: Request, principal: Principal, body: bytes) -> Claim | None:
    """The request's `Idempotency-Key`, for work that stores its answer itself."""
    raw_key = request.headers.get(HEADER)
    if raw_key is None:
        return None
    print_ = fingerprint(request.method, request.url.path, body)
    return Claim(str(principal.api_key_id), check_key(raw_key), print_)


def _shown(shown: Shown | None, status: int, payload: Any) -> tuple[int, Any]:
    return (status, payload) if shown is None else shown(payload)


# A key without `leads:read` (a web form's) is shown nothing of the leads Cauce holds:
# the outcome of an intake (merged into a lead Cauce had, held against one), its id,
# score and owner would tell it which emails and phones are stored. It gets one status
# and body whatever became of its lead. A batch item's errors are about what it sent.
ACCEPTED_STATUS: Final = 202
_ACCEPTED: Final = LeadAccepted().model_dump(mode="json")


def _lead_accepted(payload: Any) -> tuple[int, Any]:
    """What a key without `leads:read` is shown of an intake's answer."""
    return ACCEPTED_STATUS, dict(_ACCEPTED)


def _batch_accepted(payload: Any) -> tuple[int, Any]:
    """What a key without `leads:read` is shown of a batch's answer (`BatchAccepted`);
    the same for an answer shown so already."""
    items = [
        {
            "index": item["index"],
            "accepted": item["outcome"] != "rejected" if "outcome" in item else item["accepted"],
            "errors": item.get("errors") or [],
        }
        for item in payload["items"]
    ]
    counts = {name: payload[name] for name in ("received", "accepted", "rejected")}
    return ACCEPTED_STATUS, counts | {"items": items}


def _schema_body(model: type[BaseModel], media: tuple[str, ...] = (JSON,)) -> dict[str, Any]:
    schema = inline_schema(model)
    return {
        "requestBody": {
            "required": True,
            "content": {name: {"schema": schema} for name in media},
        }
    }


# The error answers of the routes below, for the OpenAPI document (ADR 0003): each
# status the route can give, with the codes it may carry.
INTAKE_BUSY: Final = (
    "`intake_busy`: too many leads wait for their transaction, or the leads this one "
    "matched keep changing; retry after `Retry-After` seconds"
)
LEAD_NOT_FOUND: Final = "`lead_not_found`: no lead with this id"
LEAD_GONE: Final = (
    "`lead_erased`: the lead was erased (GDPR), its tombstone is all that is left",
    "`lead_merged`: a review merged it into another lead, named in `merged_into`",
)
JSON_ONLY: Final = unsupported_media_type("`application/json`")
WRITE_ONLY_LEAD: Final = (
    "The answer to a key without `leads:read` (a web form's), whatever became of the lead "
    "(created, merged into a lead Cauce had, held for review): it shows nothing of the "
    "leads Cauce holds"
)
BATCH_AS_A_WHOLE: Final = "(of the batch as a whole: an item's own errors are in its answer)"
WRITE_ONLY_BATCH: Final = (
    "The answer to a key without `leads:read` (a web form's): whether each item was "
    "accepted, with a rejected item's `errors`, and nothing of the leads Cauce holds"
)


def _intake_problems(invalid: str) -> dict[int | str, dict[str, Any]]:
    """The error answers of an intake route (one lead, a batch)."""
    answers: dict[int, Reasons] = {
        **key_problems(WRITE),
        400: [NUL_IN_URL, MALFORMED_BODY, IDEMPOTENCY_KEY_INVALID],
        409: IDEMPOTENCY_KEY_IN_USE,
        413: PAYLOAD_TOO_LARGE,
        415: JSON_ONLY,
        422: [invalid, IDEMPOTENCY_KEY_REUSED],
        503: [INTAKE_BUSY, DATABASE_UNAVAILABLE],
    }
    return problems(answers)


def _lead_problems(
    scopes: tuple[str, ...], more: dict[int, Reasons] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route on one lead, needing `scopes`, and `more`."""
    answers: dict[int, Reasons] = {
        400: NUL_IN_URL,
        **key_problems(*scopes),
        404: LEAD_NOT_FOUND,
        410: LEAD_GONE,
    }
    return problems(answers | (more or {}))


# The lead's id in the path, read by hand (`request.path_params`): it is any text (one
# that is no UUID names no lead, a 404), so FastAPI has nothing to check, and declared
# to it the parameter would have it document a 422 that never comes.
LEAD_ID: Final = path_parameter("lead_id", "The lead's `id` (a UUID)")


# Optimistic concurrency on one lead (RFC 9110): its answers carry its version as an
# `ETag`, and a change or an erasure sent with `If-Match` goes ahead only on that version.
IF_MATCH: Final[dict[str, Any]] = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'The lead\'s `ETag` as read (`"3"`; `*` for any version): the change '
    "is made only if nobody changed the lead since, else 412 `precondition_failed`.",
    "schema": {"type": "string"},
}
ETAG_HEADER: Final[dict[str, Any]] = {
    "ETag": {
        "description": "The lead's version, for `If-Match` on a later change.",
        "schema": {"type": "string"},
    }
}


def _with_etag(answers: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A lead's answers, its 200 carrying the lead's `ETag`."""
    return {200: {"headers": ETAG_HEADER}, **answers}


PRECONDITION_FAILED: Final = (
    "`precondition_failed`: the lead changed since the `If-Match` version was read"
)


def _path_lead(request: Request) -> str:
    """The lead id of the path, as stored (`lead_uid`)."""
    return lead_uid(request.path_params["lead_id"])


@router.post(
    "",
    status_code=201,
    response_model=LeadCreated,
    response_description="A new lead (`outcome`: `created`, or `held_for_review` when it "
    "may be a duplicate a person should decide on)",
    responses={
        200: {
            "model": LeadCreated,
            "description": "Merged into a lead Cauce had (`outcome: merged`, the lead's `id`)",
        },
        ACCEPTED_STATUS: {"model": LeadAccepted, "description": WRITE_ONLY_LEAD},
        **_intake_problems(f"{VALIDATION_FAILED} (of the lead)"),
    },
    openapi_extra=_schema_body(LeadIn) | BEARER_SECURITY | {"parameters": [IDEMPOTENCY_KEY]},
    summary="Accept one lead",
)
async def create_lead(request: Request) -> Response:
    """Validate, de-duplicate, score, route and store one lead; its CRM sync is queued."""
    principal = await authorize(request, WRITE)  # in the body: see `authorize`
    rt = runtime(request)
    rt.singles.note()
    body = await _json_body(request)
    try:
        lead_in = LeadIn.model_validate_json(body, context=_options(rt).context())
    except ValidationError as exc:
        rt.metrics.intake.labels("rejected").inc()
        raise _invalid(exc, body, LeadIn) from None
    shown = None if grants(principal.scopes, READ) else _lead_accepted

    if rt.groups is not None:  # committed with the other leads arriving now (ADR 0009)
        answer = await rt.groups.submit(
            lead_in, _actor(principal), _claim(request, principal, body)
        )
        replayed = REPLAYED if answer.replayed else None
        # The group stores the whole answer under the key: a key without `leads:read` is
        # shown, and shown again on a replay, only what it may see.
        status, payload = _shown(shown, answer.status, answer.body)
        return _json(status, payload, replayed)

    async def work(session: Any) -> tuple[int, Any]:
        result = await intake(session, rt, lead_in, actor=_actor(principal))
        await session.flush()
        status = 201 if result.outcome != "merged" else 200
        return status, created_view(result).model_dump(mode="json")

    return await idempotent(request, principal, body, rt, work, shown=shown)


def _item(index: int, result: IntakeResult) -> dict[str, Any]:
    """One accepted batch item, as `BatchItemResult.model_dump(mode="json")` gives it.

    Built directly: a batch has up to 1,000 of them (a test holds it to the model).
    """
    dup = result.duplicate
    return {
        "index": index,
        "outcome": result.outcome,
        "id": result.lead.uid,
        "score": float(result.score.value),
        "owner": result.lead.owner,
        "duplicate": None
        if dup is None
        else {
            "lead_id": dup.lead_uid,
            "match": dup.match if dup.match in ("email", "phone") else "fuzzy",
            "confidence": float(dup.confidence),
            "action": dup.action,
            "merged_fields": list(dup.merged_fields),
        },
        "errors": [],
    }


@router.post(
    "/batch",
    response_model=BatchResult,
    response_description="Each item's outcome: an invalid item is `rejected` with its "
    "`errors`, and the others are kept",
    responses={
        ACCEPTED_STATUS: {"model": BatchAccepted, "description": WRITE_ONLY_BATCH},
        **_intake_problems(f"{VALIDATION_FAILED} {BATCH_AS_A_WHOLE}"),
    },
    openapi_extra=_schema_body(LeadBatchIn) | BEARER_SECURITY | {"parameters": [IDEMPOTENCY_KEY]},
    summary="Accept a batch of leads (up to 1,000 by default: CAUCE_LEADS__MAX_BATCH)",
)
async def create_batch(request: Request) -> Response:
    """Each item is validated on its own: valid items are kept even when others fail.

    While single leads come, more valid leads than `CAUCE_LEADS__BATCH_TRANSACTION_SIZE`
    (250) are stored in parts, each committed on its own, so single leads do not wait for
    the whole batch. A 200 means every accepted lead is stored; after a failure the parts
    before it stay stored, and a retry with the same `Idempotency-Key` goes on from them."""
    principal = await authorize(request, WRITE)
    rt = runtime(request)
    body = await _json_body(request)
    options = _options(rt)
    try:
        batch = LeadBatchIn.model_validate_json(body, context=options.context())
    except ValidationError as exc:
        raise _invalid(exc, body, LeadBatchIn) from None
    checked = validate_batch(batch.items, options)
    if checked.invalid:
        rt.metrics.intake.labels("rejected").inc(len(checked.invalid))
    validated = Batch(
        len(batch.items),
        checked.valid,
        [
            BatchItemResult.model_validate(
                {"index": bad.index, "outcome": "rejected", "errors": bad.errors}
            ).model_dump(mode="json")
            for bad in checked.invalid
        ],
    )
    shown = None if grants(principal.scopes, READ) else _batch_accepted
    if in_parts_now(rt, len(checked.valid)):
        return await _in_parts(request, principal, body, rt, validated, shown)

    async def work(session: Any) -> tuple[int, Any]:
        valid = [lead_in for _, lead_in in checked.valid]
        results = await intake_many(session, rt, valid, actor=_actor(principal))
        await session.flush()
        accepted = {
            index: _item(index, result)
            for (index, _), result in zip(checked.valid, results, strict=True)
        }
        return 200, answer_of(validated, accepted)

    try:
        return await idempotent(request, principal, body, rt, work, shown=shown)
    except IdempotencyKeyUnfinished:
        # A batch of more leads under this key was committed in parts and stopped (or is
        # running): go on with it (or wait for it), in as many parts as it takes now.
        return await _in_parts(request, principal, body, rt, validated, shown)


async def _in_parts(
    request: Request,
    principal: Principal,
    body: bytes,
    rt: LeadsRuntime,
    batch: Batch,
    shown: Shown | None,
) -> Response:
    """A batch committed in parts (`batch_parts`), remembered part by part under its key."""
    keyed = _claim(request, principal, body)
    answer = await in_parts(rt, IDEMPOTENCY, keyed, batch, _actor(principal), _item, shown)
    return _json(answer.status, answer.body, REPLAYED if answer.replayed else None)


# Ids are positive BIGINTs: at most 19 digits (and ASCII ones: "²".isdigit() is true).
MAX_ID = 2**63 - 1


def parse_id(raw: str) -> int | None:
    """`raw` as a row id, or None when it cannot be one."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


# A lead's public id is `str(uuid4())`: the hyphenated form, in lower case. RFC 9562
# reads the hex digits of a UUID case-insensitively, so clients may send it in any case.
_LEAD_UID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def lead_uid(raw: str) -> str:
    """`raw`, a lead id from the URL, as stored (lower case); `LeadNotFound` when it is
    no UUID, so no lead can have it (and the 404 quotes only its start)."""
    if _LEAD_UID.fullmatch(raw) is None:
        raise LeadNotFound(f"no lead with id {echo(raw)}")
    return raw.lower()


@router.get(
    "/{lead_id}",
    response_model=LeadDetailOut,
    responses=_with_etag(_lead_problems(("leads:read",))),
    openapi_extra={"parameters": [LEAD_ID]},
    summary="One lead with its score explanation, duplicates, history",
)
async def get_lead(request: Request, principal: Read) -> Response:
    """A lead with its sources, possible duplicates and history."""
    uid = _path_lead(request)
    rt = runtime(request)
    async with rt.sessionmaker() as session:
        found = await service_edit.detail(session, uid)
        return _json(200, detail_view(found), {"ETag": service_edit.etag(found.lead)})


@router.patch(
    "/{lead_id}",
    response_model=LeadOut,
    responses=_with_etag(
        _lead_problems(
            (WRITE, "leads:read"),
            {
                400: [NUL_IN_URL, MALFORMED_BODY],
                409: "`lead_duplicate`: another lead has this email, phone or tax id (named "
                "in `duplicate_of`)",
                412: PRECONDITION_FAILED,
                413: PAYLOAD_TOO_LARGE,
                415: unsupported_media_type(f"`{JSON}` or `{MERGE_PATCH}`"),
                422: f"{VALIDATION_FAILED} (of the change)",
            },
        )
    ),
    openapi_extra=_schema_body(LeadPatch, (JSON, MERGE_PATCH))
    | {"parameters": [LEAD_ID, IF_MATCH]},
    summary="Change a lead (JSON merge patch)",
)
async def patch_lead(request: Request, principal: WriteRead) -> Response:
    """Only the fields sent change; `null` clears one. The lead is synced again."""
    uid = _path_lead(request)
    rt = runtime(request)
    body = await _json_body(request, (JSON, MERGE_PATCH))
    async with unit_of_work(rt.sessionmaker) as session:
        region = None
        if _needs_country(body):
            # A national number is read in the lead's own country, and a full name split
            # by its naming convention, as at intake.
            region = (await service_edit.live_lead(session, uid)).country
        options = replace(_options(rt, region), stored_country=region)
        changes = _patch_of(body, options)
        lead = await service_edit.patch(
            session, rt, uid, changes, _actor(principal), if_match=_if_match(request)
        )
        await session.flush()
        extras = await repo_lead.listed_extras(session, [lead])
        out = listed_view(lead, extras).model_dump(mode="json")
        tag = service_edit.etag(lead)
    return _json(200, out, {"ETag": tag})


def _if_match(request: Request) -> str | None:
    """The request's `If-Match`: a change goes ahead only on the version it names."""
    return request.headers.get("if-match")


def _needs_country(body: bytes) -> bool:
    """Whether a change reads something by the lead's country: a phone or a full name
    sent without `country`."""
    try:
        sent = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False  # `_patch_of` says why
    return (
        isinstance(sent, dict)
        and ("phone" in sent or "full_name" in sent)
        and "country" not in sent
    )


def _patch_of(body: bytes, options: IntakeOptions) -> LeadPatch:
    try:
        return LeadPatch.model_validate_json(body, context=options.context())
    except ValidationError as exc:
        raise _invalid(exc, body, LeadPatch) from None


@router.post(
    "/{lead_id}/review",
    response_model=LeadOut,
    responses=_lead_problems(
        (WRITE, "leads:read"),
        {
            400: [NUL_IN_URL, MALFORMED_BODY, IDEMPOTENCY_KEY_INVALID],
            409: [
                "`lead_not_held`: the lead is not held for review",
                "`lead_conflict`: the lead it is held against is gone, or the lead changed "
                "while it was reviewed (`errors` points at `/into` when naming one would do)",
                IDEMPOTENCY_KEY_IN_USE,
            ],
            413: PAYLOAD_TOO_LARGE,
            415: JSON_ONLY,
            422: [
                f"{VALIDATION_FAILED} (of the decision, or its `into`: no such lead, the "
                "lead itself, an erased one)",
                IDEMPOTENCY_KEY_REUSED,
            ],
        },
    ),
    openapi_extra=_schema_body(LeadReviewIn) | {"parameters": [LEAD_ID, IDEMPOTENCY_KEY]},
    summary="Decide on a lead held for review (a possible duplicate)",
)
async def review_lead(request: Request, principal: WriteRead) -> Response:
    """`distinct` releases the lead to the CRM; `duplicate` merges it into the lead it
    was held against (or `into`), answering that lead, and leaves a tombstone (410)."""
    uid = _path_lead(request)
    rt = runtime(request)
    body = await _json_body(request)
    try:
        decision = LeadReviewIn.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc, body, LeadReviewIn) from None

    async def work(session: Any) -> tuple[int, Any]:
        lead = await service_review.review(session, rt, uid, decision, _actor(principal))
        await session.flush()
        extras = await repo_lead.listed_extras(session, [lead])
        return 200, listed_view(lead, extras).model_dump(mode="json")

    return await idempotent(request, principal, body, rt, work, shows_lead=True)


@router.delete(
    "/{lead_id}",
    status_code=204,
    responses=_lead_problems(("leads:admin",), {412: PRECONDITION_FAILED}),
    openapi_extra={"parameters": [LEAD_ID, IF_MATCH]},
    summary="Erase a lead (GDPR)",
)
async def erase_lead(request: Request, principal: Admin) -> Response:
    """Personal data is removed, a tombstone kept, and the CRM contact deleted too."""
    uid = _path_lead(request)
    rt = runtime(request)
    async with unit_of_work(rt.sessionmaker) as session:
        await service_edit.erase(session, rt, uid, _actor(principal), if_match=_if_match(request))
    return Response(status_code=204)
