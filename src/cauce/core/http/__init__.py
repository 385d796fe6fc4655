"""The only place that builds outbound HTTP clients (DESIGN.md §4.5, ADR 0007).

Adapters depend on the :class:`HttpClient` port and speak Cauce's own types
(:class:`Request`, :class:`Response`, the errors in :mod:`cauce.core.http.errors`);
the composition root builds one guarded client per upstream with :class:`HttpClients`.
Under the port: the upstream's :class:`~cauce.core.resilience.ResiliencePipeline`,
redirects followed hop by hop (SSRF-checked for user-supplied URLs), a client span per
hop with W3C ``traceparent``, and one pooled aiohttp session per upstream.
"""

from cauce.core.http.aiohttp_transport import AiohttpTransport, VettingResolver
from cauce.core.http.classify import classify_response, is_upstream_failure
from cauce.core.http.client import UpstreamClient
from cauce.core.http.errors import (
    ClientClosedError,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamServerError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamTlsError,
)
from cauce.core.http.faults import FaultInjectingTransport, FaultKind, FaultPolicy
from cauce.core.http.metrics import HttpClientMetrics
from cauce.core.http.registry import (
    USER_AGENT,
    ClientOptions,
    HttpClients,
    TransportFactory,
    TransportHook,
)
from cauce.core.http.retry_after import parse_retry_after, retry_after_from_headers
from cauce.core.http.timers import CoalescingClock
from cauce.core.http.types import (
    IDEMPOTENT_METHODS,
    Headers,
    HttpClient,
    Request,
    Response,
    Transport,
)

__all__ = [
    "IDEMPOTENT_METHODS",
    "USER_AGENT",
    "AiohttpTransport",
    "ClientClosedError",
    "ClientOptions",
    "CoalescingClock",
    "FaultInjectingTransport",
    "FaultKind",
    "FaultPolicy",
    "Headers",
    "HttpClient",
    "HttpClientMetrics",
    "HttpClients",
    "Request",
    "Response",
    "Transport",
    "TransportFactory",
    "TransportHook",
    "UpstreamClient",
    "UpstreamClientError",
    "UpstreamConnectionError",
    "UpstreamProtocolError",
    "UpstreamRateLimitedError",
    "UpstreamServerError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
    "UpstreamTlsError",
    "VettingResolver",
    "classify_response",
    "is_upstream_failure",
    "parse_retry_after",
    "retry_after_from_headers",
]
