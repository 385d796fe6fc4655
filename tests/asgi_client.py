"""Driving an ASGI app as a server would for a client that goes away mid-body, and
reading the request counter that records it (tests of the 499 a disconnect gets)."""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Message


async def post_then_vanish(
    app: ASGIApp,
    path: str,
    chunks: list[bytes],
    *,
    declared: int,
    headers: dict[str, str] | None = None,
    finished: bool = False,
) -> list[Message]:
    """POST `chunks` of a `declared`-byte body straight to the app; the client is gone
    after them (every later `receive` is `http.disconnect`) unless `finished`, when the
    last chunk ends the body. `headers` default to a JSON body's. The messages sent back."""
    pending: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    if finished:
        pending[-1]["more_body"] = False

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    answered: list[Message] = []

    async def send(message: Message) -> None:
        answered.append(message)

    sent = headers if headers is not None else {"content-type": "application/json"}
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"cauce.test"),
            (b"content-length", str(declared).encode()),
            *((k.lower().encode(), v.encode()) for k, v in sent.items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("cauce.test", 80),
    }
    await app(scope, receive, send)
    return answered


def posts_counted(metrics: str, route: str, status: int | str) -> float:
    """`cauce_http_requests_total` of POSTs to `route` with `status`, from `/metrics` text."""
    found = re.search(
        rf'^cauce_http_requests_total\{{method="POST",route="{re.escape(route)}",'
        rf'status="{status}"\}} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0
