"""`build_crm`: the provider setting picks the adapter and its upstream; gaps fail at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cauce.core.errors import ConfigError
from cauce.leads.adapters import HubSpotCrm, PipedriveCrm, build_crm, crm_client_options
from tests.conftest import make_settings
from tests.leads.adapters.conftest import MakeClients


def crm(tmp_path: Path, **values: Any) -> Any:
    """Settings with the given crm section."""
    return make_settings(tmp_path, crm=values)


def test_no_provider_means_no_crm(tmp_path: Path, make_clients: MakeClients) -> None:
    """provider = none builds nothing and opens no client."""
    clients = make_clients()
    assert build_crm(crm(tmp_path), clients) is None
    assert clients.circuit_states() == {}


@pytest.mark.parametrize(
    ("provider", "kind"), [("hubspot", HubSpotCrm), ("pipedrive", PipedriveCrm)]
)
def test_each_vendor_uses_the_upstream_named_after_it(
    tmp_path: Path, make_clients: MakeClients, provider: str, kind: type
) -> None:
    """The adapter's client is the provider's upstream, so CAUCE_UPSTREAMS__<NAME> applies."""
    clients = make_clients()
    adapter = build_crm(crm(tmp_path, provider=provider, token="t", batch_size=40), clients)
    assert adapter is not None
    assert isinstance(adapter, kind)
    assert adapter.max_batch == 40
    assert list(clients.circuit_states()) == [provider]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"provider": "hubspot"}, "TOKEN"),
        ({"provider": "pipedrive"}, "TOKEN"),
        ({"provider": "webhook", "token": "whsec_x"}, "BASE_URL"),
        (
            {"provider": "webhook", "base_url": "https://hooks.example.com/x", "token": "s"},
            "secret",
        ),
    ],
)
def test_incomplete_settings_fail_at_start(
    tmp_path: Path, make_clients: MakeClients, values: dict[str, Any], message: str
) -> None:
    """A missing token, URL or malformed secret is a configuration error with its name."""
    with pytest.raises(ConfigError, match=message):
        build_crm(crm(tmp_path, **values), make_clients())


def test_the_webhook_client_is_guarded_and_does_not_follow_redirects(tmp_path: Path) -> None:
    """The webhook upstream's options carry the SSRF guard with the configured allowlist."""
    options = crm_client_options(crm(tmp_path, allow_hosts=("10.8.0.0/16",)))
    webhook = options["webhook"]
    assert webhook.ssrf is not None
    assert webhook.follow_redirects is False
    webhook.ssrf.check_target("https", "10.8.1.2")
