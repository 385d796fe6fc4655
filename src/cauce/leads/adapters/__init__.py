"""CRM adapters: one module per vendor behind the `CrmClient` port, and the factory.

* :mod:`.hubspot` - HubSpot CRM v3 contacts (batch upsert keyed by a unique property);
* :mod:`.pipedrive` - Pipedrive persons (search, then create or update);
* :mod:`.webhook` - any HTTPS endpoint, signed as Standard Webhooks 1.0 asks.

The composition root calls :func:`build_crm` with the settings and its ``HttpClients``;
each adapter uses the upstream named after its provider (``hubspot``, ``pipedrive``,
``webhook``), so its guards come from ``CAUCE_UPSTREAMS__<PROVIDER>__...``. The webhook
upstream must be built for user-supplied URLs: pass :func:`crm_client_options` to
``HttpClients(options=...)``.
"""

from __future__ import annotations

from typing import Any

from cauce.core.config import CrmSettings, Settings, setting_name
from cauce.core.errors import ConfigError
from cauce.core.http import ClientOptions, HttpClients
from cauce.core.security.ssrf import SsrfGuard
from cauce.leads.adapters._common import (
    DailyReset,
    WallClock,
    next_midnight,
    period_reset,
    utc_now,
)
from cauce.leads.adapters.hubspot import HUBSPOT_API, HubSpotCrm
from cauce.leads.adapters.hubspot_subscriptions import SubscriptionSetup
from cauce.leads.adapters.pipedrive import PIPEDRIVE_API, PipedriveCrm
from cauce.leads.adapters.webhook import WebhookCrm
from cauce.leads.ports import CrmClient

__all__ = [
    "HUBSPOT_API",
    "PIPEDRIVE_API",
    "HubSpotCrm",
    "PipedriveCrm",
    "WebhookCrm",
    "build_crm",
    "crm_client_options",
    "next_midnight",
    "period_reset",
    "subscription_setup",
]


def crm_client_options(settings: Settings) -> dict[str, ClientOptions]:
    """Client options the CRM upstreams need: the webhook one is guarded against SSRF.

    Redirects are not followed for webhooks: a POST cannot be redirected faithfully.
    """
    guard = SsrfGuard(allow=settings.crm.allow_hosts)
    return {"webhook": ClientOptions(ssrf=guard, follow_redirects=False)}


def _timezone(settings: Settings) -> str:
    # `crm.timezone` (the account's IANA zone, HubSpot's daily reset) is asked for in the
    # report; until the setting exists the reset is UTC midnight.
    value: Any = getattr(settings.crm, "timezone", None)
    return value if isinstance(value, str) and value else "UTC"


def subscription_setup(crm: CrmSettings) -> SubscriptionSetup | None:
    """The email subscription type that follows each lead's marketing consent, for
    ``CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID`` (None: unset). The consent is the lead's own,
    carried on each contact: no consent field needs mapping."""
    if crm.hubspot_subscription_id is None:
        return None
    return SubscriptionSetup(
        subscription_id=crm.hubspot_subscription_id,
        email_property=crm.field_mapping.get("email", "email"),
        setting=setting_name(("crm", "hubspot_subscription_id")),
    )


def _token() -> str:
    """`crm.token` named where it was set (`cauce.toml: crm.token`, else the variable)."""
    return setting_name(("crm", "token"))


def build_crm(
    settings: Settings,
    http_clients: HttpClients,
    *,
    clock: WallClock = utc_now,
    daily_reset: DailyReset | None = None,
) -> CrmClient | None:
    """The configured CRM (None for ``provider = "none"``); raises ConfigError if incomplete.

    ``clock`` and ``daily_reset`` are for tests and the demo (a short "day").
    """
    crm = settings.crm
    if crm.provider == "none":
        return None
    token = crm.token.get_secret_value() if crm.token is not None else ""
    client = http_clients.get(crm.provider)
    if crm.provider == "hubspot":
        if not token:
            raise ConfigError(f"{_token()} is required for HubSpot (a private app token)")
        return HubSpotCrm(
            client,
            token=token,
            base_url=crm.base_url or HUBSPOT_API,
            cauce_id_property=crm.cauce_id_property,
            clock=clock,
            timezone=_timezone(settings),
            daily_reset=daily_reset,
            read_properties=crm.field_mapping.values(),
            max_batch=crm.batch_size,
            subscription=subscription_setup(crm),
        )
    if crm.provider == "pipedrive":
        if not token:
            raise ConfigError(f"{_token()} is required for Pipedrive (an API token)")
        return PipedriveCrm(
            client,
            token=token,
            base_url=crm.base_url or PIPEDRIVE_API,
            cauce_id_property=crm.cauce_id_property,
            clock=clock,
            daily_reset=daily_reset,
            max_batch=crm.batch_size,
        )
    if not crm.base_url:
        name = setting_name(("crm", "base_url"))
        raise ConfigError(f"{name} (the webhook URL) is required for webhooks")
    try:
        return WebhookCrm(
            client,
            url=crm.base_url,
            secret=token,
            guard=SsrfGuard(allow=crm.allow_hosts),
            cauce_id_property=crm.cauce_id_property,
            clock=clock,
            max_batch=crm.batch_size,
        )
    except ValueError as exc:
        raise ConfigError(f"{_token()} must be a Standard Webhooks secret: {exc}") from exc
