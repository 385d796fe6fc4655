"""MLflow tracking of training runs, when `CAUCE_MLFLOW__TRACKING_URI` is set.

MLflow is an optional extra (`cauce[mlflow]`): imported only here, only when tracking is
configured, so serving never pays for it. Its client is used directly (no module-level
`mlflow.set_tracking_uri`), so nothing global is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cauce.core.config import MlflowSettings
from cauce.core.errors import ConfigError
from cauce.leads.learned.errors import TrackingFailed
from cauce.leads.learned.store import CLASSIFIER, ModelStore
from cauce.leads.learned.training import TrainingReport

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARTEFACT_DIR = "model"


def mlflow_client(settings: MlflowSettings) -> MlflowClient | None:
    """A client for the configured tracking URI (None when tracking is off).

    Called before training so a missing extra or a refused URI fails at once, not after
    the work.
    """
    if not settings.tracking_uri:
        return None
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise ConfigError(
            "CAUCE_MLFLOW__TRACKING_URI is set but MLflow is not installed: install the "
            "`mlflow` extra (pip install 'cauce[mlflow]') or unset the variable"
        ) from exc
    try:
        return MlflowClient(tracking_uri=settings.tracking_uri)
    except MlflowException as exc:
        # e.g. MLflow 3 refuses a file:// store unless MLFLOW_ALLOW_FILE_STORE=true.
        raise TrackingFailed(f"MLflow refused the configured tracking URI: {exc}") from exc


def log_training(
    client: MlflowClient,
    settings: MlflowSettings,
    report: TrainingReport,
    store: ModelStore,
    *,
    activate: bool,
) -> str:
    """Record one saved training run (params, metrics, artefacts); return the run id."""
    from mlflow.exceptions import MlflowException

    if report.version is None:
        raise ValueError("save the model before logging it")
    try:
        experiment = client.get_experiment_by_name(settings.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(settings.experiment)
        )
        run = client.create_run(experiment_id, run_name=report.model.name)
        run_id = str(run.info.run_id)
        params = {
            "model": report.model.name,
            "version": report.version,
            "classifier": CLASSIFIER,
            "seed": report.seed,
            "test_size": report.test_size,
            "margin": report.margin,
            "n_features": len(report.model.feature_names),
            "n_won": report.n_won,
            "n_lost": report.n_lost,
        }
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for key, metric in report.metrics().items():
            client.log_metric(run_id, key, metric)
        client.set_tag(run_id, "cauce.beats_points", str(report.beats_points).lower())
        client.set_tag(run_id, "cauce.activated", str(activate).lower())
        client.log_artifact(run_id, str(store.artefact_path(report.version)), ARTEFACT_DIR)
        client.log_artifact(run_id, str(store.metadata_path(report.version)), ARTEFACT_DIR)
        client.set_terminated(run_id)
    except (MlflowException, OSError) as exc:
        raise TrackingFailed(
            f"MLflow at the configured tracking URI did not record the run: {exc}"
        ) from exc
    return run_id
