"""The inbound CRM webhook endpoint (HubSpot's signed lifecycle events)."""

from __future__ import annotations

from typing import Any, Final

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from cauce.core.db import unit_of_work
from cauce.core.errors import ServiceUnavailable
from cauce.core.web.openapi import (
    DATABASE_UNAVAILABLE,
    MALFORMED_BODY,
    NUL_IN_URL,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_CONTENT_ENCODING,
    problems,
)
from cauce.core.web.routing import CauceRoute
from cauce.leads.endpoints import runtime
from cauce.leads.webhooks import (
    INBOUND_KEY,
    INBOUND_TASK,
    MAX_EVENTS,
    SOURCE_HUBSPOT,
    InvalidSignature,
    parse_events,
    record_events,
    signed_uri,
    verify_hubspot,
)

webhooks_router = APIRouter(prefix="/v1/webhooks", route_class=CauceRoute, tags=["webhooks"])

# What the route reads (by hand: `verify_hubspot` needs the body's bytes, and
# `parse_events` checks them), for the OpenAPI document. HubSpot's events carry more
# than this; only `eventId` is required, and any other member is kept as sent.
_EVENT: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["eventId"],
    "properties": {
        "eventId": {
            "description": "HubSpot's id of the event (a number): each is recorded once",
            "not": {"type": "null"},
        },
        "subscriptionType": {
            "description": "e.g. `contact.propertyChange`, `contact.deletion`, "
            "`contact.privacyDeletion`; only events about contacts reach leads"
        },
        "objectId": {"description": "The contact's id in HubSpot"},
        "objectTypeId": {"description": "`0-1` (contacts) for the generic `object.*` events"},
        "propertyName": {"description": "Of a property change"},
        "propertyValue": {"description": "Of a property change"},
        "occurredAt": {
            "description": "When it happened, in ms since 1970: a lead takes no change "
            "older than the last it applied"
        },
    },
}
_SIGNED: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "maxItems": MAX_EVENTS,
                    "description": "A batch of HubSpot webhook events",
                    "items": _EVENT,
                }
            }
        },
    },
    "parameters": [
        {
            "name": "X-HubSpot-Signature-v3",
            "in": "header",
            "required": True,
            "description": "HubSpot's v3 signature: base64(HMAC-SHA256(the app's secret, "
            "method + URI + body + timestamp))",
            "schema": {"type": "string", "minLength": 1},
        },
        {
            "name": "X-HubSpot-Request-Timestamp",
            "in": "header",
            "required": True,
            "description": "When HubSpot sent the request, in ms since 1970; one more than "
            "5 minutes away is refused",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
    ],
}


@webhooks_router.post(
    "/hubspot",
    status_code=204,
    summary="HubSpot webhook (signed)",
    response_description="Recorded (the events seen before are not recorded again)",
    responses={
        204: {
            "headers": {
                "X-Cauce-Recorded": {
                    "description": "How many of the events were new",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        },
        **problems(
            {
                400: [NUL_IN_URL, MALFORMED_BODY],
                401: "`invalid_signature`: the signature or timestamp header is missing, "
                "the signature does not match, or the request is more than 5 minutes old",
                413: PAYLOAD_TOO_LARGE,
                415: UNSUPPORTED_CONTENT_ENCODING,
                422: "`validation_failed`: the body is JSON but not an array of at most "
                f"{MAX_EVENTS} events, each an object with an `eventId` (and an "
                "`occurredAt`, if a number, within the years 1970 to 9999)",
                503: [
                    "`service_unavailable`: HubSpot webhooks are not configured "
                    "(`CAUCE_CRM__WEBHOOK_SECRET`)",
                    DATABASE_UNAVAILABLE,
                ],
            }
        ),
    },
    openapi_extra=_SIGNED,
)
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
            secret.get_secret_value(),
            request.method,
            signed_uri(str(request.url), request.url.query, rt.settings.crm.webhook_url),
            body,
            request.headers,
        )
    except InvalidSignature:
        rt.metrics.webhooks_rejected.labels(SOURCE_HUBSPOT, "signature").inc()
        raise
    events = parse_events(body)
    async with unit_of_work(rt.sessionmaker) as session:
        new = await record_events(session, SOURCE_HUBSPOT, events)
        if new:
            # One waits (the dedupe key) and one runs at a time (the lock): two at once
            # could apply one lead's events out of order.
            await rt.queue.defer(
                session,
                INBOUND_TASK,
                {"source": SOURCE_HUBSPOT},
                dedupe_key=INBOUND_KEY,
                lock=INBOUND_KEY,
            )
    return Response(status_code=204, headers={"X-Cauce-Recorded": orjson.dumps(new).decode()})
