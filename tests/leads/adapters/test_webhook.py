"""The generic webhook target: Standard Webhooks signatures, SSRF guard, answers to port errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from cauce.core.config import Settings
from cauce.core.http import Request
from cauce.core.security.ssrf import UnsafeUrlError
from cauce.leads.adapters import WebhookCrm, build_crm, crm_client_options
from cauce.leads.adapters.webhook import sign, signing_key
from cauce.leads.ports import (
    OBJECT_ID,
    CrmContact,
    CrmKey,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
)
from tests.conftest import make_settings
from tests.leads.adapters.conftest import MakeClients, WallClock, contact

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
TOLERANCE_SECONDS = 300


@dataclass
class Receiver:
    """A webhook endpoint that verifies signatures as a Standard Webhooks consumer does."""

    secret: str
    clock: WallClock
    url: str = ""
    statuses: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: list[str] = field(default_factory=list)
    bad_signatures: int = 0

    def verify(self, request_headers: Any, body: bytes, now: int) -> bool:
        """Check the signature and the timestamp window, as the spec asks of receivers."""
        message_id = request_headers["webhook-id"]
        timestamp = int(request_headers["webhook-timestamp"])
        if abs(now - timestamp) > TOLERANCE_SECONDS:
            return False
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        expected = base64.b64encode(
            hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        offered = [s.split(",", 1)[1] for s in request_headers["webhook-signature"].split(" ")]
        return any(hmac.compare_digest(expected, s) for s in offered)

    async def handle(self, request: web.Request) -> web.Response:
        """Verify, dedupe by webhook-id, then answer the scripted status."""
        body = await request.read()
        if not self.verify(request.headers, body, int(self.clock().timestamp())):
            self.bad_signatures += 1
            return web.Response(status=401)
        status = self.statuses.pop(0) if self.statuses else 204
        if 200 <= status < 300:
            self.seen_ids.append(request.headers["webhook-id"])
            if self.seen_ids.count(request.headers["webhook-id"]) == 1:
                self.messages.append(orjson.loads(body))
        return web.Response(status=status, headers=self.headers)


@pytest.fixture
async def receiver(wall: WallClock) -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1, on the test's wall clock."""
    rec = Receiver(SECRET, wall)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(rec.url)

    app = web.Application()
    app.router.add_post("/cauce", rec.handle)
    app.router.add_post("/moved", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/cauce"
    yield rec
    await runner.cleanup()


def webhook_settings(tmp_path: Path, url: str, **crm: Any) -> Settings:
    """Settings for the webhook provider (allowlisting 127.0.0.1 unless told otherwise)."""
    crm.setdefault("allow_hosts", ("127.0.0.1/32",))
    return make_settings(
        tmp_path, crm={"provider": "webhook", "base_url": url, "token": SECRET, **crm}
    )


async def make_webhook(
    settings: Settings, make_clients: MakeClients, wall: WallClock
) -> WebhookCrm:
    """The adapter built by the factory on clients built as the composition root should."""
    clients = make_clients(options=crm_client_options(settings))
    crm = build_crm(settings, clients, clock=wall)
    assert isinstance(crm, WebhookCrm)
    return crm


async def test_a_batch_arrives_signed_and_a_resend_has_the_same_id(
    receiver: Receiver, tmp_path: Path, make_clients: MakeClients, wall: WallClock
) -> None:
    """The receiver verifies the signature; the same batch again carries the same webhook-id."""
    hook = await make_webhook(webhook_settings(tmp_path, receiver.url), make_clients, wall)
    batch = [contact(1, "a@empresa.es"), contact(2)]
    outcomes = await hook.upsert(batch)
    assert [o.crm_id for o in outcomes] == [c.properties["cauce_id"] for c in batch]
    wall.advance(60)
    await hook.upsert(batch)
    assert receiver.bad_signatures == 0
    assert len(receiver.seen_ids) == 2
    assert receiver.seen_ids[0] == receiver.seen_ids[1]
    (message,) = receiver.messages  # the repeat was recognised and dropped
    assert message["type"] == "leads.upserted"
    items = message["data"]["contacts"]
    assert [i["id"] for i in items] == [f"{c.properties['cauce_id']}.v1" for c in batch]
    assert items[0]["key"] == {"property": "email", "value": "a@empresa.es"}


async def test_a_new_version_is_a_new_message(
    receiver: Receiver, tmp_path: Path, make_clients: MakeClients, wall: WallClock
) -> None:
    """An edited lead (a higher version) is not mistaken for a repeat."""
    hook = await make_webhook(webhook_settings(tmp_path, receiver.url), make_clients, wall)
    first = contact(1, "a@empresa.es")
    await hook.upsert([first])
    await hook.upsert([CrmContact(1, 2, first.key, first.properties)])
    assert len(set(receiver.seen_ids)) == 2


async def test_loopback_is_refused_without_an_allowlist(
    receiver: Receiver, tmp_path: Path, make_clients: MakeClients, wall: WallClock
) -> None:
    """The SSRF guard refuses 127.0.0.1 unless the operator allowlisted it."""
    settings = webhook_settings(tmp_path, receiver.url, allow_hosts=())
    hook = await make_webhook(settings, make_clients, wall)
    with pytest.raises(CrmRejected, match="loopback"):
        await hook.upsert([contact(1, "a@empresa.es")])
    assert receiver.seen_ids == []
    assert receiver.bad_signatures == 0


async def test_the_client_itself_refuses_private_targets(
    receiver: Receiver, tmp_path: Path, make_clients: MakeClients
) -> None:
    """The webhook upstream's client is guarded too, whatever calls it."""
    clients = make_clients(
        options=crm_client_options(webhook_settings(tmp_path, receiver.url, allow_hosts=()))
    )
    with pytest.raises(UnsafeUrlError):
        await clients.get("webhook").send(Request.post(receiver.url, content=b"{}"))


@pytest.mark.parametrize(
    ("status", "error"),
    [(410, CrmRejected), (400, CrmRejected), (503, CrmUnavailable), (302, CrmRejected)],
)
async def test_answers_become_port_errors(
    receiver: Receiver,
    tmp_path: Path,
    make_clients: MakeClients,
    wall: WallClock,
    status: int,
    error: type[Exception],
) -> None:
    """410 means gone, other 4xx refused, 5xx unavailable, a redirect is not followed."""
    receiver.statuses = [status] * 3
    url = receiver.url.replace("/cauce", "/moved") if status == 302 else receiver.url
    hook = await make_webhook(webhook_settings(tmp_path, url), make_clients, wall)
    with pytest.raises(error):
        await hook.upsert([contact(1, "a@empresa.es")])


async def test_too_many_requests_throttles_until_retry_after(
    receiver: Receiver, tmp_path: Path, make_clients: MakeClients, wall: WallClock
) -> None:
    """A 429 with Retry-After: 30 pauses the delivery for 30 seconds."""
    receiver.statuses = [429] * 3
    receiver.headers = {"Retry-After": "30"}
    hook = await make_webhook(webhook_settings(tmp_path, receiver.url), make_clients, wall)
    with pytest.raises(CrmThrottled) as caught:
        await hook.upsert([contact(1, "a@empresa.es")])
    assert caught.value.until == wall.now + timedelta(seconds=30)


async def test_erasure_is_a_signed_message(
    receiver: Receiver, tmp_path: Path, make_clients: MakeClients, wall: WallClock
) -> None:
    """delete() posts lead.erased; a 404 from the receiver means it never had the lead."""
    hook = await make_webhook(webhook_settings(tmp_path, receiver.url), make_clients, wall)
    key = CrmKey("cauce_id", "00000000-0000-4000-8000-000000000001")
    assert await hook.delete(key) is True
    assert receiver.messages[-1]["data"]["key"]["value"] == key.value
    receiver.statuses = [404]
    assert await hook.delete(CrmKey("cauce_id", "otro")) is False
    assert await hook.read([key]) == [None]
    # The receiver's own ids are not known: nothing is sent by one.
    sent = len(receiver.messages)
    assert await hook.delete(CrmKey(OBJECT_ID, key.value)) is False
    assert len(receiver.messages) == sent


def test_signature_matches_the_standard_webhooks_example() -> None:
    """The signing scheme reproduces the reference example of the Standard Webhooks spec."""
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    "secret",
    ["no-prefix", "whsec_***not base64***", "whsec_" + base64.b64encode(os.urandom(8)).decode()],
)
def test_malformed_secrets_are_refused(secret: str) -> None:
    """A secret without the prefix, not base64, or too short is a configuration error."""
    with pytest.raises(ValueError, match=r"whsec_|base64|bytes"):
        signing_key(secret)
