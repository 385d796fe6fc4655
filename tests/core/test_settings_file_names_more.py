"""What `test_settings_file_names.py` left: the messages that still named a variable for a
value that may have come from `cauce.toml` now name it where it was set (the file's key,
e.g. `cauce.toml: database_url`, else the variable): the database URL (the settings'
check and the CLI's), the secret key, the CRM's token and webhook URL, the HubSpot
subscription id (at start-up and in HubSpot's refusal), and MLflow's tracking URI."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cauce.core.config import Settings, load_settings
from cauce.core.errors import ConfigError
from cauce.core.http import HttpClients, Response, UpstreamClientError
from cauce.leads.adapters import build_crm, subscription_setup
from cauce.leads.adapters.hubspot_subscriptions import SubscriptionStatuses
from cauce.leads.learned.errors import TrackingFailed
from cauce.leads.learned.tracking import mlflow_client
from cauce.leads.ports import CrmContact, CrmKey, CrmRejected, UpsertOutcome
from tests.test_cli import cauce, free_port
from tests.test_cli_audit import refused

SECRET = "0123456789abcdef0123456789abcdef"
SCHEME = "must start with sqlite+aiosqlite:// or postgresql+psycopg://"


def test_the_database_url_checks_name_the_files_key(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL written in cauce.toml was reported as CAUCE_DATABASE_URL, never set."""
    with pytest.raises(ConfigError) as refusal:
        toml('database_url = "mysql://cauce:s3cret@db/cauce"\n')
    assert str(refusal.value) == f"invalid configuration: cauce.toml: database_url {SCHEME}"
    assert "s3cret" not in str(refusal.value)
    with pytest.raises(ConfigError) as refusal:
        toml('database_url = "sqlite+aiosqlite://"\n')
    assert str(refusal.value).startswith(
        "invalid configuration: cauce.toml: database_url names no database file: "
    )
    # A keyword argument wins over the file (as for a field's error): not blamed on it.
    with pytest.raises(ConfigError) as refusal:
        load_settings(database_url="mysql://x/y")
    assert str(refusal.value) == f"invalid configuration: CAUCE_DATABASE_URL {SCHEME}"
    monkeypatch.setenv("CAUCE_DATABASE_URL", "mysql://x/y")  # a variable wins: named
    with pytest.raises(ConfigError) as refusal:
        toml('database_url = "sqlite+aiosqlite://"\n')
    assert str(refusal.value) == f"invalid configuration: CAUCE_DATABASE_URL {SCHEME}"


def test_the_secret_key_checks_name_the_files_key(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside development, a short (or the built-in) key from the file is its key; the
    value is never shown."""
    with pytest.raises(ConfigError) as refusal:
        toml('env = "production"\nsecret_key = "tiny-secret-value"\n')
    assert str(refusal.value) == (
        "invalid configuration: cauce.toml: secret_key must be at least 32 characters "
        "outside development (e.g. `openssl rand -hex 32`)"
    )
    with pytest.raises(ConfigError) as refusal:
        toml('env = "production"\nsecret_key = "dev-insecure-secret-key-change-me"\n')
    assert str(refusal.value) == (
        "invalid configuration: secret_key is the built-in development value; outside "
        "development set cauce.toml: secret_key to a random string (e.g. `openssl rand -hex 32`)"
    )
    with pytest.raises(ConfigError, match="set CAUCE_SECRET_KEY to a random string"):
        toml('env = "production"\n')  # not set anywhere: the variable to set
    monkeypatch.setenv("CAUCE_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match=r"configuration: CAUCE_SECRET_KEY must be at least"):
        toml(f'env = "production"\nsecret_key = "{SECRET}"\n')


def test_the_subscription_id_for_another_crm_names_the_files_keys(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in the file, it was `CAUCE_CRM: CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID is for
    CAUCE_CRM__PROVIDER=hubspot only`: two variables nobody had set."""
    with pytest.raises(ConfigError) as refusal:
        toml('[crm]\nprovider = "pipedrive"\nhubspot_subscription_id = 5\n')
    assert str(refusal.value) == (
        "invalid configuration: cauce.toml: crm.hubspot_subscription_id: is a HubSpot "
        "subscription type, but cauce.toml: crm.provider is 'pipedrive' (set it to "
        "'hubspot', or leave the id out) (got 5)"
    )
    monkeypatch.setenv("CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID", "6")
    monkeypatch.setenv("CAUCE_CRM__PROVIDER", "webhook")
    with pytest.raises(ConfigError) as refusal:
        toml('[crm]\nprovider = "pipedrive"\nhubspot_subscription_id = 5\n')
    assert str(refusal.value) == (
        "invalid configuration: CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID: is a HubSpot "
        "subscription type, but CAUCE_CRM__PROVIDER is 'webhook' (set it to 'hubspot', or "
        "leave the id out) (got '6')"
    )


def test_a_section_given_whole_as_json_names_only_what_its_json_holds(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CAUCE_CRM='{"provider": ...}'` gives the section's provider, not the subscription id
    the file gives beside it: that one was named `CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID`, set
    by nobody (helper-143's review). One the JSON holds is the variable's, named with its
    key inside the JSON (`CAUCE_CRM: provider`, not `CAUCE_CRM__PROVIDER`, set by nobody)."""
    monkeypatch.setenv("CAUCE_CRM", '{"provider": "pipedrive", "token": "t"}')
    with pytest.raises(ConfigError) as refusal:
        toml("[crm]\nhubspot_subscription_id = 5\n")
    assert str(refusal.value) == (
        "invalid configuration: cauce.toml: crm.hubspot_subscription_id: is a HubSpot "
        "subscription type, but CAUCE_CRM: provider is 'pipedrive' (set it to 'hubspot', or "
        "leave the id out) (got 5)"
    )
    monkeypatch.setenv(
        "CAUCE_CRM", '{"provider": "pipedrive", "token": "t", "hubspot_subscription_id": 6}'
    )
    with pytest.raises(ConfigError) as refusal:
        toml("[crm]\nhubspot_subscription_id = 5\n")
    assert str(refusal.value).startswith(
        "invalid configuration: CAUCE_CRM: hubspot_subscription_id: is a HubSpot "
    )


async def _crm_refusal(settings: Settings) -> str:
    clients = HttpClients()
    try:
        with pytest.raises(ConfigError) as refusal:
            build_crm(settings, clients)
    finally:
        await clients.close()
    return str(refusal.value)


async def test_the_crm_token_and_url_are_named_where_they_were_set(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty token, or a webhook secret that is none, from the file is its key."""
    settings = toml('[crm]\nprovider = "hubspot"\ntoken = ""\n')
    assert await _crm_refusal(settings) == (
        "cauce.toml: crm.token is required for HubSpot (a private app token)"
    )
    settings = toml('[crm]\nprovider = "pipedrive"\ntoken = ""\n')
    assert await _crm_refusal(settings) == (
        "cauce.toml: crm.token is required for Pipedrive (an API token)"
    )
    settings = toml('[crm]\nprovider = "webhook"\nbase_url = ""\n')
    assert await _crm_refusal(settings) == (
        "cauce.toml: crm.base_url (the webhook URL) is required for webhooks"
    )
    webhook = '[crm]\nprovider = "webhook"\nbase_url = "https://hooks.example/cauce"\n'
    settings = toml(f'{webhook}token = "not-a-secret"\n')
    assert (await _crm_refusal(settings)).startswith(
        "cauce.toml: crm.token must be a Standard Webhooks secret: "
    )
    monkeypatch.setenv("CAUCE_CRM__TOKEN", "still-not-a-secret")  # the variable's value
    assert (await _crm_refusal(toml(f'{webhook}token = "x"\n'))).startswith(
        "CAUCE_CRM__TOKEN must be a Standard Webhooks secret: "
    )


async def test_hubspots_refusal_names_the_subscription_id_where_it_was_set(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request HubSpot refuses (its subscription type unknown to the portal) said
    `check CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID`, set in cauce.toml."""

    async def post(path: str, payload: Mapping[str, Any], params: Any) -> Response:
        body = b'{"category": "VALIDATION_ERROR"}'
        raise UpstreamClientError("hubspot", Response(400, content=body))

    async def refusal(settings: Settings) -> str:
        setup = subscription_setup(settings.crm)
        assert setup is not None
        statuses = SubscriptionStatuses(setup, post, 100)
        email = "ana@empresa.es"
        contact = CrmContact(
            1, 1, CrmKey("email", email), {"email": email}, consent={"marketing": False}
        )
        with pytest.raises(CrmRejected) as refused:
            await statuses.apply([contact], [UpsertOutcome(1, crm_id="101")])
        return str(refused.value)

    text = '[crm]\nprovider = "hubspot"\ntoken = "t"\nhubspot_subscription_id = 999\n'
    assert (await refusal(toml(text))).endswith(
        "(HTTP 400 VALIDATION_ERROR); check cauce.toml: crm.hubspot_subscription_id"
    )
    monkeypatch.setenv("CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID", "998")
    assert (await refusal(toml(text))).endswith(
        "(HTTP 400 VALIDATION_ERROR); check CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID"
    )


def test_mlflows_tracking_uri_is_named_where_it_was_set(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracking server that does not answer, or MLflow not installed, named
    CAUCE_MLFLOW__TRACKING_URI for a URI written in cauce.toml."""
    uri = f"http://127.0.0.1:{free_port()}"
    settings = toml(f'[mlflow]\ntracking_uri = "{uri}"\n')
    with pytest.raises(TrackingFailed) as failed:
        mlflow_client(settings.mlflow)
    assert str(failed.value).startswith(
        f"MLflow at {uri} (cauce.toml: mlflow.tracking_uri) does not answer: "
    )
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError) as refusal:
        mlflow_client(settings.mlflow)
    assert str(refusal.value) == (
        "cauce.toml: mlflow.tracking_uri is set but MLflow is not installed: install the "
        "`mlflow` extra (pip install 'cauce[mlflow]') or unset it"
    )
    monkeypatch.setenv("CAUCE_MLFLOW__TRACKING_URI", uri)
    with pytest.raises(ConfigError, match=r"^CAUCE_MLFLOW__TRACKING_URI is set but MLflow"):
        mlflow_client(toml("").mlflow)


def test_the_clis_database_url_check_names_the_files_key(tmp_path: Path) -> None:
    """A port that is no number in cauce.toml's URL (the CLI's own check, after the
    settings'): `CAUCE_DATABASE_URL: its port is not a number` named a variable not set."""
    url = "postgresql+psycopg://cauce:s3cret@127.0.0.1:notaport/cauce"
    (tmp_path / "cauce.toml").write_text(f'database_url = "{url}"\n')
    line = refused(cauce(tmp_path, "db", "current"), 2)
    assert line == (
        "error: invalid configuration: cauce.toml: database_url: its port is not a number "
        "(percent-encode a password's special characters)"
    )
    assert "s3cret" not in line
