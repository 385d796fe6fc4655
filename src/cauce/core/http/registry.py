"""``HttpClients``: one guarded client per upstream, built by the composition root.

``create_app`` / the worker build one :class:`HttpClients` from the settings (each
upstream's :class:`~cauce.core.resilience.UpstreamPolicy` comes from
``settings.upstreams``; unnamed upstreams get the default policy), hand
``clients.get("hubspot")`` to the adapters, register :meth:`HttpClients.check` as a
health check and ``await clients.close()`` on shutdown. Clients are built on first
use, inside the running loop, and kept for the life of the process.

Hooks, all optional: ``transport_factory`` replaces the aiohttp transport (tests),
``wrap_transport`` wraps whatever transport was built (fault injection, recording),
and :class:`ClientOptions.faults` turns on fault injection for one upstream (chaos).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

import cauce
from cauce.core.config import Settings
from cauce.core.http.aiohttp_transport import AiohttpTransport
from cauce.core.http.classify import is_upstream_failure
from cauce.core.http.client import UpstreamClient
from cauce.core.http.errors import ClientClosedError
from cauce.core.http.faults import FaultInjectingTransport, FaultPolicy
from cauce.core.http.metrics import HttpClientMetrics
from cauce.core.http.timers import CoalescingClock
from cauce.core.http.types import Transport
from cauce.core.resilience.clock import Clock, RandomSource
from cauce.core.resilience.events import EventSink
from cauce.core.resilience.factory import ResilienceRegistry
from cauce.core.resilience.policy import UpstreamPolicy
from cauce.core.security.ssrf import SsrfGuard

__all__ = ["USER_AGENT", "ClientOptions", "HttpClients", "TransportFactory", "TransportHook"]

USER_AGENT = f"cauce/{cauce.__version__}"

#: Builds the bottom transport of an upstream (default: :class:`AiohttpTransport`).
TransportFactory = Callable[[str, "ClientOptions"], Transport]
#: Wraps an upstream's transport (fault injection, recording in tests).
TransportHook = Callable[[str, Transport], Transport]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Connection-level settings of one upstream's client (the guards are its policy).

    ``ssrf`` makes it a client for user-supplied URLs (webhook targets): every hop is
    checked and DNS answers are vetted and pinned. ``ssl_context`` replaces the system
    trust store (a sandbox's private CA); verification itself cannot be turned off.
    ``faults`` injects faults under the guards (opt-in chaos).
    """

    pool_limit: int = 100
    pool_limit_per_host: int = 0
    keepalive_timeout: float = 15.0
    dns_cache_ttl: int = 10
    max_response_bytes: int = 16 * 1024 * 1024
    follow_redirects: bool = True
    max_redirects: int = 5
    idempotency_header: str = "Idempotency-Key"
    default_headers: Mapping[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    ssrf: SsrfGuard | None = None
    faults: FaultPolicy | None = None


class HttpClients:
    """One :class:`UpstreamClient` per upstream name (see the module docstring).

    Pass ``resilience`` to share a :class:`ResilienceRegistry` built elsewhere (for
    instance with a Redis-shared rate limiter); build it with
    ``is_failure=is_upstream_failure`` so a 4xx does not count against the breaker.
    Otherwise one is built from ``policies`` with the given events, clock and rng.
    """

    def __init__(
        self,
        *,
        policies: Mapping[str, UpstreamPolicy] | None = None,
        default_policy: UpstreamPolicy | None = None,
        resilience: ResilienceRegistry | None = None,
        options: Mapping[str, ClientOptions] | None = None,
        default_options: ClientOptions | None = None,
        events: EventSink | None = None,
        clock: Clock | None = None,
        rng: RandomSource | None = None,
        tracer_provider: TracerProvider | None = None,
        metrics_registry: CollectorRegistry | None = None,
        transport_factory: TransportFactory | None = None,
        wrap_transport: TransportHook | None = None,
        wall_clock: Callable[[], float] = time.time,
        user_agent: str = USER_AGENT,
    ) -> None:
        # Coalesced timeouts: one loop timer for all attempts instead of one each (timers.py).
        self._clock = clock if clock is not None else CoalescingClock()
        # Jitter and fault draws need no cryptographic randomness.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        self._resilience = (
            resilience
            if resilience is not None
            else ResilienceRegistry(
                policies or {},
                clock=self._clock,
                rng=self._rng,
                events=events,
                default=default_policy if default_policy is not None else UpstreamPolicy(),
                is_failure=is_upstream_failure,
            )
        )
        self._options = dict(options or {})
        self._default_options = default_options if default_options is not None else ClientOptions()
        self._tracer = (
            tracer_provider.get_tracer("cauce.http", cauce.__version__)
            if tracer_provider is not None
            else None
        )
        self._metrics = (
            HttpClientMetrics(metrics_registry) if metrics_registry is not None else None
        )
        self._transport_factory = transport_factory
        self._wrap = wrap_transport
        self._wall_clock = wall_clock
        self._user_agent = user_agent
        self._clients: dict[str, UpstreamClient] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> HttpClients:
        """Build the clients for ``settings.upstreams``; ``kwargs`` as for the constructor."""
        return cls(policies=settings.upstreams, **kwargs)

    @property
    def resilience(self) -> ResilienceRegistry:
        """The pipelines behind the clients."""
        return self._resilience

    def get(self, upstream: str) -> UpstreamClient:
        """Return the client of ``upstream``, building it on first use."""
        client = self._clients.get(upstream)
        if client is not None:
            return client
        if self._closed:
            raise ClientClosedError(f"HTTP clients are closed; cannot build {upstream!r}")
        options = self._options.get(upstream, self._default_options)
        transport = self._transport(upstream, options)
        client = UpstreamClient(
            upstream,
            transport,
            pipeline=self._resilience.get(upstream),
            guard=options.ssrf,
            tracer=self._tracer,
            record_status=self._metrics.recorder(upstream) if self._metrics is not None else None,
            default_headers=options.default_headers,
            follow_redirects=options.follow_redirects,
            max_redirects=options.max_redirects,
            idempotency_header=options.idempotency_header,
            wall_clock=self._wall_clock,
        )
        self._clients[upstream] = client
        return client

    def _transport(self, upstream: str, options: ClientOptions) -> Transport:
        transport: Transport
        if self._transport_factory is not None:
            transport = self._transport_factory(upstream, options)
        else:
            transport = AiohttpTransport(
                upstream,
                user_agent=self._user_agent,
                pool_limit=options.pool_limit,
                pool_limit_per_host=options.pool_limit_per_host,
                keepalive_timeout=options.keepalive_timeout,
                dns_cache_ttl=options.dns_cache_ttl,
                max_response_bytes=options.max_response_bytes,
                ssl_context=options.ssl_context,
                guard=options.ssrf,
            )
        faults = options.faults or self._resilience.policy(upstream).chaos
        if faults.active:
            transport = FaultInjectingTransport(transport, faults, rng=self._rng, clock=self._clock)
        if self._wrap is not None:
            transport = self._wrap(upstream, transport)
        return transport

    def __iter__(self) -> Iterator[UpstreamClient]:
        """Iterate over the clients built so far."""
        return iter(list(self._clients.values()))

    def circuit_states(self) -> dict[str, str]:
        """Each built client's breaker state (``closed``/``open``/``half_open``/``none``)."""
        states: dict[str, str] = {}
        for name, client in self._clients.items():
            breaker = client.pipeline.breaker if client.pipeline is not None else None
            states[name] = breaker.state.name.lower() if breaker is not None else "none"
        return states

    async def check(self) -> None:
        """Health check: raises :class:`ClientClosedError` once closed.

        An upstream being down is deliberately *not* unhealthy for Cauce: its breaker
        handles that, and Cauce keeps accepting work (see :meth:`circuit_states`).
        """
        if self._closed:
            raise ClientClosedError("HTTP clients are closed")

    async def close(self) -> None:
        """Close every client's connection pool; later ``get`` calls fail."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.transport.close() for client in clients))

    async def __aenter__(self) -> HttpClients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
