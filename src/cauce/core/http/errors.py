"""The errors an :class:`~cauce.core.http.types.HttpClient` raises, classified for the guards.

Retryable (subclasses of :class:`~cauce.core.resilience.RetryableError`, each with
``retry_after`` when the upstream gave one):

- :class:`UpstreamServerError` - 5xx or 408;
- :class:`UpstreamRateLimitedError` - 429 (an ``UpstreamThrottledError``: the pipeline
  drains the upstream's rate limiter for ``retry_after``);
- :class:`UpstreamConnectionError` - refused, reset, DNS failure, truncated body;
- :class:`UpstreamTimeoutError` - the transport's own timeout (unguarded clients).

Permanent (sending again gives the same answer):

- :class:`UpstreamClientError` - any other 4xx; the adapter decides (409 "already
  exists" is often business as usual);
- :class:`UpstreamTlsError` - certificate verification failed;
- :class:`UpstreamProtocolError` - too many redirects, a body over the size limit.

:class:`ClientClosedError` (shutdown) is neither: nothing was sent.

Status errors carry the whole :class:`~cauce.core.http.types.Response` (``.response``,
``.status``, ``.body``); their message never includes the body, which can echo
personal data.
"""

from __future__ import annotations

from cauce.core.errors import BadGateway, CauceError, ServiceUnavailable
from cauce.core.http.types import Response
from cauce.core.resilience.errors import RetryableError, UpstreamThrottledError

__all__ = [
    "ClientClosedError",
    "UpstreamClientError",
    "UpstreamConnectionError",
    "UpstreamProtocolError",
    "UpstreamRateLimitedError",
    "UpstreamServerError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
    "UpstreamTlsError",
]


class UpstreamStatusError(CauceError):
    """The upstream answered with a status that is not a success (base of the three below)."""

    status_code = 502
    code = "upstream_status"
    title = "Upstream answered with an error status"

    def __init__(
        self, upstream: str, response: Response, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{upstream!r} answered HTTP {response.status}")
        self.upstream = upstream
        self.response = response
        self.status = response.status
        self.retry_after = retry_after

    @property
    def body(self) -> bytes:
        """The response body, as received."""
        return self.response.content


class UpstreamClientError(UpstreamStatusError):
    """A 4xx other than 408/429: the upstream refused this request; retrying will not help."""

    code = "upstream_client_error"
    title = "Upstream refused the request"


class UpstreamServerError(UpstreamStatusError, RetryableError):
    """A 5xx (or 408): the upstream failed this time; the same request may succeed later."""

    code = "upstream_server_error"
    title = "Upstream failed"


class UpstreamRateLimitedError(UpstreamStatusError, UpstreamThrottledError):
    """A 429: the upstream asks every caller to slow down for ``retry_after`` seconds."""

    status_code = 503
    code = "upstream_throttled"
    title = "Upstream is throttling requests"


class UpstreamConnectionError(RetryableError):
    """No usable answer: connection refused or reset, DNS failure, truncated response."""

    code = "upstream_connection_failed"
    title = "Could not reach the upstream"


class UpstreamTimeoutError(RetryableError, TimeoutError):
    """The transport's own timeout fired (guarded calls time out in the pipeline instead)."""

    status_code = 504
    code = "upstream_timeout"
    title = "Upstream timed out"


class UpstreamTlsError(BadGateway):
    """The upstream's TLS certificate did not verify. Permanent until someone fixes it."""

    code = "upstream_tls_error"
    title = "Upstream TLS verification failed"


class UpstreamProtocolError(BadGateway):
    """The upstream's answer broke a rule of ours (too many redirects, too large a body)."""

    code = "upstream_protocol_error"
    title = "Upstream answer not acceptable"


class ClientClosedError(ServiceUnavailable):
    """The HTTP clients were closed (shutdown in progress); nothing was sent."""

    code = "http_client_closed"
    title = "Outbound HTTP is shutting down"
    retry_after: float | None = None
