"""A delivery run with leads the CRM refused for good and leads that failed for a passing
reason asks for a redelivery of the refused ones (which fails for them, so they can be
replayed once fixed), then is put off to retry the others. The redelivery was deferred in
the job's own transaction, which the put-off (`RetryLater`) rolls back: the refused leads
were left `failed` with no job to replay (found by helper-150's review)."""

from __future__ import annotations

from cauce.app import Resources, job_worker_for
from cauce.core.jobs.ports import JobFilter
from cauce.leads.delivery import DELIVER_TASK, REDELIVER_TASK
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm
from tests.leads.test_erasure_residue_audit import _served

REFUSED = "rechazado@empresa-uno.es"
BUSY = "ocupado@empresa-dos.es"


async def test_refused_leads_get_their_redelivery_though_the_run_is_put_off(
    settings_factory: SettingsFactory,
) -> None:
    crm = MemoryCrm()
    crm.reject = {REFUSED}
    crm.flaky = {BUSY}
    async with _served(settings_factory, crm) as (app, api):
        for email in (REFUSED, BUSY):
            answer = await api.post("/v1/leads", json={"email": email})
            assert answer.status_code == 201, answer.text
        refused = (await api.get("/v1/leads", params={"q": REFUSED})).json()["items"][0]
        resources: Resources = app.state.resources
        await job_worker_for(resources).run_until_idle(60)

        redeliveries = await resources.jobs.list(JobFilter(task=REDELIVER_TASK))
        assert len(redeliveries) == 1, "no job to replay the refused lead"
        [redelivery] = redeliveries
        # Refused again: replayable once fixed. On PostgreSQL it waits for the put-off
        # delivery, which holds the account's lock first (procrastinate runs the jobs of
        # one lock in order).
        expected = {"failed"} if resources.db.dialect == "sqlite" else {"todo", "failed"}
        assert redelivery.status.value in expected
        assert len(await resources.jobs.list(JobFilter(task=DELIVER_TASK))) == 1
        detail = (await api.get(f"/v1/leads/{refused['id']}")).json()
        assert detail["sync"]["status"] == "failed"
