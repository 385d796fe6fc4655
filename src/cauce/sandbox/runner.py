"""Starting and stopping a sandbox CRM: in the caller's event loop, in a thread, or forever.

* ``await start_sandbox_crm(config)`` serves on the running loop (tests, the demo);
* ``start_sandbox_crm_in_thread(config)`` serves from its own loop in a daemon thread, so
  a benchmark's client does not share a loop with the server;
* ``serve_sandbox_crm(config)`` blocks until SIGINT/SIGTERM (the ``cauce sandbox crm``
  command). For a separate process, run that command.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cauce.sandbox.config import SandboxCrmConfig
from cauce.sandbox.server import SandboxState, build_app
from cauce.sandbox.webhooks import WebhookDispatcher, WebhookTransport

__all__ = [
    "SandboxCrm",
    "ThreadedSandboxCrm",
    "serve_sandbox_crm",
    "start_sandbox_crm",
    "start_sandbox_crm_in_thread",
]


def _dispatcher_factory(
    config: SandboxCrmConfig, transport: WebhookTransport | None
) -> Callable[[SandboxState], WebhookDispatcher | None]:
    def make(state: SandboxState) -> WebhookDispatcher | None:
        if config.webhook_url is None:
            return None
        if transport is None:
            raise ValueError("webhook_url is set but no webhook_transport was given")
        return WebhookDispatcher(
            url=config.webhook_url,
            secret=config.webhook_secret,
            transport=transport,
            portal_id=config.portal_id,
            app_id=config.app_id,
            wall_clock=config.wall_clock,
            properties=config.webhook_properties,
            batch_size=config.webhook_batch_size,
            flush_seconds=config.webhook_flush_seconds,
            max_attempts=config.webhook_max_attempts,
            retry_base_seconds=config.webhook_retry_base_seconds,
            timeout_seconds=config.webhook_timeout_seconds,
            duplicate=lambda: state.faults.chance(config.webhook_duplicate_rate),
        )

    return make


@dataclass
class SandboxCrm:
    """A running sandbox: its base URL, its state (store, stats, faults) and ``stop()``."""

    url: str
    state: SandboxState
    _resources: contextlib.AsyncExitStack

    @property
    def token(self) -> str:
        """The bearer token clients must send."""
        return self.state.config.token

    async def stop(self) -> None:
        """Deliver queued webhooks (briefly), close connections and free the port."""
        if self.state.webhooks is not None:
            await self.state.webhooks.stop()
        await self._resources.aclose()  # the server, then the webhook transport

    async def __aenter__(self) -> SandboxCrm:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_sandbox_crm(
    config: SandboxCrmConfig | None = None, *, webhook_transport: WebhookTransport | None = None
) -> SandboxCrm:
    """Serve a sandbox CRM on the running loop and return once it accepts connections.

    When ``config.webhook_url`` is set, webhooks go out through ``webhook_transport`` if
    given (tests inject one), else through a ``cauce.core.http`` transport the sandbox
    opens and closes itself.
    """
    config = config or SandboxCrmConfig()
    resources = contextlib.AsyncExitStack()
    if config.webhook_url is not None and webhook_transport is None:
        # Imported here: core.http pulls in the resilience stack, which a sandbox without
        # webhooks (most tests, benchmarks) need not load.
        from cauce.sandbox.webhook_http import core_http_webhook_transport

        webhook_transport = await resources.enter_async_context(
            core_http_webhook_transport(timeout_seconds=config.webhook_timeout_seconds)
        )
    try:
        state = SandboxState(config, _dispatcher_factory(config, webhook_transport))
        runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False)
        await runner.setup()
        resources.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except BaseException:
        await resources.aclose()
        raise
    host, port = runner.addresses[0][:2]
    if state.webhooks is not None:
        state.webhooks.start()
    url = f"http://{_url_host(host)}:{port}"
    return SandboxCrm(url=url, state=state, _resources=resources)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ThreadedSandboxCrm:
    """A sandbox served from its own event loop in a daemon thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, crm: SandboxCrm):
        self._loop = loop
        self._thread = thread
        self.crm = crm
        self.url = crm.url

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the sandbox's loop (its state is not thread-safe)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """The inspection report, read safely from another thread."""
        return self.call(self.crm.state.snapshot)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop the server and its loop, and join the thread."""
        future = asyncio.run_coroutine_threadsafe(self.crm.stop(), self._loop)
        future.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> ThreadedSandboxCrm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sandbox_crm_in_thread(
    config: SandboxCrmConfig | None = None, *, webhook_transport: WebhookTransport | None = None
) -> ThreadedSandboxCrm:
    """Start a sandbox in a daemon thread with its own loop; returns once it serves."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[SandboxCrm] = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                started.set_result(
                    await start_sandbox_crm(config, webhook_transport=webhook_transport)
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                started.set_exception(exc)

        boot_task = loop.create_task(boot())
        loop.run_forever()
        del boot_task
        loop.close()

    thread = threading.Thread(target=main, name="sandbox-crm", daemon=True)
    thread.start()
    try:
        crm = started.result(timeout=30)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        raise
    return ThreadedSandboxCrm(loop, thread, crm)


async def serve_sandbox_crm(
    config: SandboxCrmConfig,
    *,
    webhook_transport: WebhookTransport | None = None,
    on_ready: Any = None,
) -> None:
    """Serve until SIGINT or SIGTERM; ``on_ready(crm)`` is called once it listens."""
    crm = await start_sandbox_crm(config, webhook_transport=webhook_transport)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(crm)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await crm.stop()
