"""Outgoing webhooks as HubSpot sends them: batched events, signed, retried.

Each POST carries a JSON array of up to ``batch_size`` events (``eventId``,
``subscriptionId``, ``portalId``, ``appId``, ``occurredAt`` in ms, ``subscriptionType``,
``attemptNumber``, ``objectId``, ``changeSource``, and ``propertyName`` /
``propertyValue`` for property changes) and these headers:

* ``X-HubSpot-Signature-v3``: base64 of HMAC-SHA256, keyed with the app secret, over
  ``method + uri + body + timestamp`` (UTF-8), where ``uri`` is the full target URL;
* ``X-HubSpot-Request-Timestamp``: milliseconds since the epoch (receivers refuse
  timestamps older than 5 minutes);
* ``X-HubSpot-Signature`` with ``X-HubSpot-Signature-Version: v1``: hex SHA-256 of
  ``secret + body``, the legacy signature HubSpot still sends alongside.

A batch is retried on a connection error, a timeout, a 429 or a 5xx, with exponential
backoff, up to ``max_attempts`` (HubSpot: 10 times over 24 hours; shortened here), and
``attemptNumber`` counts the tries. Events may be sent twice on purpose
(``duplicate_rate``) because HubSpot does: receivers must dedupe on ``eventId``.

The HTTP client is not built here: sending goes through a :data:`WebhookTransport`
callable that the caller wires (outbound HTTP belongs to ``cauce.core.http``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cauce.sandbox.store import ChangeEvent

__all__ = ["WebhookDispatcher", "WebhookTransport", "sign_v3", "verify_v3"]

log = logging.getLogger(__name__)

WebhookTransport = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]
"""``await transport(url, body, headers)`` POSTs and returns the status code, or raises."""

MAX_AGE_MS = 5 * 60 * 1000
_SUBSCRIPTION_IDS = {
    "contact.creation": 1,
    "contact.propertyChange": 2,
    "contact.deletion": 3,
    "contact.privacyDeletion": 4,
}
_CHANGE_FLAGS = {"contact.creation": "NEW", "contact.deletion": "DELETED"}


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: str) -> str:
    """HubSpot's v3 signature of a request."""
    source = method.encode() + uri.encode() + body + timestamp_ms.encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_v3(
    secret: str,
    *,
    method: str,
    uri: str,
    body: bytes,
    timestamp_ms: str,
    signature: str,
    now_ms: int,
    max_age_ms: int = MAX_AGE_MS,
) -> bool:
    """Check a v3 signature and the timestamp's age, as HubSpot tells receivers to."""
    try:
        age = now_ms - int(timestamp_ms)
    except ValueError:
        return False
    if age > max_age_ms:
        return False
    expected = sign_v3(secret, method, uri, body, timestamp_ms)
    return hmac.compare_digest(expected, signature)


@dataclass
class WebhookStats:
    """Counters for the inspection endpoint."""

    events_published: int = 0
    events_delivered: int = 0
    events_duplicated: int = 0
    requests_sent: int = 0
    requests_failed: int = 0
    batches_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-ready counters."""
        return dict(self.__dict__)


class WebhookDispatcher:
    """Queues change events and delivers them in signed batches from a background task."""

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        transport: WebhookTransport,
        portal_id: int,
        app_id: int,
        wall_clock: Callable[[], float],
        properties: tuple[str, ...],
        batch_size: int = 100,
        flush_seconds: float = 0.05,
        max_attempts: int = 5,
        retry_base_seconds: float = 0.2,
        timeout_seconds: float = 5.0,
        duplicate: Callable[[], bool] = lambda: False,
    ) -> None:
        self.url = url
        self._secret = secret
        self._transport = transport
        self._portal = portal_id
        self._app = app_id
        self._wall = wall_clock
        self._properties = set(properties)
        self._batch_size = batch_size
        self._flush = flush_seconds
        self._max_attempts = max_attempts
        self._retry_base = retry_base_seconds
        self._timeout = timeout_seconds
        self._duplicate = duplicate
        self._event_ids = itertools.count(1)
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._repeated: set[int] = set()
        self.stats = WebhookStats()

    def publish(self, events: list[ChangeEvent]) -> None:
        """Queue the events a committed write produced (called synchronously by the store)."""
        for event in events:
            if (
                event.subscription_type == "contact.propertyChange"
                and event.property_name not in self._properties
            ):
                continue
            payload: dict[str, Any] = {
                "eventId": next(self._event_ids),
                "subscriptionId": _SUBSCRIPTION_IDS[event.subscription_type],
                "portalId": self._portal,
                "appId": self._app,
                "occurredAt": event.occurred_at_ms,
                "subscriptionType": event.subscription_type,
                "attemptNumber": 0,
                "objectId": event.object_id,
                "changeSource": event.change_source,
            }
            if event.property_name is not None:
                payload["propertyName"] = event.property_name
                payload["propertyValue"] = event.property_value
            if flag := _CHANGE_FLAGS.get(event.subscription_type):
                payload["changeFlag"] = flag
            self._queue.append(payload)
            self.stats.events_published += 1
        self._wake.set()

    @property
    def pending(self) -> int:
        """Events queued plus batches being delivered."""
        return len(self._queue) + len(self._inflight)

    def start(self) -> None:
        """Start the background sender on the running loop."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, *, drain_seconds: float = 2.0) -> None:
        """Try to deliver what is queued for up to ``drain_seconds``, then cancel the rest."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                while self._queue or self._inflight:
                    self._wake.set()
                    await asyncio.sleep(0.01)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Let a burst of writes gather into one request, as HubSpot batches events.
            await asyncio.sleep(self._flush)
            while self._queue:
                size = min(self._batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                task = asyncio.get_running_loop().create_task(self._deliver(batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(self._max_attempts):
            if attempt:
                await asyncio.sleep(self._retry_base * 2 ** (attempt - 1))
            for event in batch:
                event["attemptNumber"] = attempt
            body = orjson.dumps(batch)
            stamp = str(int(self._wall() * 1000))
            headers = {
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": sign_v3(self._secret, "POST", self.url, body, stamp),
                "X-HubSpot-Request-Timestamp": stamp,
                "X-HubSpot-Signature-Version": "v1",
                "X-HubSpot-Signature": hashlib.sha256(self._secret.encode() + body).hexdigest(),
            }
            self.stats.requests_sent += 1
            try:
                async with asyncio.timeout(self._timeout):
                    status = await self._transport(self.url, body, headers)
            except Exception as exc:  # noqa: BLE001 - any transport failure is a retry
                log.debug("webhook delivery failed: %r", exc)
                status = 0
            if 200 <= status < 300:
                self.stats.events_delivered += len(batch)
                self._maybe_duplicate(batch)
                return
            self.stats.requests_failed += 1
            if 400 <= status < 500 and status != 429:
                break  # HubSpot does not retry other client errors
        self.stats.batches_dropped += 1

    def _maybe_duplicate(self, batch: list[dict[str, Any]]) -> None:
        again = []
        for event in batch:
            # Each event is repeated at most once, so a rate of 1 still terminates.
            if event["eventId"] not in self._repeated and self._duplicate():
                self._repeated.add(event["eventId"])
                again.append(dict(event))
        if again:
            self.stats.events_duplicated += len(again)
            self._queue.extend(again)
            self._wake.set()
