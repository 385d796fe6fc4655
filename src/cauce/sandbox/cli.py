"""``cauce sandbox crm``: run the HubSpot-compatible sandbox CRM from the command line.

Mounted by ``cauce.cli`` with ``app.add_typer(sandbox_app, name="sandbox")``. Outgoing
webhooks (``--webhook-url``) are sent through a ``cauce.core.http`` transport.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cauce.sandbox.config import (
    DEFAULT_TOKEN,
    DEFAULT_WEBHOOK_SECRET,
    FaultSettings,
    SandboxCrmConfig,
)
from cauce.sandbox.runner import SandboxCrm, serve_sandbox_crm

__all__ = ["make_sandbox_app", "sandbox_app"]


def make_sandbox_app() -> typer.Typer:
    """The ``sandbox`` command group."""
    sandbox = typer.Typer(
        help="Local stand-ins for outside systems, with fault injection.", no_args_is_help=True
    )

    @sandbox.callback()
    def group() -> None:
        """Local stand-ins for outside systems, with fault injection."""

    @sandbox.command()
    def crm(
        host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port (0 picks a free one)")] = 8765,
        token: Annotated[str, typer.Option(help="Private-app token clients must send")] = (
            DEFAULT_TOKEN
        ),
        rate_limit: Annotated[int, typer.Option(help="Requests per rolling window")] = 190,
        rate_window: Annotated[float, typer.Option(help="Rolling window, seconds")] = 10.0,
        daily_limit: Annotated[int, typer.Option(help="Requests per day (0: no cap)")] = (
            1_000_000
        ),
        day_seconds: Annotated[float, typer.Option(help="Length of a 'day', seconds")] = (86_400.0),
        retry_after: Annotated[
            bool, typer.Option(help="Send Retry-After on 429 (HubSpot does not document one)")
        ] = False,
        error_rate: Annotated[float, typer.Option(help="Share answered 5xx before writing")] = 0.0,
        error_after_write_rate: Annotated[
            float, typer.Option(help="Share written, then answered 5xx")
        ] = 0.0,
        latency_ms: Annotated[float, typer.Option(help="Mean added latency (+-50%)")] = 0.0,
        outage_after: Annotated[
            float | None, typer.Option(help="Start a 503 outage after S seconds")
        ] = None,
        outage_for: Annotated[float, typer.Option(help="Outage length, seconds")] = 0.0,
        reset_rate: Annotated[float, typer.Option(help="Share closed without a response")] = 0.0,
        seed: Annotated[int | None, typer.Option(help="Seed for every random decision")] = None,
        unique_property: Annotated[
            list[str] | None, typer.Option(help="Custom property with unique values")
        ] = None,
        custom_property: Annotated[
            list[str] | None,
            typer.Option(
                "--property",
                help="Further custom property (default: cauce_score and cauce_owner, which "
                "Cauce's default field mapping sends)",
            ),
        ] = None,
        strict_properties: Annotated[
            bool, typer.Option(help="Refuse properties the portal lacks, as HubSpot does")
        ] = True,
        shuffle_results: Annotated[
            bool, typer.Option(help="Return batch results out of input order")
        ] = True,
        webhook_url: Annotated[
            str | None, typer.Option(help="Send signed change webhooks here")
        ] = None,
        webhook_secret: Annotated[str, typer.Option(help="App secret for signatures")] = (
            DEFAULT_WEBHOOK_SECRET
        ),
        webhook_duplicate_rate: Annotated[
            float, typer.Option(help="Share of webhook events sent twice")
        ] = 0.0,
    ) -> None:
        """Serve a HubSpot-compatible CRM (contacts API v3) with limits and faults."""
        try:
            config = SandboxCrmConfig(
                host=host,
                port=port,
                token=token,
                rate_limit=rate_limit,
                rate_window_seconds=rate_window,
                daily_limit=daily_limit,
                day_seconds=day_seconds,
                send_retry_after=retry_after,
                unique_properties=tuple(unique_property or ("cauce_id",)),
                extra_properties=tuple(custom_property)
                if custom_property
                else SandboxCrmConfig.extra_properties,
                strict_properties=strict_properties,
                shuffle_results=shuffle_results,
                seed=seed,
                faults=FaultSettings(
                    error_rate=error_rate,
                    error_after_write_rate=error_after_write_rate,
                    reset_rate=reset_rate,
                    latency_ms=latency_ms,
                    outage_after=outage_after,
                    outage_for=outage_for,
                ),
                webhook_url=webhook_url,
                webhook_secret=webhook_secret,
                webhook_duplicate_rate=webhook_duplicate_rate,
            )
            config.validate()
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        asyncio.run(serve_sandbox_crm(config, on_ready=_ready))

    return sandbox


def _ready(crm: SandboxCrm) -> None:
    # One parseable line on stdout, so a parent process can find a port picked with --port 0.
    typer.echo(f"sandbox crm ready url={crm.url} token={crm.token}")


sandbox_app = make_sandbox_app()
