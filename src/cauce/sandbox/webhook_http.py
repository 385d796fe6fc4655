"""The default way the sandbox sends webhooks: an unguarded ``cauce.core.http`` transport.

Unguarded on purpose: the sandbox plays HubSpot, which retries deliveries its own way
(see :mod:`cauce.sandbox.webhooks`), and its target is usually a Cauce on 127.0.0.1,
which the SSRF guard of user-supplied URLs would rightly refuse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from cauce.core.http import AiohttpTransport, Request
from cauce.sandbox.webhooks import WebhookTransport

__all__ = ["core_http_webhook_transport"]

USER_AGENT = "HubSpot Webhooks (Cauce sandbox)"


@asynccontextmanager
async def core_http_webhook_transport(
    *, timeout_seconds: float = 5.0
) -> AsyncIterator[WebhookTransport]:
    """Yield a :data:`WebhookTransport` over one pooled connection set; close it on exit."""
    transport = AiohttpTransport("sandbox-webhooks", user_agent=USER_AGENT, timeout=timeout_seconds)

    async def send(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        response = await transport.send(Request.post(url, content=body, headers=headers))
        return response.status

    try:
        yield send
    finally:
        await transport.close()
