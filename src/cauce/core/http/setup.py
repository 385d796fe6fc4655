"""The one way the composition roots build outbound clients from settings.

Every upstream gets its policy from `settings.upstreams`, events go to Prometheus (the
app's registry), the current span and structlog, rate limits are shared through Redis
when `CAUCE_REDIS_URL` is set, and every per-attempt timeout rides one coalesced timer.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from cauce.core.config import Settings
from cauce.core.http.classify import is_upstream_failure
from cauce.core.http.registry import ClientOptions, HttpClients
from cauce.core.http.timers import CoalescingClock
from cauce.core.resilience.events import FanoutEvents
from cauce.core.resilience.factory import ResilienceRegistry
from cauce.core.resilience.policy import UpstreamPolicy
from cauce.core.resilience.sinks import OpenTelemetryEvents, StructlogEvents
from cauce.core.resilience.sinks_collector import CollectorEvents


def build_http_clients(
    settings: Settings,
    *,
    registry: CollectorRegistry | None,
    tracer_provider: TracerProvider | None = None,
    options: Mapping[str, ClientOptions] | None = None,
) -> tuple[HttpClients, ResilienceRegistry]:
    """The clients and the resilience registry behind them; close both on shutdown."""
    sinks = [OpenTelemetryEvents(), StructlogEvents()]
    events = FanoutEvents([CollectorEvents(registry), *sinks] if registry is not None else sinks)
    clock = CoalescingClock()
    resilience = ResilienceRegistry(
        settings.upstreams,
        default=UpstreamPolicy(),
        events=events,
        clock=clock,
        is_failure=is_upstream_failure,
        redis=settings.redis_url,
    )
    clients = HttpClients(
        resilience=resilience,
        clock=clock,
        options=options,
        tracer_provider=tracer_provider,
        metrics_registry=registry,
    )
    return clients, resilience
