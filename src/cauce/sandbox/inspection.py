"""``/_sandbox/``: the sandbox's own routes, for tests, the demo and benchmarks (not HubSpot's).

They need no token and use no rate-limit slot:

* ``GET /_sandbox/stats``: contacts, archived, duplicates of tracked keys (must be empty
  when a client delivers exactly once), requests by status and endpoint, 429s by policy,
  injected faults, the limiter's state and webhook counters;
* ``GET /_sandbox/contacts[?archived=true]``: every contact with all its properties;
* ``PATCH /_sandbox/contacts/{id}[?idProperty=email]``: change properties as a salesperson
  would in HubSpot's UI (``changeSource: CRM_UI``), e.g. a lifecycle stage, which fires the
  ``contact.propertyChange`` webhook;
* ``GET /_sandbox/subscriptions``: the subscription types and every email subscription
  status held (communication preferences), with the addresses opted out of all email;
* ``POST /_sandbox/subscriptions``: ``{"email", "status", "subscriptionId"}`` sets a status
  as the contact would on HubSpot's preferences page, now (no ``subscriptionId`` with
  ``UNSUBSCRIBED``: opted out of all email);
* ``POST /_sandbox/reset``: forget contacts, statuses, counters and the rate windows;
* ``GET /_sandbox/faults`` and ``POST /_sandbox/faults``: read or change the injected faults
  (any :class:`~cauce.sandbox.config.FaultSettings` field; ``{"outage": S}`` starts an
  outage of S seconds now and ``{"outage": 0}`` ends it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from cauce.sandbox.server import SandboxState

__all__ = ["add_inspection_routes"]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        return _json({"error": f"invalid JSON: {exc}"}, 400)
    if not isinstance(data, dict):
        return _json({"error": "expected a JSON object"}, 400)
    return data


def add_inspection_routes(app: web.Application, state: SandboxState) -> None:
    """Register the ``/_sandbox/`` routes on ``app``."""

    async def stats(request: web.Request) -> web.Response:
        return _json(state.snapshot())

    async def contacts(request: web.Request) -> web.Response:
        archived = request.query.get("archived", "false").lower() == "true"
        pool = state.store.archived if archived else state.store.live
        return _json({"results": [c.to_api() for c in pool.values()]})

    async def ui_patch(request: web.Request) -> web.Response:
        data = await _body(request)
        if isinstance(data, web.Response):
            return data
        reply = state.api.patch_one(
            request.match_info["contact_id"],
            data,
            id_property=request.query.get("idProperty"),
            source="CRM_UI",
        )
        return state.reply(reply)

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return _json(state.snapshot())

    async def get_faults(request: web.Request) -> web.Response:
        return _json(state.faults.settings.as_dict())

    async def set_faults(request: web.Request) -> web.Response:
        data = await _body(request)
        if isinstance(data, web.Response):
            return data
        if "outage" in data:
            seconds = float(data.pop("outage") or 0)
            data["outage_after"] = 0.0 if seconds > 0 else None
            data["outage_for"] = seconds
        try:
            state.faults.reconfigure(state.faults.settings.updated(data))
        except (TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json(state.faults.settings.as_dict())

    async def subscriptions(request: web.Request) -> web.Response:
        return _json(state.subscriptions.dump())

    async def set_subscription(request: web.Request) -> web.Response:
        data = await _body(request)
        if isinstance(data, web.Response):
            return data
        email, status = data.get("email"), data.get("status")
        subscription = data.get("subscriptionId")
        if not isinstance(email, str) or status not in ("SUBSCRIBED", "UNSUBSCRIBED"):
            return _json({"error": "give an email and a status (SUBSCRIBED or UNSUBSCRIBED)"}, 400)
        if subscription is None and status != "UNSUBSCRIBED":
            return _json({"error": "only UNSUBSCRIBED applies to all email"}, 400)
        if subscription is not None and subscription not in state.subscriptions.definitions:
            return _json({"error": f"unknown subscription type {subscription!r}"}, 400)
        state.subscriptions.set_by_person(email, status, subscription)
        return _json(state.subscriptions.dump())

    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/_sandbox/subscriptions", subscriptions)
    app.router.add_post("/_sandbox/subscriptions", set_subscription)
    app.router.add_get("/_sandbox/contacts", contacts)
    app.router.add_patch("/_sandbox/contacts/{contact_id}", ui_patch)
    app.router.add_post("/_sandbox/reset", reset)
    app.router.add_get("/_sandbox/faults", get_faults)
    app.router.add_post("/_sandbox/faults", set_faults)
