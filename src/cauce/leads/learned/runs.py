"""`cauce leads train`: read outcomes from the database, train, save, track, maybe activate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import MlflowSettings, Settings
from cauce.core.db.base import utcnow
from cauce.leads.learned.errors import TrackingFailed
from cauce.leads.learned.impact import routing_impact
from cauce.leads.learned.model import versioned_name
from cauce.leads.learned.store import ModelStore, load_active
from cauce.leads.learned.tracking import log_training, mlflow_client
from cauce.leads.learned.training import (
    DEFAULT_MARGIN,
    DEFAULT_SEED,
    DEFAULT_TEST_SIZE,
    Example,
    TrainingReport,
    check_outcomes,
    train,
)
from cauce.leads.models import Lead, LeadSource
from cauce.leads.scoring import PointsModel, facts_of

if TYPE_CHECKING:
    from mlflow import MlflowClient

OUTCOMES = {"won": True, "lost": False}

# The lead fields the scoring facts are built from (everything `facts_of` may test): the
# ones `intake_writer.lead_facts` reads, so training scores leads as intake does.
FACT_COLUMNS = (
    Lead.email,
    Lead.phone,
    Lead.phone_extension,
    Lead.first_name,
    Lead.last_name,
    Lead.company,
    Lead.job_title,
    Lead.country,
    Lead.region,
    Lead.city,
    Lead.language,
    Lead.external_id,
    Lead.source,
    Lead.utm,
    Lead.consent,
    Lead.custom_fields,
    Lead.email_free,
    Lead.email_disposable,
)


async def labelled_examples(session: AsyncSession) -> list[Example]:
    """Facts and outcome of every won or lost lead that was not erased, oldest first."""
    return (await labelled_leads(session))[0]


async def labelled_leads(session: AsyncSession) -> tuple[list[Example], list[str]]:
    """`labelled_examples`, and each one's lead id (the held-out split's key)."""
    arrivals = (
        select(LeadSource.lead_id, func.count().label("arrivals"))
        .group_by(LeadSource.lead_id)
        .subquery()
    )
    statement = (
        select(Lead.uid, Lead.status, arrivals.c.arrivals, *FACT_COLUMNS)
        .outerjoin(arrivals, arrivals.c.lead_id == Lead.id)
        .where(Lead.status.in_(tuple(OUTCOMES)), Lead.erased_at.is_(None))
        .order_by(Lead.id)
    )
    examples: list[Example] = []
    ids: list[str] = []
    for row in await session.execute(statement):
        fields = {column.key: row._mapping[column.key] for column in FACT_COLUMNS}
        # A lead with no recorded source row still arrived once.
        count = max(int(row.arrivals or 0), 1)
        examples.append((facts_of(fields, arrivals=count), OUTCOMES[row.status]))
        ids.append(row.uid)
    return examples, ids


def publish(
    report: TrainingReport,
    store: ModelStore,
    tracking: MlflowSettings | None = None,
    *,
    client: MlflowClient | None = None,
) -> TrainingReport:
    """Save the model; track the run when configured; activate it only if it should be.

    The run is tracked before the pointer moves, so an active model always has its run
    recorded. A tracking failure after the save does not lose the work: the report comes
    back with the version saved, not activated, and `tracking_error` saying why.
    `client` is one `mlflow_client(tracking)` made before training (else made here).
    """
    if client is None and tracking is not None:
        client = mlflow_client(tracking)
    saved = store.save(report)
    # The comparison holds only against the scorer it was made with: another trainer, or
    # `cauce leads model activate`, may have changed the active model since.
    active_now = store.active_version()
    now = versioned_name(active_now) if active_now is not None else None
    if now != (report.active.name if report.active is not None else None):
        saved = replace(saved, active_changed=now or "the points model")
    activate = saved.should_activate
    if client is not None and tracking is not None:
        try:
            run_id = log_training(client, tracking, saved, store, activate=activate)
        except TrackingFailed as exc:
            return replace(
                saved,
                activated=False,
                active_version=store.active_version(),
                tracking_error=exc.detail,
            )
        saved = replace(saved, mlflow_run_id=run_id)
    if activate and saved.version is not None:
        store.activate(saved.version)
    return replace(saved, activated=activate, active_version=store.active_version())


async def train_from_database(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    seed: int = DEFAULT_SEED,
    test_size: float = DEFAULT_TEST_SIZE,
    margin: float = DEFAULT_MARGIN,
    now: Callable[[], datetime] = utcnow,
) -> TrainingReport:
    """Train on the database's won and lost leads, against the scorer active now.

    Fails before the work with `NotEnoughOutcomes` when there are too few outcomes,
    `ConfigError` when MLflow tracking is configured but MLflow is not installed,
    `TrackingFailed` when the tracking server does not answer, and `ModelArtefactInvalid`
    when the active model is refused (a new one could not be compared with it).
    """
    client = mlflow_client(settings.mlflow)
    store = ModelStore.for_data_dir(settings.data_dir, now=now)
    active = await asyncio.to_thread(load_active, settings.data_dir)
    active_below = None
    if active is not None and active.version is not None:
        active_below = await asyncio.to_thread(store.held_out_below, active.version)
    async with sessionmaker() as session:
        examples, lead_ids = await labelled_leads(session)
    check_outcomes(examples)
    points = PointsModel(settings.leads.scoring_rules)
    # Fitting and file/MLflow I/O block: keep them off the event loop.
    report = await asyncio.to_thread(
        train,
        examples,
        seed=seed,
        test_size=test_size,
        margin=margin,
        points=points,
        active=active,
        lead_ids=lead_ids,
        active_held_out_below=active_below,
    )
    published = await asyncio.to_thread(
        lambda: publish(report, store, settings.mlflow, client=client)
    )
    if not published.activated:
        return published
    before = active if active is not None else points
    impact = await asyncio.to_thread(
        routing_impact, [facts for facts, _ in examples], before, published.model, settings
    )
    return replace(published, routing=impact)
