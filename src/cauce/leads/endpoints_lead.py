"""The leads HTTP API on one lead: read it, change it, decide on it when it is held for
review, erase it (`GET`, `PATCH`, `DELETE /v1/leads/{lead_id}`, `POST .../review`).

`lead_router` is included after every other router under `/v1/leads` (`wiring.routers`),
so `/batch`, `/import...` and `/export.csv` are never read as a lead id. The helpers it
shares with intake are in `endpoints` (`idempotent`, the scopes) and `json_bodies`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from cauce.core.db import unit_of_work
from cauce.core.security.apikeys import Principal
from cauce.core.web.auth import require_scope, require_scopes
from cauce.core.web.openapi import (
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
    path_parameter,
    problems,
    unsupported_media_type,
)
from cauce.core.web.problems import echo
from cauce.core.web.routing import CauceRoute
from cauce.leads import repository_lead as repo_lead
from cauce.leads import service_edit, service_review
from cauce.leads.endpoints import (
    JSON_ONLY,
    READ,
    WRITE,
    Read,
    actor,
    idempotent,
    intake_options,
    runtime,
)
from cauce.leads.errors import LeadNotFound
from cauce.leads.field_types import IntakeOptions
from cauce.leads.json_bodies import JSON, invalid, json_body, json_response, schema_body
from cauce.leads.places import shared_country_name
from cauce.leads.responses import LeadDetailOut, LeadOut
from cauce.leads.schemas import LeadPatch
from cauce.leads.schemas_requests import LeadReviewIn
from cauce.leads.views import detail_view, listed_view

lead_router = APIRouter(prefix="/v1/leads", route_class=CauceRoute, tags=["leads"])


Admin = Annotated[Principal, Depends(require_scope("leads:admin"))]
# A change or a review answers the whole lead: a key that may not read leads is not shown
# one (a form's write-only key could otherwise read any lead by patching it with `{}`).
WriteRead = Annotated[Principal, Depends(require_scopes(WRITE, READ))]

MERGE_PATCH: Final = "application/merge-patch+json"  # RFC 7396

LEAD_NOT_FOUND: Final = "`lead_not_found`: no lead with this id"
LEAD_GONE: Final = (
    "`lead_erased`: the lead was erased (GDPR), its tombstone is all that is left",
    "`lead_merged`: a review merged it into another lead, named in `merged_into`",
)


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


def _path_lead(request: Request) -> str:
    """The lead id of the path, as stored (`lead_uid`)."""
    return lead_uid(request.path_params["lead_id"])


@lead_router.get(
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
        return json_response(200, detail_view(found), {"ETag": service_edit.etag(found.lead)})


@lead_router.patch(
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
    openapi_extra=schema_body(LeadPatch, (JSON, MERGE_PATCH)) | {"parameters": [LEAD_ID, IF_MATCH]},
    summary="Change a lead (JSON merge patch)",
)
async def patch_lead(request: Request, principal: WriteRead) -> Response:
    """Only the fields sent change; `null` clears one. The lead is synced again."""
    uid = _path_lead(request)
    rt = runtime(request)
    body = await json_body(request, (JSON, MERGE_PATCH))
    async with unit_of_work(rt.sessionmaker) as session:
        region = None
        places: tuple[str | None, str | None] | None = None
        needs = _needs_country(body)
        if needs is not None:
            # A national number is read in the lead's own country, and a full name split
            # by its naming convention, as at intake; a shared country name (`Granada`)
            # by the lead's region and phone, as at intake.
            stored = await service_edit.live_lead(session, uid)
            region = stored.country if needs == "country" else None
            places = (stored.region, stored.phone) if needs == "places" else None
        options = replace(intake_options(rt, region), stored_country=region, stored_places=places)
        changes = _patch_of(body, options)
        lead = await service_edit.patch(
            session, rt, uid, changes, actor(principal), if_match=_if_match(request)
        )
        await session.flush()
        extras = await repo_lead.listed_extras(session, [lead])
        out = listed_view(lead, extras).model_dump(mode="json")
        tag = service_edit.etag(lead)
    return json_response(200, out, {"ETag": tag})


def _if_match(request: Request) -> str | None:
    """The request's `If-Match`: a change goes ahead only on the version it names."""
    return request.headers.get("if-match")


def _needs_country(body: bytes) -> Literal["country", "places"] | None:
    """What of the stored lead a change reads: its `country`, for a phone or a full name
    sent without one; its `places` (region and phone), for a country box naming a country
    whose name others' regions share (`places.shared_country_name`: `Granada`)."""
    try:
        sent = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # `_patch_of` says why
    if not isinstance(sent, dict):
        return None
    country = sent.get("country")
    if isinstance(country, str) and shared_country_name(country):
        return "places"
    if ("phone" in sent or "full_name" in sent) and "country" not in sent:
        return "country"
    return None


def _patch_of(body: bytes, options: IntakeOptions) -> LeadPatch:
    try:
        return LeadPatch.model_validate_json(body, context=options.context())
    except ValidationError as exc:
        raise invalid(exc, body, LeadPatch) from None


@lead_router.post(
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
    openapi_extra=schema_body(LeadReviewIn) | {"parameters": [LEAD_ID, IDEMPOTENCY_KEY]},
    summary="Decide on a lead held for review (a possible duplicate)",
)
async def review_lead(request: Request, principal: WriteRead) -> Response:
    """`distinct` releases the lead to the CRM; `duplicate` merges it into the lead it
    was held against (or `into`), answering that lead, and leaves a tombstone (410)."""
    uid = _path_lead(request)
    rt = runtime(request)
    body = await json_body(request)
    try:
        decision = LeadReviewIn.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(exc, body, LeadReviewIn) from None

    async def work(session: Any) -> tuple[int, Any]:
        lead = await service_review.review(session, rt, uid, decision, actor(principal))
        await session.flush()
        extras = await repo_lead.listed_extras(session, [lead])
        return 200, listed_view(lead, extras).model_dump(mode="json")

    return await idempotent(request, principal, body, rt, work, shows_lead=True)


@lead_router.delete(
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
        await service_edit.erase(session, rt, uid, actor(principal), if_match=_if_match(request))
    return Response(status_code=204)
