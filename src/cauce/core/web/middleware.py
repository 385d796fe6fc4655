"""The outermost request middleware: request id, log context, access log, metrics, body
limit, refused content codings, clients that leave before their body arrives, and the
headers every answer carries (`X-Content-Type-Options`, `Cache-Control` on /v1).

Written as plain ASGI (not `BaseHTTPMiddleware`) because it runs on every request and
must stay cheap; see benchmarks/auth_overhead.py.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, get_args

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cauce.core.config import AccessLogClient
from cauce.core.db.unavailable import database_unavailable
from cauce.core.observability.logging import LogThrottle
from cauce.core.observability.metrics import HttpMetrics
from cauce.core.observability.tracing import REDACTED
from cauce.core.observability.tracing import client_network as trace_network
from cauce.core.web.problems import PROBLEM_CODE_STATE, echo, problem_response

access_log = structlog.get_logger("cauce.access")
log = structlog.get_logger("cauce.http")
_INTERNAL_DETAIL = "an unexpected error occurred; quote the request id when reporting it"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNAVAILABLE_DETAIL = (
    "the database did not answer (a lost connection, busy, or out of space); retry shortly"
)
RETRY_AFTER_SECONDS = 1
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The status recorded (access log, `cauce_http_requests_total`) for a request whose
# client closed the connection before its body had all arrived. Never sent: nobody is
# left to read it. It is nginx's "499 Client Closed Request", the convention log tools
# and dashboards already know. Not 500: nothing failed on our side, and a flaky mobile
# network must not page anyone or eat the 5xx error budget. Not 400: the request was
# not wrong, only unfinished.
CLIENT_CLOSED_REQUEST = 499
# While the database is down every request fails the same way: one warning per error
# class this often, counting the others, instead of one line (or a traceback) each.
UNAVAILABLE_LOG_INTERVAL_SECONDS = 5.0
_REASON_LIMIT = 200
# Every answer: browsers take the declared Content-Type (a CSV, an error) at its word.
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# /v1 answers carry leads, exports and keys' data: no browser or proxy cache keeps them.
_NO_STORE = (b"cache-control", b"no-store")
# The access line's `client` when the peer is no IP address (a name a proxy passed on, a
# test client's) and only its network may be written: a host name can name a person.
CLIENT_NOT_AN_ADDRESS = "[redacted]"
_CLIENT_MODES = frozenset(get_args(AccessLogClient))
# `[2001:db8::1]:51000`, `203.0.113.7:51000`: an address written with its port.
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::\d+)?$")
_V4_WITH_PORT = re.compile(r"^([0-9.]+):\d+$")


class RequestContextMiddleware:
    """Bind a request id to the logs and response, enforce the body limit, record metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        max_body_bytes: int,
        body_limits: Mapping[str, int] | None = None,
        access_log_enabled: bool = True,
        access_log_client: AccessLogClient = "network",
        unavailable_log_interval: float = UNAVAILABLE_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`body_limits` replaces `max_body_bytes` for the paths it names (an upload
        endpoint that streams its body and enforces its own, larger, limit).
        `unavailable_log_interval` spaces the `http.database_unavailable` warnings of one
        error class (`clock` tells the time). `access_log_client` is what the access
        line keeps of the client's address (`http.access_log_client`): its `network`,
        the `full` address, or nothing (`off`)."""
        if access_log_client not in _CLIENT_MODES:
            raise ValueError(
                f"access_log_client must be one of {sorted(_CLIENT_MODES)}, "
                f"not {access_log_client!r}"
            )
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_limits = dict(body_limits or {})
        self.access_log_enabled = access_log_enabled
        self.access_log_client = access_log_client
        self.unavailable_log = LogThrottle(unavailable_log_interval, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = self._request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        status_sent = False
        raw_id = request_id.encode()
        no_store = _is_v1(scope)

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                headers = list(message.get("headers", []))
                nosniff, cache = True, no_store
                for name, _ in headers:
                    lowered = name.lower()
                    if lowered == b"x-content-type-options":
                        nosniff = False
                    elif lowered == b"cache-control":  # the route chose its own
                        cache = False
                headers.append((b"x-request-id", raw_id))
                if nosniff:
                    headers.append(_NOSNIFF)
                if cache:
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        gone_error: str | None = None
        self.metrics.in_flight.inc()
        body = _BodyReceiver(receive, self.body_limits.get(scope["path"], self.max_body_bytes))
        try:
            declared = self._content_length(scope)
            if declared is not None and declared > body.limit:
                await self._reject_too_large(scope, send_with_id, body.limit)
            elif _has_nul(scope):
                await self._send_problem(
                    scope,
                    send_with_id,
                    400,
                    "nul_in_url",
                    "Bad request",
                    "the URL holds a NUL character (%00), which no id or filter can contain",
                )
            elif (coding := _content_coding(scope)) is not None:
                await self._reject_coding(scope, send_with_id, coding)
            else:
                await self.app(scope, body, send_with_id)
        except ClientDisconnect:
            # Starlette's word for a client that left while a handler read its body
            # (`request.body()`, `request.form()`) or streamed it an answer. Cut short
            # mid-body, nothing was written: the handler's unit of work rolls back on the
            # way out, and no handler claims an Idempotency-Key before it has the whole
            # body, so a retry with the same key is a fresh request. `finally` says 499.
            body.client_gone = True
        except Exception as exc:
            if body.client_gone:
                # What a handler made of a body cut short (FastAPI turns the disconnect
                # into a 400 "error parsing the body" for declared bodies; a handler may
                # wrap it): the same 499, with the exception's class for the curious.
                gone_error = type(exc).__name__
                return
            # Handled here rather than by Starlette's ServerErrorMiddleware, which re-raises
            # to the server: one log line with the request id, and never a traceback out.
            unavailable = database_unavailable(exc)
            if status_sent or not unavailable:
                log.error("http.unhandled_error", exc_info=exc, path=scope.get("path"))
            if status_sent:
                raise
            if unavailable:
                # An outage, not a bug: its traceback says nothing new, and every request
                # meets it (each still has its access line, code `database_unavailable`).
                self._log_unavailable(scope, exc)
                status = 503
                await self._send_problem(
                    scope,
                    send_with_id,
                    503,
                    "database_unavailable",
                    "Database unavailable",
                    _UNAVAILABLE_DETAIL,
                    retry_after=RETRY_AFTER_SECONDS,
                )
            else:
                status = 500
                await self._send_problem(
                    scope,
                    send_with_id,
                    500,
                    "internal_error",
                    "Internal server error",
                    _INTERNAL_DETAIL,
                )
        finally:
            self.metrics.in_flight.dec()
            if body.client_gone:
                # Whatever the app answered (FastAPI's 400 for a declared body cut short),
                # nobody read it. Info, not a warning: clients on bad networks do this
                # every day, and the 499s in the metric show a trend worth a look.
                status = CLIENT_CLOSED_REQUEST
                log.info("http.client_disconnected", path=scope.get("path"), error=gone_error)
            elapsed = time.perf_counter() - start
            template = self._route_template(scope)
            self.metrics.observe(scope["method"], template, status, elapsed)
            if self.access_log_enabled:
                fields: dict[str, Any] = {
                    "method": scope["method"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                if self.access_log_client != "off":
                    # The peer (the proxy's address behind one, unless the server is told
                    # to trust its forwarded headers): who sent a burst of 401s. An IP
                    # address is personal data: by default only its network.
                    client = _client(scope)
                    if client is not None and self.access_log_client == "network":
                        client = client_network(client)
                    fields["client"] = client
                code = state.get(PROBLEM_CODE_STATE)
                if code is not None and 400 <= status != CLIENT_CLOSED_REQUEST:
                    fields["code"] = code  # why it failed: the problem's stable code
                access_log.info("http.request", **fields)
            structlog.contextvars.clear_contextvars()

    def _log_unavailable(self, scope: Scope, exc: Exception) -> None:
        """One compact warning (no traceback) per error class every so often; it counts
        the ones left out since the last (`suppressed`)."""
        orig = getattr(exc, "orig", None)
        driver_error = type(orig).__name__ if orig is not None else None
        key = f"{type(exc).__name__}/{driver_error}"
        suppressed = self.unavailable_log.admit(key)
        if suppressed is None:
            return
        reason = str(orig if orig is not None else exc).strip().split("\n", 1)[0]
        log.warning(
            "http.database_unavailable",
            error_class=type(exc).__name__,
            driver_error=driver_error,
            reason=echo(reason, _REASON_LIMIT),
            route=self._route_template(scope),
            suppressed=suppressed,
        )

    @staticmethod
    def _route_template(scope: Scope) -> str:
        # FastAPI puts the matched APIRoute in the scope; plain Starlette routes (the docs)
        # only leave their endpoint, and their paths are fixed. Anything unmatched is one
        # label, so scanners cannot blow up the metric's cardinality.
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        if "endpoint" in scope:
            return str(scope["path"])
        return "<unmatched>"

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text: str = value.decode("latin-1")
                if _REQUEST_ID_RE.match(text):
                    return text
                break
        return uuid.uuid4().hex

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def _reject_coding(self, scope: Scope, send: Send, coding: str) -> None:
        await self._send_problem(
            scope,
            send,
            415,
            "unsupported_content_encoding",
            "Unsupported content encoding",
            f"the body is sent with Content-Encoding: {echo(coding)}; only identity "
            "(uncompressed) bodies are read",
            # RFC 9110 15.5.16: name the codings that would have been accepted.
            headers={"accept-encoding": "identity"},
        )

    async def _reject_too_large(self, scope: Scope, send: Send, limit: int) -> None:
        await self._send_problem(
            scope,
            send,
            413,
            "payload_too_large",
            "Payload too large",
            f"the body exceeds {limit} bytes",
            # Close the connection: the client may still be sending a body we will not read.
            close=True,
        )

    @staticmethod
    async def _send_problem(
        scope: Scope,
        send: Send,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        close: bool = False,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = problem_response(
            Request(scope), status=status, code=code, title=title, detail=detail, headers=headers
        )
        if close:
            response.headers["connection"] = "close"
        if retry_after is not None:
            response.headers["retry-after"] = str(retry_after)
        await response(scope, _no_receive, send)


class _BodyReceiver:
    """The app's `receive`: cuts the body off past `limit` (413), and notes a client
    that disconnected before the last chunk of its body (`client_gone`)."""

    __slots__ = ("client_gone", "complete", "limit", "receive", "seen")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0
        self.complete = False
        self.client_gone = False

    async def __call__(self) -> Message:
        message = await self.receive()
        kind = message["type"]
        if kind == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                # HTTPException passes through FastAPI's body parsing untouched and is
                # rendered as problem+json (413) by the app's handlers.
                raise HTTPException(413, f"the body exceeds {self.limit} bytes")
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.disconnect" and not self.complete:
            # Only mid-body: a disconnect after the whole body (a streamed download
            # watching for it) is a request that was answered, or is being answered.
            self.client_gone = True
        return message


def _is_v1(scope: Scope) -> bool:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path == "/v1" or path.startswith("/v1/")


def _client(scope: Scope) -> str | None:
    """The peer's host as the server gives it (never its port); None when there is none
    (a unix socket's peer, for uvicorn)."""
    client = scope.get("client")
    if not client:
        return None
    host = client[0]
    return None if host is None or host == "" else str(host)


@functools.lru_cache(maxsize=1024)
def client_network(host: str) -> str:
    """The network of the client's address, with its prefix and no port: IPv4 /24
    (`203.0.113.0/24`), IPv6 /48 (`2001:db8:abcd::/48`). An IPv4-mapped or a 6to4
    address is its IPv4 one's /24 (a 6to4 /48 holds the whole IPv4 address). Anything
    that is no IP address is `CLIENT_NOT_AN_ADDRESS`. The same cut as a trace's
    (`tracing.client_network`), with the prefix written."""
    text = host.strip()
    match = _BRACKETED.match(text) or _V4_WITH_PORT.match(text)
    if match is not None:
        text = match.group(1)
    network = trace_network(text)  # a zone (`fe80::1%eth0`) goes with the host bits
    if network == REDACTED:
        return CLIENT_NOT_AN_ADDRESS
    return f"{network}/{24 if '.' in network else 48}"


def _has_nul(scope: Scope) -> bool:
    # PostgreSQL text cannot hold NUL: a filter or id with one would fail as a 500.
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query


def _content_coding(scope: Scope) -> str | None:
    """The request's Content-Encoding when its body is encoded (gzip, br...), None when
    it has no body or a plain one: identity is the only coding any route reads. Read as
    JSON, a gzip body would be a misleading 400 "not valid JSON"."""
    coding: str | None = None
    length: bytes | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            text = value.decode("latin-1").strip()
            if any(c.strip().lower() not in ("", "identity") for c in text.split(",")):
                coding = text if coding is None else f"{coding}, {text}"
        elif name == b"content-length":
            length = value.strip()
        elif name == b"transfer-encoding":
            chunked = True
    if coding is None:
        return None
    # A body is there if its length says so, or it is chunked; over HTTP/2 a POST may
    # carry one with neither header. `Content-Length: 0` (or a bodiless GET) has none.
    if length is not None:
        has_body = length.lstrip(b"0") != b""
    else:
        has_body = chunked or scope["method"] in _BODY_METHODS
    return coding if has_body else None


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}
