"""The leads HTTP API: thin handlers that parse, call the service and render.

This module holds intake (`POST /v1/leads`, `POST /v1/leads/batch`) and what the other
leads routers share: the scopes, `runtime`, `idempotent`, `parse_id`. The routes on one
lead are in `endpoints_lead`, search and export in `endpoints_search`, CSV imports in
`endpoints_imports`; reading and answering JSON is `json_bodies`.

`POST` handlers read the raw body and validate it with `model_validate_json` (one pass,
no intermediate dict), which matters on the hot intake path; their OpenAPI request
schemas are declared explicitly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.security.apikeys import Principal
from cauce.core.security.scopes import grants
from cauce.core.web.auth import BEARER_SECURITY, authorize, require_scope
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
    key_problems,
    problems,
    unsupported_media_type,
)
from cauce.core.web.routing import CauceRoute
from cauce.leads.batch_parts import Batch, answer_of, in_parts, in_parts_now
from cauce.leads.field_types import IntakeOptions
from cauce.leads.intake_groups import Claim
from cauce.leads.json_bodies import invalid, json_body, json_response, schema_body
from cauce.leads.responses import (
    BatchAccepted,
    BatchItemResult,
    BatchResult,
    LeadAccepted,
    LeadCreated,
)
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_batch import LeadBatchIn, validate_batch
from cauce.leads.service import IntakeResult, LeadsRuntime, intake, intake_many
from cauce.leads.views import created_view

router = APIRouter(prefix="/v1/leads", route_class=CauceRoute, tags=["leads"])

READ: Final = "leads:read"
Read = Annotated[Principal, Depends(require_scope(READ))]
WRITE: Final = "leads:write"
Write = Annotated[Principal, Depends(require_scope(WRITE))]

IDEMPOTENCY = IdempotencyStore()


def runtime(request: Request) -> LeadsRuntime:
    """The leads runtime the composition root built."""
    rt: LeadsRuntime = request.app.state.leads
    return rt


def actor(principal: Principal) -> str:
    return f"apikey:{principal.key_id}"


# The header of an answer replayed from its `Idempotency-Key`.
REPLAYED: Final = {"Idempotent-Replayed": "true"}


def intake_options(rt: LeadsRuntime, region: str | None = None) -> IntakeOptions:
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
            return json_response(status, payload)
        key = check_key(raw_key)
        scope = str(principal.api_key_id)
        print_ = fingerprint(request.method, request.url.path, body)
        await IDEMPOTENCY.enter(session, scope, key)
        stored = await IDEMPOTENCY.lookup(session, scope, key, print_)
        if stored is not None:
            status, payload = _shown(shown, stored.status_code, stored.body)
            return json_response(status, payload, REPLAYED)
        status, payload = _shown(shown, *(await work(session)))
        subject = payload.get("id") if shows_lead and isinstance(payload, dict) else None
        await IDEMPOTENCY.remember(session, scope, key, print_, status, payload, subject)
    return json_response(status, payload)


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


# The error answers of the routes below, for the OpenAPI document (ADR 0003): each
# status the route can give, with the codes it may carry.
INTAKE_BUSY: Final = (
    "`intake_busy`: too many leads wait for their transaction, or the leads this one "
    "matched keep changing; retry after `Retry-After` seconds"
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


def _intake_problems(invalid_reason: str) -> dict[int | str, dict[str, Any]]:
    """The error answers of an intake route (one lead, a batch)."""
    answers: dict[int, Reasons] = {
        **key_problems(WRITE),
        400: [NUL_IN_URL, MALFORMED_BODY, IDEMPOTENCY_KEY_INVALID],
        409: IDEMPOTENCY_KEY_IN_USE,
        413: PAYLOAD_TOO_LARGE,
        415: JSON_ONLY,
        422: [invalid_reason, IDEMPOTENCY_KEY_REUSED],
        503: [INTAKE_BUSY, DATABASE_UNAVAILABLE],
    }
    return problems(answers)


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
    openapi_extra=schema_body(LeadIn) | BEARER_SECURITY | {"parameters": [IDEMPOTENCY_KEY]},
    summary="Accept one lead",
)
async def create_lead(request: Request) -> Response:
    """Validate, de-duplicate, score, route and store one lead; its CRM sync is queued."""
    principal = await authorize(request, WRITE)  # in the body: see `authorize`
    rt = runtime(request)
    rt.singles.note()
    body = await json_body(request)
    try:
        lead_in = LeadIn.model_validate_json(body, context=intake_options(rt).context())
    except ValidationError as exc:
        rt.metrics.intake.labels("rejected").inc()
        raise invalid(exc, body, LeadIn) from None
    shown = None if grants(principal.scopes, READ) else _lead_accepted

    if rt.groups is not None:  # committed with the other leads arriving now (ADR 0009)
        answer = await rt.groups.submit(lead_in, actor(principal), _claim(request, principal, body))
        replayed = REPLAYED if answer.replayed else None
        # The group stores the whole answer under the key: a key without `leads:read` is
        # shown, and shown again on a replay, only what it may see.
        status, payload = _shown(shown, answer.status, answer.body)
        return json_response(status, payload, replayed)

    async def work(session: Any) -> tuple[int, Any]:
        result = await intake(session, rt, lead_in, actor=actor(principal))
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
        "score_model": result.score.model,
        "owner": result.owner,
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
    openapi_extra=schema_body(LeadBatchIn) | BEARER_SECURITY | {"parameters": [IDEMPOTENCY_KEY]},
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
    body = await json_body(request)
    options = intake_options(rt)
    try:
        batch = LeadBatchIn.model_validate_json(body, context=options.context())
    except ValidationError as exc:
        raise invalid(exc, body, LeadBatchIn) from None
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
        results = await intake_many(session, rt, valid, actor=actor(principal))
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
    answer = await in_parts(rt, IDEMPOTENCY, keyed, batch, actor(principal), _item, shown)
    return json_response(answer.status, answer.body, REPLAYED if answer.replayed else None)


# Ids are positive BIGINTs: at most 19 digits (and ASCII ones: "²".isdigit() is true).
MAX_ID = 2**63 - 1


def parse_id(raw: str) -> int | None:
    """`raw` as a row id, or None when it cannot be one."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None
