"""A small, faithful stand-in for Pipedrive's persons API v2, served on 127.0.0.1.

What it reproduces (see the facts listed in ``cauce.leads.adapters.pipedrive``):

* ``x-api-token`` auth (401 ``{"success": false, "error": ..., "errorCode": 401}``);
* the ``{"success": true, "data": ...}`` envelope;
* ``GET /api/v2/persons/search`` over ``email`` or ``custom_fields``: an exact match is
  case-insensitive, otherwise the term may be found anywhere in a value (so callers
  must compare hits themselves); items as ``{"result_score", "item": {...}}`` with
  emails, phones and custom field values as plain strings;
* ``POST /api/v2/persons`` (``name`` required; unknown custom field keys refused),
  ``GET``/``PATCH``/``DELETE /api/v2/persons/{id}`` (404 when missing);
* no uniqueness at all: two persons may share an email, as in Pipedrive;
* a burst window (``x-ratelimit-limit/-remaining/-reset`` on every answer, 429 when
  over) and a daily request budget (``x-daily-requests-left``, 429 at 0), on an
  injectable clock; the 429 body's wording is a guess (the docs cut it off);
* scripted 5xx answers (``fail_next``), before anything is written;
* creates whose answer is lost after Pipedrive wrote the person (``lose_create_answers``):
  a 5xx instead of the answer, or the connection closed with no answer at all (``"drop"``),
  as after a gateway's error or a connection cut once the request was in;
* a search index that lags (``search_lag``, seconds on the clock): a person created less
  than that ago is not found by a search yet, though ``GET /api/v2/persons/{id}`` has it
  (Pipedrive's search is an index updated after the write).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PERSONS = "/api/v2/persons"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"success": False, "error": message, "errorCode": status, "data": None}
    return _json(status, body, headers)


@dataclass
class FakePipedrive:
    """State and behaviour of one fake Pipedrive company."""

    clock: Callable[[], float]
    token: str = "pd-token"
    custom_fields: frozenset[str] = frozenset()
    burst_limit: int = 1000
    window_seconds: float = 2.0
    daily_budget: int | None = None
    persons: dict[int, dict[str, Any]] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    lose_create_answers: list[int | str] = field(default_factory=list)
    search_lag: float = 0.0
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""
    _hits: deque[float] = field(default_factory=deque)
    _used_today: int = 0
    _next_id: int = 1
    _created_at: dict[int, float] = field(default_factory=dict)

    # -- limits --------------------------------------------------------------------------

    def _headers(self, now: float) -> dict[str, str]:
        while self._hits and self._hits[0] <= now - self.window_seconds:
            self._hits.popleft()
        reset = self._hits[0] + self.window_seconds - now if self._hits else self.window_seconds
        headers = {
            "x-ratelimit-limit": str(self.burst_limit),
            "x-ratelimit-remaining": str(max(0, self.burst_limit - len(self._hits))),
            "x-ratelimit-reset": str(max(1, math.ceil(reset))),
        }
        if self.daily_budget is not None:
            headers["x-daily-requests-left"] = str(max(0, self.daily_budget - self._used_today))
        return headers

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth, limits and scripted failures around every route."""
        self.requests.append((request.method, request.path))
        if request.headers.get("x-api-token") != self.token:
            return _error(401, "unauthorized access")
        now = self.clock()
        headers = self._headers(now)
        if self.daily_budget is not None and self._used_today >= self.daily_budget:
            return _error(429, "Request over limit", headers)
        if len(self._hits) >= self.burst_limit:
            return _error(429, "Request over limit", headers)
        self._hits.append(now)
        self._used_today += 1
        headers = self._headers(now)
        if self.fail_next:
            return _error(self.fail_next.pop(0), "Service unavailable", headers)
        response = await handler(request)
        response.headers.update(headers)
        return response

    def new_day(self) -> None:
        """The daily budget is granted again."""
        self._used_today = 0

    # -- persons -------------------------------------------------------------------------

    def _check_custom(self, values: Any) -> str | None:
        if values is None:
            return None
        if not isinstance(values, dict):
            return "custom_fields must be an object"
        unknown = sorted(set(values) - self.custom_fields)
        return f"Unknown custom field(s): {', '.join(unknown)}" if unknown else None

    def _apply(self, person: dict[str, Any], body: dict[str, Any]) -> None:
        for name in ("name", "owner_id", "org_id", "visible_to", "label_ids"):
            if name in body:
                person[name] = body[name]
        for plural in ("emails", "phones"):
            if plural in body:
                person[plural] = [dict(e) for e in body[plural]]
        if body.get("custom_fields"):
            person["custom_fields"].update(body["custom_fields"])

    async def create(self, request: web.Request) -> web.Response:
        """``POST /api/v2/persons``."""
        body = await request.json()
        if not body.get("name"):
            return _error(400, "Name must be given.")
        if problem := self._check_custom(body.get("custom_fields")):
            return _error(400, problem)
        person: dict[str, Any] = {
            "id": self._next_id,
            "name": "",
            "emails": [],
            "phones": [],
            "custom_fields": dict.fromkeys(self.custom_fields),
        }
        self._next_id += 1
        self._apply(person, body)
        self.persons[person["id"]] = person
        self._created_at[person["id"]] = self.clock()
        if self.lose_create_answers:
            lost = self.lose_create_answers.pop(0)
            if isinstance(lost, int):
                return _error(lost, "Service unavailable")  # written, then a 5xx
            assert request.transport is not None
            request.transport.close()  # written, then no answer at all
        return _json(200, {"success": True, "data": person})

    def _person(self, request: web.Request) -> dict[str, Any] | None:
        raw = request.match_info["id"]
        return self.persons.get(int(raw)) if raw.isdigit() else None

    async def get(self, request: web.Request) -> web.Response:
        """``GET /api/v2/persons/{id}``."""
        person = self._person(request)
        if person is None:
            return _error(404, "Person not found")
        return _json(200, {"success": True, "data": person})

    async def patch(self, request: web.Request) -> web.Response:
        """``PATCH /api/v2/persons/{id}``."""
        person = self._person(request)
        if person is None:
            return _error(404, "Person not found")
        body = await request.json()
        if problem := self._check_custom(body.get("custom_fields")):
            return _error(400, problem)
        self._apply(person, body)
        return _json(200, {"success": True, "data": person})

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /api/v2/persons/{id}``."""
        person = self._person(request)
        if person is None:
            return _error(404, "Person not found")
        del self.persons[person["id"]]
        return _json(200, {"success": True, "data": {"id": person["id"]}})

    async def search(self, request: web.Request) -> web.Response:
        """``GET /api/v2/persons/search``."""
        term = request.query.get("term", "")
        exact = request.query.get("exact_match", "false") == "true"
        fields = set(request.query.get("fields", "email,custom_fields").split(","))
        if len(term) < (1 if exact else 2):
            return _error(400, "Search term must be at least 2 characters long")
        items = []
        indexed_before = self.clock() - self.search_lag
        for person in self.persons.values():
            if self._created_at.get(person["id"], indexed_before) > indexed_before:
                continue  # not in the search index yet
            values: list[str] = []
            if "email" in fields:
                values += [e["value"] for e in person["emails"]]
            if "custom_fields" in fields:
                values += [str(v) for v in person["custom_fields"].values() if v is not None]
            hit = any(
                v.lower() == term.lower() if exact else term.lower() in v.lower() for v in values
            )
            if hit:
                items.append({"result_score": 1.0, "item": self._search_item(person)})
        data = {"items": items}
        return _json(200, {"success": True, "data": data, "additional_data": {"next_cursor": None}})

    @staticmethod
    def _search_item(person: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": person["id"],
            "type": "person",
            "name": person["name"],
            "phones": [p["value"] for p in person["phones"]],
            "emails": [e["value"] for e in person["emails"]],
            "visible_to": 3,
            "owner": {"id": 1},
            "organization": None,
            "custom_fields": [str(v) for v in person["custom_fields"].values() if v is not None],
            "notes": [],
        }

    def add_person(self, name: str, email: str) -> int:
        """A person made in Pipedrive by hand (indexed already); its id."""
        person_id = self._next_id
        self._next_id += 1
        self.persons[person_id] = {
            "id": person_id,
            "name": name,
            "emails": [{"value": email, "primary": True, "label": "work"}],
            "phones": [],
            "custom_fields": dict.fromkeys(self.custom_fields),
        }
        return person_id

    def with_email(self, email: str) -> list[dict[str, Any]]:
        """Every person holding ``email`` (case-insensitive)."""
        return [
            p
            for p in self.persons.values()
            if any(e["value"].lower() == email.lower() for e in p["emails"])
        ]

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self.middleware])
        app.router.add_get(f"{_PERSONS}/search", self.search)
        app.router.add_post(_PERSONS, self.create)
        app.router.add_get(_PERSONS + "/{id}", self.get)
        app.router.add_patch(_PERSONS + "/{id}", self.patch)
        app.router.add_delete(_PERSONS + "/{id}", self.delete)
        return app


async def serve(fake: FakePipedrive) -> web.AppRunner:
    """Serve ``fake`` on a free port of 127.0.0.1 and set its ``url``."""
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    return runner
