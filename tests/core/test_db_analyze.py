"""`core.db_analyze`: SQLite's planner statistics, refreshed on `db.analyze_cron`, make a
list filtered by country and creation time use the creation-time index (without them an
equality on `country` always looked more selective, and walked every Spanish lead)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager
from sqlalchemy import event

from cauce.app import Resources, create_app
from cauce.core.db.analyze import ANALYZE_TASK
from tests.conftest import SettingsFactory, make_settings
from tests.leads.api_client import serve_app

EVERY_SECOND = "* * * * * *"


def _lead(batch: int, i: int) -> dict[str, Any]:
    return {
        "email": f"cliente{batch}.{i}@empresa{i % 7}.es",
        "first_name": "Lucía",
        "last_name": f"Prieto {i}",
        "country": "ES",
    }


def _stats(db_file: Path) -> dict[str, str]:
    with sqlite3.connect(db_file) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            return {}
        return dict(conn.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'leads'"))


async def test_the_schedule_analyzes_and_the_planner_uses_it(
    settings_factory: SettingsFactory, backend: str
) -> None:
    """On SQLite the embedded worker runs `core.db_analyze` on its cron: the leads'
    indexes get statistics, and `GET /v1/leads?country=ES&created_after=..&created_before=..`
    is then planned on `ix_leads_created`, not on `ix_leads_country`. On PostgreSQL the
    task exists but nothing schedules it (autovacuum analyzes)."""
    settings = settings_factory(db={"analyze_cron": EVERY_SECOND})
    if backend == "postgresql":
        app = create_app(settings)
        async with LifespanManager(app):
            resources: Resources = app.state.resources
            assert ANALYZE_TASK in resources.tasks
            assert ANALYZE_TASK not in [s.task for s in resources.tasks.schedules]
        return
    db_file = settings.data_dir / "cauce.db"
    statements: list[tuple[str, Any]] = []
    async with serve_app(settings) as (app, api):
        resources = app.state.resources
        assert (ANALYZE_TASK, EVERY_SECOND) in [(s.task, s.cron) for s in resources.tasks.schedules]
        for batch in range(6):  # six creation times, one country
            items = [_lead(batch, i) for i in range(60)]
            answer = await api.post("/v1/leads/batch", json={"items": items})
            assert answer.status_code == 200, answer.text
        async with asyncio.timeout(20):
            while True:
                if "ix_leads_country" in _stats(db_file):
                    break
                await asyncio.sleep(0.2)
        stats = _stats(db_file)
        assert stats["ix_leads_country"].split()[:2] == ["360", "360"]  # 360 rows, one value

        def keep(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and "FROM leads" in statement:
                statements.append((statement, params))

        engine = resources.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", keep)
        try:
            listed = await api.get(
                "/v1/leads",
                params={
                    "country": "ES",
                    "created_after": "2000-01-01T00:00:00Z",
                    "created_before": "2000-01-02T00:00:00Z",
                },
            )
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == []
    statement, params = next((s, p) for s, p in statements if "created_at" in s)
    with sqlite3.connect(db_file) as conn:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", params))
    assert "ix_leads_created" in plan, plan
    assert "ix_leads_country" not in plan, plan


async def test_off_schedules_nothing(tmp_path: Path) -> None:
    """`db.analyze_cron` off: the task exists (a deferral by hand) but is not scheduled."""
    settings = make_settings(tmp_path, db={"analyze_cron": "off"})
    app = create_app(settings)
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        assert ANALYZE_TASK in resources.tasks
        assert ANALYZE_TASK not in [s.task for s in resources.tasks.schedules]
