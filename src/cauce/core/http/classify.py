"""Status classification, and the predicates the guards use for HTTP errors.

- 2xx and 3xx are answers: returned to the adapter.
- 429 is throttling: :class:`UpstreamRateLimitedError`, ``retry_after`` from
  ``Retry-After`` or the vendor's rate-limit headers.
- 408 and 5xx are transient: :class:`UpstreamServerError`, ``retry_after`` from
  ``Retry-After`` only (vendors send their rate-limit headers on every response, and
  on a 500 those say nothing about when the upstream will recover).
- Any other 4xx is permanent: :class:`UpstreamClientError`.

For the circuit breaker, only failures that say the upstream is unhealthy count
(:func:`is_upstream_failure`): a 4xx, a refused URL, a body over our limit or our own
shutdown are "ignored" outcomes, as Resilience4j's ``ignoreExceptions`` would make them.
"""

from __future__ import annotations

from collections.abc import Callable

from cauce.core.http.errors import (
    ClientClosedError,
    UpstreamClientError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamServerError,
)
from cauce.core.http.retry_after import parse_retry_after, retry_after_from_headers
from cauce.core.http.types import Response
from cauce.core.resilience.breaker import default_is_failure
from cauce.core.security.ssrf import UnsafeUrlError

__all__ = ["classify_response", "is_upstream_failure"]

_IGNORED = (UpstreamClientError, UpstreamProtocolError, UnsafeUrlError, ClientClosedError)


def classify_response(
    upstream: str, response: Response, *, wall_clock: Callable[[], float]
) -> Response:
    """Return ``response`` if it is an answer, else raise its classified error."""
    status = response.status
    if status < 400:
        return response
    if status == 429:
        retry_after = retry_after_from_headers(response.headers, wall_clock=wall_clock)
        raise UpstreamRateLimitedError(upstream, response, retry_after=retry_after)
    if status >= 500 or status == 408:
        value = response.headers.get("retry-after")
        retry_after = parse_retry_after(value, wall_clock()) if value is not None else None
        raise UpstreamServerError(upstream, response, retry_after=retry_after)
    raise UpstreamClientError(upstream, response)


def is_upstream_failure(error: BaseException) -> bool:
    """Circuit-breaker predicate: True when ``error`` says the upstream is unhealthy."""
    return default_is_failure(error) and not isinstance(error, _IGNORED)
