"""The guarded client against a real local server: classification, retries, bodies, redirects."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from cauce.core.http import (
    ClientOptions,
    CoalescingClock,
    Request,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamServerError,
)
from cauce.core.resilience import (
    AttemptTimeout,
    BreakerPolicy,
    DeadlineExceeded,
    FakeClock,
    RateLimitPolicy,
    RecordingEvents,
    RetryBudgetPolicy,
    RetryPolicy,
    TimeoutPolicy,
)
from tests.core.http.conftest import ClientsFactory, fast_policy
from tests.core.http.upstream import Reply, ScriptedServer, StartServer

WALL = 1_800_000_000.0
# An answer no test waits for: the server cuts it short when it stops.
SLOWER_THAN_ANY_BOUND = 120.0


async def test_503_is_retried_until_success(
    upstream: ScriptedServer, make_clients: ClientsFactory, events: RecordingEvents
) -> None:
    """Two 503s then a 200: the caller gets the 200 after three attempts."""
    upstream.script("/c", Reply(503), Reply(503), Reply(200, json={"id": 1}))
    client = make_clients().get("crm")
    response = await client.send(Request.get(upstream.url("/c")))
    assert response.status == 200
    assert response.json() == {"id": 1}
    assert upstream.hits("/c") == 3
    assert len(events.of("retry")) == 2


async def test_5xx_gives_up_after_max_attempts_with_status_and_body(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """A persistent 502 surfaces as UpstreamServerError carrying the last response."""
    upstream.script("/c", Reply(502, body=b"bad gateway"))
    client = make_clients().get("crm")
    with pytest.raises(UpstreamServerError) as info:
        await client.send(Request.get(upstream.url("/c")))
    assert info.value.status == 502
    assert info.value.body == b"bad gateway"
    assert b"bad gateway" not in str(info.value).encode()
    assert upstream.hits("/c") == 3


async def test_retry_after_seconds_is_honoured(
    upstream: ScriptedServer, make_clients: ClientsFactory, clock: FakeClock
) -> None:
    """A 503 with Retry-After: 7 makes the retry wait 7 s (fake time), not the backoff."""
    upstream.script("/c", Reply(503, headers={"Retry-After": "7"}), Reply(200))
    client = make_clients().get("crm")
    assert (await client.send(Request.get(upstream.url("/c")))).status == 200
    assert clock.sleeps == [7.0]


async def test_retry_after_http_date_is_honoured(
    upstream: ScriptedServer, make_clients: ClientsFactory, clock: FakeClock
) -> None:
    """Retry-After as an HTTP-date 12 s after the (injected) wall clock waits 12 s."""
    when = format_datetime(datetime.fromtimestamp(WALL + 12, UTC), usegmt=True)
    upstream.script("/c", Reply(503, headers={"Retry-After": when}), Reply(200))
    client = make_clients(wall_clock=lambda: WALL).get("crm")
    assert (await client.send(Request.get(upstream.url("/c")))).status == 200
    assert clock.sleeps == [12.0]


async def test_retry_after_past_the_deadline_gives_up_at_once(
    upstream: ScriptedServer, make_clients: ClientsFactory, clock: FakeClock
) -> None:
    """A Retry-After longer than the deadline ends the call now, carrying retry_after."""
    upstream.script("/c", Reply(503, headers={"Retry-After": "120"}))
    policy = fast_policy(timeouts=TimeoutPolicy(total=30.0, attempt=10.0))
    client = make_clients(default_policy=policy).get("crm")
    with pytest.raises(UpstreamServerError) as info:
        await client.send(Request.get(upstream.url("/c")))
    assert info.value.retry_after == 120.0
    assert upstream.hits("/c") == 1
    assert clock.sleeps == []


async def test_429_drains_the_rate_limiter_for_the_advertised_time(
    upstream: ScriptedServer,
    make_clients: ClientsFactory,
    clock: FakeClock,
    events: RecordingEvents,
) -> None:
    """A 429 pauses the whole upstream's limiter for Retry-After, then the retry succeeds."""
    upstream.script("/c", Reply(429, headers={"Retry-After": "5"}), Reply(200))
    policy = fast_policy(rate_limit=RateLimitPolicy(enabled=True, rate=100, burst=10, max_wait=60))
    client = make_clients(default_policy=policy).get("crm")
    assert (await client.send(Request.get(upstream.url("/c")))).status == 200
    assert [e[2] for e in events.of("ratelimit_drain")] == [5.0]
    assert clock.now() >= 5.0


async def test_429_uses_vendor_rate_limit_headers(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """Without Retry-After, X-RateLimit-Reset (seconds) becomes the error's retry_after."""
    upstream.script("/c", Reply(429, headers={"X-RateLimit-Reset": "3"}))
    policy = fast_policy(retry=RetryPolicy(max_attempts=1))
    client = make_clients(default_policy=policy).get("crm")
    with pytest.raises(UpstreamRateLimitedError) as info:
        await client.send(Request.get(upstream.url("/c")))
    assert info.value.retry_after == 3.0
    assert info.value.status == 429


async def test_4xx_is_permanent_and_not_retried(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """A 409 raises UpstreamClientError with status and body after exactly one request."""
    upstream.script("/c", Reply(409, json={"message": "Contact already exists. Existing ID: 7"}))
    client = make_clients().get("crm")
    with pytest.raises(UpstreamClientError) as info:
        await client.send(Request.get(upstream.url("/c")))
    assert info.value.status == 409
    assert info.value.response.json()["message"].endswith("ID: 7")
    assert upstream.hits("/c") == 1


async def test_4xx_does_not_count_against_the_breaker(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """Ten 404s leave the breaker closed with an empty window: the upstream is healthy."""
    upstream.script("/c", Reply(404))
    policy = fast_policy(breaker=BreakerPolicy(sliding_window_size=4, minimum_number_of_calls=2))
    client = make_clients(default_policy=policy).get("crm")
    for _ in range(10):
        with pytest.raises(UpstreamClientError):
            await client.send(Request.get(upstream.url("/c")))
    assert client.pipeline is not None
    assert client.pipeline.breaker is not None
    assert client.pipeline.breaker.window.total == 0
    assert client.pipeline.breaker.state.name == "CLOSED"


async def test_408_is_retried(upstream: ScriptedServer, make_clients: ClientsFactory) -> None:
    """408 Request Timeout is transient, unlike other 4xx."""
    upstream.script("/c", Reply(408), Reply(200))
    client = make_clients().get("crm")
    assert (await client.send(Request.get(upstream.url("/c")))).status == 200
    assert upstream.hits("/c") == 2


async def test_post_without_idempotency_key_is_not_retried(
    upstream: ScriptedServer, make_clients: ClientsFactory, events: RecordingEvents
) -> None:
    """A POST that got a 503 is not sent again: it might have been applied."""
    upstream.script("/c", Reply(503), Reply(200))
    client = make_clients().get("crm")
    with pytest.raises(UpstreamServerError):
        await client.send(Request.post(upstream.url("/c"), json={"a": 1}))
    assert upstream.hits("/c") == 1
    assert [e[3] for e in events.of("give_up")] == ["not_idempotent"]


async def test_post_with_idempotency_key_is_retried_with_the_same_key(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """With a key, the POST is retried and both attempts carry the same Idempotency-Key."""
    upstream.script("/c", Reply(503), Reply(201, json={"id": 9}))
    client = make_clients().get("crm")
    response = await client.send(
        Request.post(upstream.url("/c"), json={"a": 1}, idempotency_key="lead-42")
    )
    assert response.status == 201
    keys = [seen.headers.get("idempotency-key") for seen in upstream.requests("/c")]
    assert keys == ["lead-42", "lead-42"]


async def test_idempotency_header_name_is_per_upstream(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """An upstream can name its idempotency header differently."""
    options = ClientOptions(idempotency_header="X-Request-Id")
    client = make_clients(default_options=options).get("crm")
    await client.send(Request.post(upstream.url("/c"), json={}, idempotency_key="k1"))
    assert upstream.requests("/c")[0].headers["x-request-id"] == "k1"


async def test_attempt_timeout_is_retried_then_surfaces(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """An upstream slower than the attempt timeout is cut twice, then AttemptTimeout."""
    # The answer takes far longer than the whole call may (its total deadline), so only
    # the attempt timeout can end the call with AttemptTimeout, on a machine of any speed
    # (an answer of 0.5 s against a bound of 0.45 s failed on a loaded one).
    upstream.script("/slow", Reply(200, delay=SLOWER_THAN_ANY_BOUND))
    policy = fast_policy(
        retry=RetryPolicy(
            max_attempts=2, backoff_base=0.001, backoff_cap=0.001,
            budget=RetryBudgetPolicy(enabled=False),
        ),
        timeouts=TimeoutPolicy(total=20.0, attempt=0.1),
    )  # fmt: skip
    client = make_clients(default_policy=policy, clock=CoalescingClock()).get("crm")
    started = time.monotonic()
    with pytest.raises(AttemptTimeout):
        await client.send(Request.get(upstream.url("/slow")))
    assert time.monotonic() - started < 20.0  # the attempts were cut, not the call
    assert upstream.hits("/slow") == 2


async def test_total_deadline_bounds_the_call(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """The total deadline cuts a slow attempt even when the attempt timeout is longer."""
    upstream.script("/slow", Reply(200, delay=SLOWER_THAN_ANY_BOUND))
    policy = fast_policy(timeouts=TimeoutPolicy(total=0.15, attempt=20.0))
    client = make_clients(default_policy=policy, clock=CoalescingClock()).get("crm")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await client.send(Request.get(upstream.url("/slow")))
    assert time.monotonic() - started < 20.0  # cut by the deadline, not the attempt timeout


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_retryable(
    make_clients: ClientsFactory, events: RecordingEvents
) -> None:
    """Nothing listening: UpstreamConnectionError after every attempt was tried."""
    client = make_clients().get("crm")
    with pytest.raises(UpstreamConnectionError):
        await client.send(Request.get(f"http://127.0.0.1:{_closed_port()}/c"))
    assert len(events.of("attempt")) == 3


async def test_json_body_user_agent_and_params_reach_the_server(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """JSON is encoded with its content type; the User-Agent names Cauce; params join the query."""
    client = make_clients().get("crm")
    await client.send(Request("PUT", upstream.url("/c?a=1"), json={"é": 1}, params={"b": "2 3"}))
    seen = upstream.requests("/c")[0]
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == '{"é":1}'.encode()
    assert seen.headers["user-agent"] == "cauce/0.1.0"
    assert seen.query == "a=1&b=2+3"


async def test_redirect_is_followed_and_credentials_stay_on_their_origin(
    start_server: StartServer, make_clients: ClientsFactory
) -> None:
    """Same-origin hops keep Authorization; a hop to another origin drops it."""
    first, second = await start_server(), await start_server()
    first.script("/a", Reply(302, headers={"Location": "/b"}))
    first.script("/b", Reply(307, headers={"Location": second.url("/c")}))
    client = make_clients().get("crm")
    response = await client.send(
        Request.get(first.url("/a"), headers={"Authorization": "Bearer s3cret"})
    )
    assert response.status == 200
    assert first.requests("/b")[0].headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in second.requests("/c")[0].headers


async def test_303_turns_a_post_into_a_bodiless_get(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """After a 303 the next hop is a GET without the original body."""
    upstream.script("/form", Reply(303, headers={"Location": "/done"}))
    client = make_clients().get("crm")
    await client.send(Request.post(upstream.url("/form"), json={"a": 1}))
    done = upstream.requests("/done")[0]
    assert (done.method, done.body) == ("GET", b"")
    assert "content-type" not in done.headers


async def test_too_many_redirects_is_a_permanent_error(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """A redirect loop stops after max_redirects hops, without retries."""
    upstream.script("/loop", Reply(302, headers={"Location": "/loop"}))
    client = make_clients(default_options=ClientOptions(max_redirects=3)).get("crm")
    with pytest.raises(UpstreamProtocolError):
        await client.send(Request.get(upstream.url("/loop")))
    assert upstream.hits("/loop") == 4


async def test_body_over_the_limit_is_refused(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """A response larger than max_response_bytes raises instead of filling memory."""
    upstream.script("/big", Reply(200, body=b"x" * 5000))
    client = make_clients(default_options=ClientOptions(max_response_bytes=4096)).get("crm")
    with pytest.raises(UpstreamProtocolError):
        await client.send(Request.get(upstream.url("/big")))
    assert upstream.hits("/big") == 1


async def test_non_http_scheme_is_refused(make_clients: ClientsFactory) -> None:
    """Only http and https leave the process."""
    client = make_clients().get("crm")
    with pytest.raises(UpstreamProtocolError):
        await client.send(Request.get("ftp://127.0.0.1/file"))
