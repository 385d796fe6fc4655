"""A scripted local upstream (aiohttp.web on a loopback address) for the HTTP-layer tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds before answering; cut short when the server stops, so a test may script
    an answer far slower than any timeout it tests without waiting for it at teardown."""


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """Answers each path from its script (the last reply repeats) and records every request.

    Unscripted paths answer ``200 {"ok": true}``.
    """

    def __init__(
        self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None, port: int = 0
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.port = port
        self.scripts: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    @property
    def origin(self) -> str:
        """``scheme://host:port`` of the server."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        return self.origin + path

    def script(self, path: str, *replies: Reply) -> None:
        """Answer ``path`` with ``replies`` in order, repeating the last one."""
        self.scripts[path] = list(replies)

    def hits(self, path: str | None = None) -> int:
        """How many requests arrived (for ``path``, or in total)."""
        return sum(1 for s in self.seen if path is None or s.path == path)

    def requests(self, path: str) -> list[Seen]:
        """The requests received for ``path``, in order."""
        return [s for s in self.seen if s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.rel_url.raw_query_string,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        replies = self.scripts.get(request.path)
        if not replies:
            reply = Reply(json={"ok": True})
        else:
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
        content = orjson.dumps(reply.json) if reply.json is not None else reply.body
        headers = dict(reply.headers)
        if reply.json is not None:
            headers.setdefault("Content-Type", "application/json")
        return web.Response(status=reply.status, body=content, headers=headers)

    async def start(self) -> ScriptedServer:
        """Start listening (on an ephemeral port unless one was given)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop the server (delayed answers still pending are sent at once)."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()


StartServer = Callable[..., Coroutine[Any, Any, ScriptedServer]]


class ScriptedResolver:
    """A resolver that answers from a list (the last answer repeats) and counts lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
