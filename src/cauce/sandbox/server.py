"""The HTTP face of the sandbox CRM: HubSpot's routes behind auth, limits and faults.

Built on ``aiohttp.web`` rather than Starlette: it serves without a separate ASGI server
(``AppRunner`` + ``TCPSite`` start and stop in-process on a free port, which tests and the
demo need), it is fast enough on these 2 cores for many times the 2,000 records/s the
benchmarks drive (one request carries 100 records), and it exposes the connection's
transport, which is how a request is answered with a reset instead of a response.

Order of checks for every ``/crm/`` and ``/communication-preferences/`` request, chosen
to match what a client of the real service can observe:

1. bearer token (401 without rate-limit headers: the caller is not identified);
2. outage (503: the service is down, nothing is counted);
3. rate limits: daily cap, then the rolling window (429 with HubSpot's body);
4. the request now uses a slot, whatever follows: latency, then a reset, a 5xx before
   the write, the write itself, or a 5xx after the write.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from cauce.sandbox import bodies
from cauce.sandbox.config import SandboxCrmConfig
from cauce.sandbox.contacts_api import ContactsApi, Reply
from cauce.sandbox.faults import Fault, FaultInjector
from cauce.sandbox.inspection import add_inspection_routes
from cauce.sandbox.limits import RequestLimiter
from cauce.sandbox.store import ContactStore
from cauce.sandbox.subscriptions_api import SubscriptionsApi
from cauce.sandbox.webhooks import WebhookDispatcher

__all__ = ["SandboxState", "build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_BASE = "/crm/v3/objects/contacts"
_STATUSES = "/communication-preferences/v4/statuses"
_HTML_ERRORS = {
    502: "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>",
    504: "<html><head><title>504 Gateway Time-out</title></head><body>Timeout</body></html>",
}


@dataclass
class RequestStats:
    """What the server has answered since the last reset."""

    total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0
    records_written: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {
            "total": self.total,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_endpoint": dict(self.by_endpoint),
            "rate_limited": dict(self.rate_limited),
            "faults_injected": dict(self.faults),
            "unauthorized": self.unauthorized,
            "records_written": self.records_written,
        }


class SandboxState:
    """Everything one sandbox instance holds: store, limits, faults, counters, webhooks."""

    def __init__(
        self,
        config: SandboxCrmConfig,
        dispatcher_factory: Callable[[SandboxState], WebhookDispatcher | None],
    ) -> None:
        config.validate()
        self.config = config
        self.faults = FaultInjector(config.faults, seed=config.seed, clock=config.clock)
        self.limiter = RequestLimiter(
            limit=config.rate_limit,
            window_seconds=config.rate_window_seconds,
            daily_limit=config.daily_limit,
            day_seconds=config.day_seconds,
            clock=config.clock,
            count_rejected=config.count_rejected,
        )
        self.store = ContactStore(
            unique_properties=config.unique_properties,
            known_properties=config.known_properties,
            strict_properties=config.strict_properties,
            watched_properties=config.webhook_properties,
            wall_clock=config.wall_clock,
        )
        self.api = ContactsApi(
            self.store,
            max_batch_inputs=config.max_batch_inputs,
            portal_id=config.portal_id,
            shuffle=self.faults.shuffle if config.shuffle_results else None,
        )
        self.subscriptions = SubscriptionsApi(
            config.subscription_types,
            max_batch_inputs=config.max_batch_inputs,
            gdpr=config.gdpr,
            wall_clock=config.wall_clock,
        )
        self.stats = RequestStats()
        self.webhooks = dispatcher_factory(self)
        if self.webhooks is not None:
            self.store.publish = self.webhooks.publish
        self._bearer = f"Bearer {config.token}"

    def reset(self) -> None:
        """Forget contacts, counters and the limiter's history (faults stay as they are)."""
        self.store.clear()
        self.subscriptions.clear()
        self.limiter.reset()
        self.stats = RequestStats()

    def snapshot(self) -> dict[str, Any]:
        """The inspection report served at ``GET /_sandbox/stats``."""
        duplicates = self.store.duplicates(self.config.tracked_keys)
        window = self.limiter.peek()
        return {
            "contacts": len(self.store.live),
            "archived": len(self.store.archived),
            "created_total": self.store.created_total,
            "updated_total": self.store.updated_total,
            "duplicates": duplicates,
            "duplicate_count": sum(len(v) for v in duplicates.values()),
            "subscription_statuses": len(self.subscriptions.statuses),
            "requests": self.stats.as_dict(),
            "rate_limit": {
                "max": window.window_max,
                "remaining": window.window_remaining,
                "interval_ms": window.interval_ms,
                "daily_max": window.daily_max,
                "daily_remaining": window.daily_remaining,
                "seconds_until_day_reset": round(self.limiter.seconds_until_day_reset(), 3),
            },
            "faults": {
                "settings": self.faults.settings.as_dict(),
                "in_outage": self.faults.in_outage(),
                "outage_remaining": round(self.faults.outage_remaining(), 3),
            },
            "webhooks": None if self.webhooks is None else {
                "url": self.webhooks.url,
                "pending": self.webhooks.pending,
                **self.webhooks.stats.as_dict(),
            },
        }  # fmt: skip

    # -- the HubSpot request pipeline ----------------------------------------------------

    async def guard(
        self, request: web.Request, handler: Handler, endpoint: str
    ) -> web.StreamResponse:
        """Auth, outage, limits and faults around one HubSpot route."""
        stats = self.stats
        stats.total += 1
        stats.by_endpoint[endpoint] += 1
        if request.headers.get("Authorization") != self._bearer:
            stats.unauthorized += 1
            return self._json(401, bodies.error_body(bodies.AUTH_MESSAGE, "INVALID_AUTHENTICATION"))
        if self.faults.in_outage():
            stats.faults["outage"] += 1
            body = bodies.error_body("Service Unavailable", "SERVICE_UNAVAILABLE")
            return self._json(503, body, self.limiter.peek().headers())
        decision = self.limiter.acquire()
        headers = decision.headers()
        if decision.policy is not None:
            stats.rate_limited[decision.policy] += 1
            if self.config.send_retry_after:
                headers["Retry-After"] = str(max(1, round(self.limiter.seconds_until_slot())))
            return self._json(429, bodies.rate_limit_body(decision.policy), headers)
        if (delay := self.faults.latency()) > 0:
            await asyncio.sleep(delay)
        fault, status = self.faults.draw()
        if fault is Fault.RESET:
            stats.faults["reset"] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if fault is Fault.ERROR:
            stats.faults["error"] += 1
            return self._server_error(status, headers)
        response = await handler(request)
        if fault is Fault.ERROR_AFTER_WRITE:
            stats.faults["error_after_write"] += 1
            return self._server_error(status, headers)
        response.headers.update(headers)
        stats.by_status[response.status] += 1
        return response

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        self.stats.by_status[status] += 1
        return web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    def _server_error(self, status: int, headers: dict[str, str]) -> web.Response:
        if status in _HTML_ERRORS:
            # Gateways in front of HubSpot answer these, in HTML: clients must not assume JSON.
            self.stats.by_status[status] += 1
            return web.Response(
                status=status, text=_HTML_ERRORS[status], content_type="text/html", headers=headers
            )
        return self._json(status, bodies.error_body("internal error", "INTERNAL_ERROR"), headers)

    def reply(self, reply: Reply) -> web.Response:
        """Render a :class:`Reply`."""
        if reply.body is None:
            return web.Response(status=reply.status)
        return web.Response(
            status=reply.status, body=orjson.dumps(reply.body), content_type="application/json"
        )


def _payload(raw: bytes) -> Any:
    """The JSON body, or a :class:`Reply` with HubSpot's 400 if it does not parse."""
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        return Reply(400, bodies.error_body(f"Invalid input JSON: {exc}", "VALIDATION_ERROR"))


def _names(request: web.Request) -> list[str] | None:
    raw = request.query.getall("properties", [])
    names = [n for part in raw for n in part.split(",") if n]
    return names or None


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() == "true"


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "10")
    return int(raw) if raw.isdigit() else 10


def build_app(state: SandboxState) -> web.Application:
    """The aiohttp application serving one :class:`SandboxState`."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    api = state.api

    def route(endpoint: str, call: Callable[[web.Request, Any], Reply]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            payload = _payload(await request.read()) if request.can_read_body else {}
            reply = payload if isinstance(payload, Reply) else call(request, payload)
            if endpoint == "batch/upsert" and reply.status in (200, 207) and reply.body:
                state.stats.records_written += len(reply.body["results"])
            return state.reply(reply)

        async def guarded(request: web.Request) -> web.StreamResponse:
            return await state.guard(request, handler, endpoint)

        return guarded

    def key(request: web.Request) -> str:
        return request.match_info["contact_id"]

    def id_property(request: web.Request) -> str | None:
        return request.query.get("idProperty")

    routes: list[tuple[str, str, str, Callable[[web.Request, Any], Reply]]] = [
        ("POST", "/batch/upsert", "batch/upsert",
         lambda r, p: api.batch_upsert(p, id_property=id_property(r))),
        ("POST", "/batch/read", "batch/read",
         lambda r, p: api.batch_read(p, archived=_flag(r, "archived"))),
        ("POST", "/batch/archive", "batch/archive", lambda r, p: api.batch_archive(p)),
        ("POST", "/gdpr-delete", "gdpr-delete", lambda r, p: api.gdpr_delete(p)),
        ("POST", "/merge", "merge", lambda r, p: api.merge(p)),
        ("POST", "", "create", lambda r, p: api.create_one(p)),
        ("GET", "", "list",
         lambda r, p: api.list_page(limit=_limit(r), after=r.query.get("after"), names=_names(r))),
        ("GET", "/{contact_id}", "get",
         lambda r, p: api.get_one(key(r), id_property=id_property(r), names=_names(r),
                                  archived=_flag(r, "archived"))),
        ("PATCH", "/{contact_id}", "patch",
         lambda r, p: api.patch_one(key(r), p, id_property=id_property(r))),
        ("DELETE", "/{contact_id}", "delete", lambda r, p: api.archive_one(key(r))),
    ]  # fmt: skip
    for method, suffix, endpoint, call in routes:
        app.router.add_route(method, _BASE + suffix, route(endpoint, call))
    subscriptions = state.subscriptions
    # Communication preferences v4: behind the same token, limits and faults.
    status_routes: list[tuple[str, str, Callable[[web.Request, Any], Reply]]] = [
        ("/batch/write", "statuses/batch/write", lambda r, p: subscriptions.batch_write(p)),
        ("/batch/read", "statuses/batch/read",
         lambda r, p: subscriptions.batch_read(p, channel=r.query.get("channel"))),
        ("/batch/unsubscribe-all/read", "statuses/batch/unsubscribe-all/read",
         lambda r, p: subscriptions.batch_read_opted_out(p, channel=r.query.get("channel"))),
    ]  # fmt: skip
    for suffix, endpoint, call in status_routes:
        app.router.add_route("POST", _STATUSES + suffix, route(endpoint, call))
    add_inspection_routes(app, state)
    return app
