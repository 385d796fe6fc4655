"""Opt-in chaos per upstream from settings: faults injected under the guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from cauce.core.http import Request, UpstreamServerError
from cauce.core.http.setup import build_http_clients
from tests.conftest import make_settings
from tests.core.http.upstream import ScriptedServer


async def test_chaos_settings_inject_faults_for_that_upstream_only(
    upstream: ScriptedServer, tmp_path: Path
) -> None:
    """`CAUCE_UPSTREAMS__FLAKY__CHAOS__ERROR_RATE=1` fails every call to `flaky` locally."""
    settings = make_settings(
        tmp_path,
        upstreams={
            "flaky": {"chaos": {"error_rate": 1.0}, "retry": {"max_attempts": 1}},
            "steady": {"retry": {"max_attempts": 1}},
        },
    )
    clients, resilience = build_http_clients(settings, registry=None)
    try:
        with pytest.raises(UpstreamServerError):
            await clients.get("flaky").send(Request.get(upstream.url("/ping")))
        ok = await clients.get("steady").send(Request.get(upstream.url("/ping")))
        assert ok.status == 200
        assert upstream.hits("/ping") == 1  # the injected failure never reached the server
    finally:
        await clients.close()
        await resilience.aclose()
