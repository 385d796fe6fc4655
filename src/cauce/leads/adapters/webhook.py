"""A generic webhook target behind the `CrmClient` port, signed as Standard Webhooks 1.0 asks.

Each call POSTs one JSON message to the user's URL with the three Standard Webhooks
headers:

* ``webhook-id``: ``msg_`` + a hash of the (lead uid, version) pairs the message carries,
  so the same batch sent again (an in-call retry, a job re-run after a crash) has the same
  id and the receiver can drop the repeat; every contact in the body also has its own
  ``id`` (``<uid>.v<version>``) for receivers that dedupe per item, as batches may be
  formed differently on a re-run. With ``max_batch=1`` the message id itself is per
  (uid, version).
* ``webhook-timestamp``: Unix seconds;
* ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over ``"{id}.{timestamp}.{body}"``
  keyed with the base64-decoded part of a ``whsec_`` secret.

The body is ``{"type": "leads.upserted", "timestamp", "data": {"contacts": [{"id", "uid",
"version", "key": {"property", "value"}, "properties": {...}}]}}``. A property present
with ``null`` is cleared: an earlier message gave it a value and the lead's field is
empty now, so the receiver should empty it too. A property absent from ``properties``
says nothing: the receiver keeps whatever it has (Cauce never gave it a value).

The URL is the user's, so it goes through the SSRF guard: checked here before every
message (a refusal is `CrmRejected`), and again, pinned per connection, by the client
when the composition root builds it with ``crm_client_options`` (see the package).
Answers: 2xx accepted; 410 is the receiver saying the endpoint is gone (`CrmRejected`,
as Standard Webhooks senders disable such endpoints); other 4xx `CrmRejected`; 429
`CrmThrottled`; 5xx and network failures `CrmUnavailable`. A 3xx is refused too:
redirects are not followed for webhooks (a POST cannot be redirected faithfully, and a
redirect is a way around the guard).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

import orjson

from cauce.core.http import (
    HttpClient,
    Request,
    Response,
    UpstreamClientError,
    UpstreamRateLimitedError,
)
from cauce.core.security.ssrf import SsrfGuard, UnsafeUrlError
from cauce.leads.adapters._common import WallClock, port_error, utc_now
from cauce.leads.ports import (
    OBJECT_ID,
    CrmContact,
    CrmKey,
    CrmRecord,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
)

__all__ = ["SECRET_PREFIX", "WebhookCrm", "sign", "signing_key"]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a format prefix, not a secret
MIN_SECRET_BYTES: Final = 24
_DEFAULT_THROTTLE: Final = 5.0


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (raises ``ValueError`` on a malformed one)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("the part after 'whsec_' must be base64") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret must decode to at least {MIN_SECRET_BYTES} bytes")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _message_id(parts: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()
    return f"msg_{digest[:32]}"


class WebhookCrm:
    """`CrmClient` that hands leads to a user's HTTPS endpoint (see the module docstring).

    ``client`` should be built for user-supplied URLs (``HttpClients`` with the
    ``webhook`` options from ``crm_client_options``); ``guard`` is the same SSRF guard.
    The receiver's own ids are not known, so a contact's ``crm_id`` is its Cauce uid.
    """

    name = "webhook"

    def __init__(
        self,
        client: HttpClient,
        *,
        url: str,
        secret: str,
        guard: SsrfGuard,
        cauce_id_property: str = "cauce_id",
        clock: WallClock = utc_now,
        max_batch: int = 100,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._client = client
        self._url = url
        self._key = signing_key(secret)
        self._guard = guard
        self._cauce_id = cauce_id_property
        self._clock = clock
        self.max_batch = max_batch

    async def upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        """POST the contacts as one ``leads.upserted`` message; all accepted or none."""
        if not contacts:
            return []
        items = [self._item(contact) for contact in contacts]
        message_id = _message_id([str(item["id"]) for item in items])
        await self._send(message_id, "leads.upserted", {"contacts": items})
        return [
            UpsertOutcome(contact.lead_id, crm_id=str(item["uid"]))
            for contact, item in zip(contacts, items, strict=True)
        ]

    async def delete(self, key: CrmKey) -> bool:
        """POST a ``lead.erased`` message; False if the receiver answers 404. The
        receiver's own ids are not known (`OBJECT_ID`): nothing is sent by one."""
        if key.property == OBJECT_ID:
            return False
        message_id = _message_id([f"erase:{key.property}:{key.value}"])
        try:
            await self._send(
                message_id, "lead.erased", {"key": {"property": key.property, "value": key.value}}
            )
        except CrmRejected as exc:
            cause = exc.__cause__
            if isinstance(cause, UpstreamClientError) and cause.status == 404:
                return False
            raise
        return True

    async def read(self, keys: Sequence[CrmKey]) -> list[CrmRecord | None]:
        """A webhook cannot be read back: nothing is known about any key."""
        return [None] * len(keys)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the composition root."""

    def _item(self, contact: CrmContact) -> dict[str, Any]:
        # A property to clear (None at the port) stays in as JSON null (module docstring).
        uid = contact.properties.get(self._cauce_id)
        uid = uid if isinstance(uid, str) and uid else f"lead-{contact.lead_id}"
        return {
            "id": f"{uid}.v{contact.version}",
            "uid": uid,
            "version": contact.version,
            "key": {"property": contact.key.property, "value": contact.key.value},
            "properties": dict(contact.properties),
        }

    async def _send(self, message_id: str, kind: str, data: Mapping[str, Any]) -> Response:
        now = self._clock()
        try:
            await self._guard.check_url(self._url)
        except UnsafeUrlError as exc:
            raise CrmRejected(f"webhook URL refused: {exc}") from exc
        except OSError as exc:  # the name does not resolve, perhaps only for now
            raise CrmUnavailable("webhook host did not resolve") from exc
        timestamp = int(now.timestamp())
        body = orjson.dumps({"type": kind, "timestamp": now.isoformat(), "data": data})
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message_id, timestamp, body),
        }
        # The message id doubles as the idempotency key: receivers dedupe on it anyway.
        request = Request.post(self._url, content=body, headers=headers, idempotency_key=message_id)
        try:
            response = await self._client.send(request)
        except UpstreamRateLimitedError as exc:
            wait = exc.retry_after if exc.retry_after is not None else _DEFAULT_THROTTLE
            until = now + timedelta(seconds=wait)
            raise CrmThrottled(until, "webhook", "webhook receiver asked to slow down") from exc
        except UpstreamClientError as exc:
            if exc.status == 410:
                raise CrmRejected("webhook endpoint is gone (HTTP 410); fix the URL") from exc
            raise CrmRejected(f"webhook receiver refused the message (HTTP {exc.status})") from exc
        except Exception as exc:
            mapped = port_error("webhook", exc, now)
            if mapped is None:
                raise
            raise mapped from exc
        if not response.ok:
            raise CrmRejected(f"webhook receiver answered HTTP {response.status}; not followed")
        return response
