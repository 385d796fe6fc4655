"""End to end: `deliver()` moves leads from the database to the sandbox CRM exactly once."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, update

from cauce.core.config import Settings
from cauce.core.db import Database, unit_of_work
from cauce.leads.adapters import build_crm
from cauce.leads.delivery import deliver
from cauce.leads.models import Lead
from cauce.leads.ports import CrmClient, CrmUnavailable
from cauce.sandbox import SandboxCrm
from tests.leads.adapters.conftest import MakeClients, StartSandbox, WallClock

LEADS_WITH_EMAIL = 180
LEADS_WITHOUT_EMAIL = 45


@pytest.fixture
async def sandbox(start_sandbox: StartSandbox) -> SandboxCrm:
    """A sandbox that fails 15 % of writes after applying them (the client cannot tell)."""
    return await start_sandbox(faults_error_after_write_rate=0.15, seed=3)


async def _add_leads(db: Database) -> None:
    async with unit_of_work(db.sessionmaker) as session:
        session.add_all(
            Lead(
                uid=str(uuid.uuid4()),
                email=f"cliente{i}@empresa.es",
                first_name=f"Nombre{i}",
                city="Sevilla",
                score=i % 100,
                source="api",
            )
            for i in range(LEADS_WITH_EMAIL)
        )
        session.add_all(
            Lead(uid=str(uuid.uuid4()), phone=f"+346120{i:05d}", source="form")
            for i in range(LEADS_WITHOUT_EMAIL)
        )


async def _deliver_all(db: Database, crm: CrmClient, settings: Settings) -> None:
    """Run deliveries as the job would, re-running after an outage answer."""
    for _ in range(20):
        try:
            report = await deliver(db.sessionmaker, crm, settings.crm)
        except CrmUnavailable:
            continue
        if not report.retry_later and not report.out_of_time:
            return
    raise AssertionError("delivery did not finish in 20 runs")


async def test_every_lead_reaches_the_sandbox_exactly_once(
    db: Database,
    crm_settings: Settings,
    sandbox: SandboxCrm,
    make_clients: MakeClients,
    wall: WallClock,
) -> None:
    """Through write-then-5xx faults and a re-run with lost bookkeeping, no lead is doubled."""
    await _add_leads(db)
    crm = build_crm(crm_settings, make_clients(), clock=wall)
    assert crm is not None
    await _deliver_all(db, crm, crm_settings)
    async with unit_of_work(db.sessionmaker) as session:  # as if a crash lost the outcomes
        await session.execute(update(Lead).values(sync_status="pending", synced_version=0))
    await _deliver_all(db, crm, crm_settings)

    total = LEADS_WITH_EMAIL + LEADS_WITHOUT_EMAIL
    stats = sandbox.state.snapshot()
    assert stats["faults"]["settings"]["error_after_write_rate"] > 0
    assert stats["requests"]["faults_injected"].get("error_after_write", 0) > 0
    assert (stats["contacts"], stats["created_total"], stats["duplicate_count"]) == (
        total,
        total,
        0,
    )
    async with db.sessionmaker() as session:
        leads = (await session.scalars(select(Lead))).all()
    assert {lead.sync_status for lead in leads} == {"synced"}
    for lead in leads:
        stored = sandbox.state.store.find("cauce_id", lead.uid)
        assert stored is not None
        assert stored.id == lead.crm_id
        assert stored.properties.get("email") == lead.email
