"""Cauce's HTTP types, Retry-After and vendor rate-limit header parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.core.http import Headers, Request, Response, parse_retry_after, retry_after_from_headers
from cauce.core.http.retry_after import MAX_RETRY_AFTER

NOW = 1_800_000_000.0
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1)


@given(st.dictionaries(token.map(str.lower), st.text(max_size=20), max_size=8), st.data())
def test_headers_are_case_insensitive(items: dict[str, str], data: st.DataObject) -> None:
    """Any casing of a name finds its value, and the map holds each name once."""
    headers = Headers(items)
    for name, value in items.items():
        cased = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
        assert cased in headers
        assert headers[cased] == value
    assert len(headers) == len(items)


def test_repeated_headers_are_joined() -> None:
    """Two values of one header become one comma-separated value."""
    assert Headers([("Vary", "a"), ("vary", "b")])["VARY"] == "a, b"


def test_request_constructors_and_body() -> None:
    """JSON is encoded with its type; methods are upper-cased; POST is not idempotent."""
    request = Request("post", "http://x/", json={"a": [1, 2]})
    assert request.method == "POST"
    assert request.body() == (b'{"a":[1,2]}', "application/json")
    assert not request.idempotent
    assert Request.put("http://x/", content=b"raw").body() == (b"raw", None)
    assert Request.get("http://x/").idempotent
    with pytest.raises(ValueError):
        Request("POST", "http://x/", json={}, content=b"x")


def test_response_helpers() -> None:
    """ok covers 2xx only; json() and text() decode the body."""
    response = Response(201, Headers({"A": "b"}), b'{"k": "\xc3\xa9"}')
    assert response.ok
    assert not Response(302).ok
    assert response.json() == {"k": "é"}
    assert response.headers["a"] == "b"
    assert "é" in response.text()


@given(st.integers(min_value=0, max_value=10**7))
def test_retry_after_seconds_round_trip(seconds: int) -> None:
    """Delay-seconds parse to themselves, capped at a day."""
    assert parse_retry_after(str(seconds), NOW) == min(float(seconds), MAX_RETRY_AFTER)


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_retry_after_http_date_is_relative_to_now(offset: int) -> None:
    """An HTTP-date parses to its distance from now, never negative, capped at a day."""
    value = format_datetime(datetime.fromtimestamp(NOW + offset, UTC), usegmt=True)
    assert parse_retry_after(value, NOW) == min(max(float(offset), 0.0), MAX_RETRY_AFTER)


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    """Garbage is ignored (None) or a bounded number, never an exception."""
    result = parse_retry_after(value, NOW)
    assert result is None or 0.0 <= result <= MAX_RETRY_AFTER


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "4", "X-RateLimit-Reset": "60"}, 4.0),
        ({"RateLimit": "limit=100, remaining=0, reset=9"}, 9.0),
        ({"RateLimit": '"default";r=0;t=12'}, 12.0),
        ({"RateLimit-Reset": "7"}, 7.0),
        ({"X-RateLimit-Reset-After": "1.5"}, 1.5),
        ({"X-RateLimit-Reset": "30"}, 30.0),
        ({"X-RateLimit-Reset": str(int(NOW) + 45)}, 45.0),
        (
            {
                "X-HubSpot-RateLimit-Remaining": "0",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            },
            10.0,
        ),
        (
            {
                "X-HubSpot-RateLimit-Remaining": "3",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            },
            None,
        ),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_vendor_rate_limit_headers(headers: dict[str, str], expected: float | None) -> None:
    """Each vendor convention yields its wait; Retry-After wins when present."""
    assert retry_after_from_headers(Headers(headers), wall_clock=lambda: NOW) == expected
