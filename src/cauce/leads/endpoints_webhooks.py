"""The inbound CRM webhook endpoint (HubSpot's signed lifecycle events)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from cauce.core.db import unit_of_work
from cauce.core.errors import ServiceUnavailable
from cauce.core.web.routing import CauceRoute
from cauce.leads.endpoints import runtime
from cauce.leads.webhooks import (
    INBOUND_TASK,
    SOURCE_HUBSPOT,
    InvalidSignature,
    parse_events,
    record_events,
    signed_uri,
    verify_hubspot,
)

webhooks_router = APIRouter(prefix="/v1/webhooks", route_class=CauceRoute, tags=["webhooks"])


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
            await rt.queue.defer(
                session, INBOUND_TASK, {"source": SOURCE_HUBSPOT}, dedupe_key="crm-inbound"
            )
    return Response(status_code=204, headers={"X-Cauce-Recorded": orjson.dumps(new).decode()})
