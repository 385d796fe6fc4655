"""A Pipedrive create refused for certain (401, 403, another 4xx, a 429, a TLS failure)
costs its lead no wait.

Delivery marks a lead's create in flight before the POST leaves (`_create_leaves`); a
mark left there is taken by the next delivery as a create in doubt, and the lead is
neither searched for nor created for `CREATE_SETTLE_SECONDS`. A 401/403 (or a TLS
failure) on the POST was raised as `CrmRejected`, and delivery kept every flight of a
rejected call (a rejection used to drop the outcomes of creates made before it), so a
lead whose create Pipedrive refused outright waited a minute for a person that cannot
exist. Now the adapter never drops a create it made (a rejection after work done returns
that work, the rest "not sent"), so whatever it raises none of the call's creates was
applied, and delivery ends their flights. A true doubt (a 5xx, a cut connection, a
timeout) still waits: `test_pipedrive_create_in_doubt.py`.

A crash between the refusal and the write-back that ends the flight still costs the
lead one wait (the mark was committed before the POST): accepted.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cauce.core.config import CrmSettings
from cauce.core.db import Database
from cauce.core.http import (
    Headers,
    HttpClients,
    Request,
    Response,
    Transport,
    UpstreamTlsError,
)
from cauce.leads.adapters import PipedriveCrm
from cauce.leads.delivery import DeliveryReport, deliver
from cauce.leads.ports import CrmRejected, CrmThrottled, CrmUnavailable
from tests.leads.adapters.conftest import MakeClients, ManualClock, WallClock, fast_policy
from tests.leads.adapters.fake_pipedrive import FakePipedrive
from tests.leads.adapters.test_pipedrive import CAUCE_ID, lead
from tests.leads.adapters.test_pipedrive_create_in_doubt import (
    _later_by,
    _no_doubt,
    _posts,
    _sync_state,
    _worker,
    fake,
)
from tests.leads.test_crm_clears import _store, clients, db, pipedrive_settings

__all__ = ["clients", "db", "fake"]  # fixtures

SEARCH = "/api/v2/persons/search"


class Refuses:
    """Answers the requests of one kind (`method`, a path ending in `path`) after the
    first `let_through` of them with `answer` (a status, or "tls": the handshake fails),
    without sending them: Pipedrive never sees those."""

    def __init__(
        self, inner: Transport, method: str, path: str, answer: int | str, let_through: int = 0
    ) -> None:
        self.inner = inner
        self.method = method
        self.path = path
        self.answer = answer
        self.let_through = let_through

    async def send(self, request: Request) -> Response:
        """Pass the request on, or refuse it."""
        if request.method == self.method and request.url.split("?")[0].endswith(self.path):
            if self.let_through > 0:
                self.let_through -= 1
            elif self.answer == "tls":
                raise UpstreamTlsError("certificate did not verify")
            else:
                assert isinstance(self.answer, int)
                body = {"success": False, "error": "refused", "errorCode": self.answer}
                headers = Headers({"content-type": "application/json"})
                return Response(self.answer, headers, orjson.dumps(body), request.url)
        return await self.inner.send(request)

    async def close(self) -> None:
        """Close the wrapped transport."""
        await self.inner.close()


def _refusing(
    make_clients: MakeClients,
    fake: FakePipedrive,
    wall: WallClock,
    method: str,
    path: str,
    answer: int | str,
    let_through: int = 0,
) -> PipedriveCrm:
    def wrap(_: str, inner: Transport) -> Transport:
        return Refuses(inner, method, path, answer, let_through)

    clients = make_clients(policies={"pipedrive": fast_policy()}, wrap_transport=wrap)
    return _worker(clients, fake, wall)


async def _attempt(
    db: Database, crm: PipedriveCrm, settings: CrmSettings, wall: WallClock
) -> DeliveryReport | Exception:
    try:
        return await deliver(db.sessionmaker, crm, settings, clock=wall)
    except (CrmRejected, CrmThrottled, CrmUnavailable) as exc:
        return exc


def _one_lane(tmp_path: Path) -> CrmSettings:
    """One lane: both leads go in one batch, one call, in order."""
    return pipedrive_settings(tmp_path).model_copy(update={"delivery_lanes": 1})


@pytest.mark.parametrize(
    ("answer", "raised"),
    [
        pytest.param(401, CrmRejected, id="401"),
        pytest.param(403, CrmRejected, id="403"),
        pytest.param("tls", CrmRejected, id="tls"),
        pytest.param(429, CrmThrottled, id="429"),
        pytest.param(422, None, id="422"),
    ],
)
async def test_a_create_refused_for_certain_costs_no_wait(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    make_clients: MakeClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
    answer: int | str,
    raised: type[Exception] | None,
) -> None:
    """Pipedrive refused the POST (or it never left): no person was made, the lead is left
    with no create in flight nor in doubt, and the next delivery creates it at once (before,
    for a 401, a 403 or a TLS failure: the mark stayed, and the lead waited a minute)."""
    lead_id = await _store(db, email="ana@bodegas.es", first_name="Ana")
    crm = _refusing(make_clients, fake, wall, "POST", "/api/v2/persons", answer)
    first = await _attempt(db, crm, pipedrive_settings(tmp_path), wall)
    if raised is None:
        assert isinstance(first, DeliveryReport)
        assert first.failed_for_good == [lead_id]
    else:
        assert isinstance(first, raised)
    assert fake.persons == {}
    assert _no_doubt((await _sync_state(db, lead_id))[2])

    _later_by(wall, sandbox_clock, 3)  # past a burst window, far inside the allowance
    again = await deliver(
        db.sessionmaker,
        _worker(clients, fake, wall),
        pipedrive_settings(tmp_path),
        only=[lead_id],
        clock=wall,
    )
    assert (again.synced, again.waiting) == (1, {})
    (person,) = fake.persons.values()
    crm_id, status, doubt = await _sync_state(db, lead_id)
    assert (crm_id, status) == (str(person["id"]), "synced")
    assert _no_doubt(doubt)
    assert _posts(fake) == 1


@pytest.mark.parametrize("answer", [401, 403])
async def test_a_create_refused_after_another_landed_keeps_the_one_that_landed(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    make_clients: MakeClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
    answer: int,
) -> None:
    """Ana's create lands, Luis's is refused in the same call: Ana's person is recorded
    (before: the rejection dropped her outcome and she waited a minute), Luis is not in
    doubt and is created at once by the next delivery; one person each."""
    ana = await _store(db, email="ana@bodegas.es", first_name="Ana")
    luis = await _store(db, email="luis@bodegas.es", first_name="Luis")
    crm = _refusing(make_clients, fake, wall, "POST", "/api/v2/persons", answer, let_through=1)
    await _attempt(db, crm, _one_lane(tmp_path), wall)
    (made,) = fake.persons.values()
    assert (await _sync_state(db, ana))[:2] == (str(made["id"]), "synced")
    assert _no_doubt((await _sync_state(db, luis))[2])

    _later_by(wall, sandbox_clock, 3)
    again = await deliver(
        db.sessionmaker, _worker(clients, fake, wall), _one_lane(tmp_path), clock=wall
    )
    assert (again.synced, again.waiting) == (1, {})
    assert sorted(p["name"] for p in fake.persons.values()) == ["Ana", "Luis"]
    assert _posts(fake) == 2


async def test_a_refusal_on_a_search_after_a_create_keeps_that_create(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    make_clients: MakeClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
) -> None:
    """Ana's create lands, then Luis's search is refused (401): Ana's person is recorded
    (dropped with the rejection and taken as never made, it would be made twice: the
    search index lags 5 s); Luis never got as far as a create, and goes at once."""
    ana = await _store(db, email="ana@bodegas.es", first_name="Ana")
    luis = await _store(db, email="luis@bodegas.es", first_name="Luis")
    crm = _refusing(make_clients, fake, wall, "GET", SEARCH, 401, let_through=1)
    await _attempt(db, crm, _one_lane(tmp_path), wall)
    (made,) = fake.persons.values()
    crm_id, status, doubt = await _sync_state(db, ana)
    assert (crm_id, status) == (str(made["id"]), "synced")
    assert _no_doubt(doubt)
    assert _no_doubt((await _sync_state(db, luis))[2])

    _later_by(wall, sandbox_clock, 1)  # Ana's person is not in the search index yet
    await _attempt(db, _worker(clients, fake, wall), _one_lane(tmp_path), wall)
    assert [p["name"] for p in fake.persons.values()].count("Ana") == 1, "Ana made twice"
    assert (await _sync_state(db, luis))[1] == "synced"


async def test_the_adapter_raises_a_rejection_only_when_nothing_was_done(
    make_clients: MakeClients, fake: FakePipedrive, wall: WallClock
) -> None:
    """A rejection before any contact's outcome is raised (the job fails on it); after a
    create made, that create's outcome is returned and the rest are "not sent"."""
    fake.custom_fields |= {CAUCE_ID}  # `lead`'s Cauce id field
    first = _refusing(make_clients, fake, wall, "POST", "/api/v2/persons", 401)
    with pytest.raises(CrmRejected):
        await first.upsert([lead(1, "ana@bodegas.es"), lead(2, "luis@bodegas.es")])
    later = _refusing(make_clients, fake, wall, "POST", "/api/v2/persons", 401, let_through=1)
    ana, luis, eva = await later.upsert(
        [lead(1, "ana@bodegas.es"), lead(2, "luis@bodegas.es"), lead(3, "eva@bodegas.es")]
    )
    (made,) = fake.persons.values()
    assert (ana.ok, ana.crm_id) == (True, str(made["id"]))
    for refused in (luis, eva):
        assert (refused.ok, refused.retryable, refused.in_doubt_at) == (False, True, None)
        assert refused.error is not None
        assert refused.error.startswith("not sent: ")
