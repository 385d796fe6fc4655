"""The guarded client of one upstream: guards, redirects, SSRF checks, tracing, metrics.

One :meth:`UpstreamClient.send` runs, from the outside in::

    ResiliencePipeline.execute        deadline, retry + budget, breaker, rate limit,
    │                                 bulkhead, per-attempt timeout (see its docstring)
    └─ one attempt
       └─ for each redirect hop (at most ``max_redirects``):
          SSRF check of scheme and IP literal      (clients with an SSRF guard)
          client span, traceparent injected        (when tracing is on)
          Transport.send                           (aiohttp; DNS vetted and pinned)
       classify: 2xx/3xx returned; 429/408/5xx retryable; other 4xx permanent

Redirects live *inside* the attempt: the per-attempt timeout bounds the whole chain,
and a retry starts again from the original URL (a redirect target is not trusted
beyond the hop it came from). Each hop has its own span, as OpenTelemetry's HTTP
conventions ask. On a hop to another origin (scheme, host or port) every header the
caller set is dropped except a short allowlist of harmless ones (``_CROSS_ORIGIN_SAFE``
and the upstream's idempotency header): a vendor's credential can be any header
(Pipedrive's ``x-api-token``, ``api-key``, ``x-auth-token``...), so a denylist of
credential names would always miss one. Once dropped they stay dropped, even if a later
hop comes back to the first origin.

Non-idempotent methods (POST, PATCH) get one attempt unless the request carries an
idempotency key, which is then sent in the upstream's idempotency header on every
attempt (the same key, so the upstream applies the write once).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from typing import Any, Final

from opentelemetry.trace import SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from cauce.core.http.classify import classify_response
from cauce.core.http.errors import UpstreamProtocolError
from cauce.core.http.types import Request, Response, Transport
from cauce.core.resilience.pipeline import ResiliencePipeline
from cauce.core.security.ssrf import SsrfGuard

__all__ = ["UpstreamClient"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    """Scheme, host and port, the port spelled out or not (`https://a.es:443` is
    `https://a.es`, which yarl's `origin()` tells apart)."""
    return url.scheme, url.host, url.port


# The only caller-set headers a redirect carries to another origin: none of them can
# hold a credential. Everything else (Authorization, Cookie, x-api-token, api-key, a
# webhook's signature...) stays on the origin the caller addressed.
_CROSS_ORIGIN_SAFE: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "content-language",
        "user-agent",
        "traceparent",
        "tracestate",
        "idempotency-key",
    }
)
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_SCHEMES: Final = frozenset({"http", "https"})


class UpstreamClient:
    """Implements :class:`~cauce.core.http.types.HttpClient` for one upstream.

    ``pipeline=None`` gives an unguarded client (benchmarks compare the two); the
    transport then needs a timeout of its own.
    """

    __slots__ = (
        "_default_headers",
        "_follow",
        "_guard",
        "_idempotency_header",
        "_max_redirects",
        "_pipeline",
        "_record",
        "_tracer",
        "_transport",
        "_upstream",
        "_wall_clock",
    )

    def __init__(
        self,
        upstream: str,
        transport: Transport,
        *,
        pipeline: ResiliencePipeline | None,
        guard: SsrfGuard | None = None,
        tracer: Tracer | None = None,
        record_status: Callable[[int], None] | None = None,
        default_headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
        max_redirects: int = 5,
        idempotency_header: str = "Idempotency-Key",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._upstream = upstream
        self._transport = transport
        self._pipeline = pipeline
        self._guard = guard
        self._tracer = tracer
        self._record = record_status
        self._default_headers = dict(default_headers or {})
        self._follow = follow_redirects
        self._max_redirects = max_redirects
        self._idempotency_header = idempotency_header
        self._wall_clock = wall_clock

    @property
    def upstream(self) -> str:
        """The upstream's name."""
        return self._upstream

    @property
    def pipeline(self) -> ResiliencePipeline | None:
        """The guards every call goes through (None when unguarded)."""
        return self._pipeline

    @property
    def transport(self) -> Transport:
        """The transport under the guards."""
        return self._transport

    def send(self, request: Request) -> Coroutine[Any, Any, Response]:
        """Send ``request`` under the upstream's guards (see the module docstring).

        A plain function returning the coroutine (callers ``await client.send(...)`` as
        with an ``async def``): one coroutine frame less, and every frame in the chain is
        re-entered at each suspension of the request, several times per exchange.
        """
        text = request.url
        url = URL(text)
        if request.params:
            url = url.update_query(request.params)
            text = str(url)
        body, content_type = request.body()
        headers = self._headers(request, content_type)
        method = request.method
        pipeline = self._pipeline
        if pipeline is None:
            return self._attempt(method, url, text, headers, body, 0)

        if self._tracer is None:
            # Only spans need the attempt number; without them skip the closure's cell.
            fn: Callable[[], Awaitable[Response]] = partial(
                self._attempt, method, url, text, headers, body, 0
            )
        else:
            attempts = 0

            async def fn() -> Response:
                nonlocal attempts
                attempts += 1
                return await self._attempt(method, url, text, headers, body, attempts - 1)

        return pipeline.execute(
            fn, idempotent=request.idempotent, idempotency_key=request.idempotency_key
        )

    def _headers(self, request: Request, content_type: str | None) -> dict[str, str]:
        headers = dict(self._default_headers)
        if request.headers:
            headers.update(request.headers)
        if content_type is not None or request.idempotency_key is not None:
            present = {name.lower() for name in headers}
            if content_type is not None and "content-type" not in present:
                headers["Content-Type"] = content_type
            if request.idempotency_key is not None:
                headers[self._idempotency_header] = request.idempotency_key
        return headers

    async def _attempt(
        self,
        method: str,
        url: URL,
        text: str,
        headers: dict[str, str],
        body: bytes | None,
        resend: int,
    ) -> Response:
        for _ in range(self._max_redirects + 1):
            guard = self._guard
            if guard is not None:
                guard.check_target(url.scheme, url.raw_host)
            elif url.scheme not in _SCHEMES:
                raise UpstreamProtocolError(f"{self._upstream!r}: scheme {url.scheme!r}")
            # The exchange is inlined rather than a method: one frame less per suspension.
            if self._tracer is None:
                response = await self._transport.send(Request(method, text, headers, content=body))
            else:
                response = await self._traced(method, url, text, headers, body, resend)
            if self._record is not None:
                self._record(response.status)
            if not self._follow or response.status not in _REDIRECTS:
                return classify_response(self._upstream, response, wall_clock=self._wall_clock)
            location = response.headers.get("location")
            if not location:
                return classify_response(self._upstream, response, wall_clock=self._wall_clock)
            target = url.join(URL(location))
            if response.status == 303 or (
                response.status in (301, 302) and method not in ("GET", "HEAD")
            ):
                # As every browser does: the redirected request becomes a bodiless GET.
                method = "GET" if method != "HEAD" else "HEAD"
                body = None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if _origin(target) != _origin(url):
                headers = self._cross_origin_headers(headers)
            url = target
            text = str(target)
        raise UpstreamProtocolError(
            f"{self._upstream!r}: more than {self._max_redirects} redirects"
        )

    def _cross_origin_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """The headers a hop to another origin may carry (see the module docstring)."""
        idempotency = self._idempotency_header.lower()
        return {
            k: v
            for k, v in headers.items()
            if (name := k.lower()) in _CROSS_ORIGIN_SAFE or name == idempotency
        }

    async def _traced(
        self,
        method: str,
        url: URL,
        text: str,
        headers: dict[str, str],
        body: bytes | None,
        resend: int,
    ) -> Response:
        tracer = self._tracer
        assert tracer is not None
        port = url.port
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "server.address": url.raw_host or "",
            # Path only: a query string can carry tokens or personal data.
            "url.full": str(url.with_query(None).with_fragment(None).with_user(None)),
            "cauce.upstream": self._upstream,
        }
        if port is not None:
            attributes["server.port"] = port
        if resend:
            attributes["http.request.resend_count"] = resend
        with tracer.start_as_current_span(
            method, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ) as span:
            sent = dict(headers)
            _PROPAGATOR.inject(sent)
            try:
                response = await self._transport.send(Request(method, text, sent, content=body))
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(StatusCode.ERROR)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 400:
                span.set_attribute("error.type", str(response.status))
                span.set_status(StatusCode.ERROR)
            return response
