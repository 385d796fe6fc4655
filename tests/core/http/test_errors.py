"""Upstream and guard errors are CauceErrors with stable codes and gateway statuses."""

from __future__ import annotations

import pytest

from cauce.core.errors import CauceError
from cauce.core.http import (
    ClientClosedError,
    Headers,
    Response,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamServerError,
    UpstreamTimeoutError,
    UpstreamTlsError,
    is_upstream_failure,
)
from cauce.core.resilience import (
    AttemptTimeout,
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceeded,
    RateLimitedError,
    RetryableError,
    UpstreamThrottledError,
    default_is_retryable,
)
from cauce.core.security.ssrf import UnsafeUrlError

RESPONSE = Response(503, Headers({"x": "1"}), b'{"email": "ana@example.com"}')

EXPECTED: list[tuple[CauceError, int, str]] = [
    (RetryableError("x"), 502, "upstream_error"),
    (UpstreamThrottledError("x"), 503, "upstream_throttled"),
    (AttemptTimeout("x"), 504, "upstream_timeout"),
    (DeadlineExceeded("x"), 504, "upstream_deadline_exceeded"),
    (CircuitOpenError("crm"), 503, "upstream_circuit_open"),
    (BulkheadFullError("crm", reason="full"), 503, "upstream_busy"),
    (RateLimitedError("crm", retry_after=1.0), 503, "upstream_rate_limited"),
    (UpstreamServerError("crm", RESPONSE), 502, "upstream_server_error"),
    (UpstreamRateLimitedError("crm", RESPONSE), 503, "upstream_throttled"),
    (UpstreamClientError("crm", RESPONSE), 502, "upstream_client_error"),
    (UpstreamConnectionError("x"), 502, "upstream_connection_failed"),
    (UpstreamTimeoutError("x"), 504, "upstream_timeout"),
    (UpstreamTlsError("x"), 502, "upstream_tls_error"),
    (UpstreamProtocolError("x"), 502, "upstream_protocol_error"),
    (ClientClosedError("x"), 503, "http_client_closed"),
    (UnsafeUrlError("loopback", "127.0.0.1"), 400, "unsafe_url"),
]


@pytest.mark.parametrize(("error", "status", "code"), EXPECTED)
def test_every_error_renders_with_a_stable_code(error: CauceError, status: int, code: str) -> None:
    """Each error is a CauceError with its documented status and code."""
    assert isinstance(error, CauceError)
    assert (error.status_code, error.code) == (status, code)


def test_status_errors_never_put_the_body_in_their_message() -> None:
    """The upstream's body (which may echo personal data) stays out of the message and extras."""
    for error in (UpstreamServerError("crm", RESPONSE), UpstreamClientError("crm", RESPONSE)):
        assert "ana@" not in str(error)
        assert error.extra == {}
        assert error.body == RESPONSE.content


def test_retry_and_breaker_classification() -> None:
    """Transient errors retry; 4xx, refused URLs and shutdown neither retry nor trip the breaker."""
    transient: list[CauceError] = [
        UpstreamServerError("crm", RESPONSE),
        UpstreamRateLimitedError("crm", RESPONSE),
        UpstreamConnectionError("x"),
        UpstreamTimeoutError("x"),
    ]
    for error in transient:
        assert default_is_retryable(error)
        assert is_upstream_failure(error)
    permanent: list[CauceError] = [
        UpstreamClientError("crm", RESPONSE),
        UpstreamProtocolError("x"),
        UnsafeUrlError("private", "10.0.0.1"),
        ClientClosedError("x"),
    ]
    for refused in permanent:
        assert not default_is_retryable(refused)
        assert not is_upstream_failure(refused)
    assert not default_is_retryable(UpstreamTlsError("x"))
    assert is_upstream_failure(UpstreamTlsError("x"))
    assert not is_upstream_failure(CircuitOpenError("crm"))
