"""MLflow tracking of training runs, when `CAUCE_MLFLOW__TRACKING_URI` is set.

MLflow is an optional extra (`cauce[mlflow]`): imported only here, only when tracking is
configured, so serving never pays for it. Its client is used directly (no module-level
`mlflow.set_tracking_uri`), so nothing global is configured, except MLflow's HTTP retry
policy, which it reads from its own environment variables at each request: by default 7
retries with exponential backoff and a 120 s timeout, about 4.5 minutes against a server
that is down. `_bounded_http` shortens that while Cauce talks to MLflow (unless the
operator set those variables), and the server is asked once, without retries, before
any training starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from cauce.core.config import MlflowSettings, setting_name
from cauce.core.errors import ConfigError
from cauce.leads.learned.errors import TrackingFailed
from cauce.leads.learned.store import CLASSIFIER, ModelStore
from cauce.leads.learned.training import TrainingReport

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARTEFACT_DIR = "model"

# MLflow's variable -> value while Cauce records a run: a dead server fails in seconds.
RUN_HTTP_POLICY: Mapping[str, int] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 2,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
    "MLFLOW_HTTP_REQUEST_TIMEOUT": 30,
}
# ... and while it checks, before training, that the server answers at all.
PROBE_HTTP_POLICY: Mapping[str, int] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 0,
    "MLFLOW_HTTP_REQUEST_TIMEOUT": 5,
}


@contextmanager
def _bounded_http(policy: Mapping[str, int]) -> Iterator[None]:
    """MLflow's HTTP retry policy bounded for the block; variables the operator set win."""
    from mlflow import environment_variables

    chosen = [
        variable
        for name in policy
        if not (variable := getattr(environment_variables, name)).defined
    ]
    for variable in chosen:
        variable.set(policy[variable.name])
    try:
        yield
    finally:
        for variable in chosen:
            variable.unset()


def _shown(uri: str) -> str:
    """The tracking URI without credentials (user:password@ may be in it)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _cause(exc: BaseException) -> str:
    """The root cause of an MLflow error, short: `[Errno 111] Connection refused`.

    MLflow wraps the transport's error in a long message naming the retry policy; the
    innermost exception says what happened."""
    inner: BaseException = exc
    seen = {id(inner)}
    while (nxt := inner.__cause__ or inner.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        inner = nxt
    text = " ".join(str(inner).split()) or type(inner).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _tracking_uri() -> str:
    """The setting named where it was set (`cauce.toml: mlflow.tracking_uri`, else the
    variable)."""
    return setting_name(("mlflow", "tracking_uri"))


def mlflow_client(settings: MlflowSettings) -> MlflowClient | None:
    """A client for the configured tracking URI, which answered (None when tracking is off).

    Called before training so a missing extra, a refused URI or a server that does not
    answer fails at once, in one line, not after the work.
    """
    if not settings.tracking_uri:
        return None
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise ConfigError(
            f"{_tracking_uri()} is set but MLflow is not installed: install the "
            "`mlflow` extra (pip install 'cauce[mlflow]') or unset it"
        ) from exc
    try:
        client = MlflowClient(tracking_uri=settings.tracking_uri)
    except MlflowException as exc:
        # e.g. MLflow 3 refuses a file:// store unless MLFLOW_ALLOW_FILE_STORE=true.
        raise TrackingFailed(f"MLflow refused the configured tracking URI: {exc}") from exc
    try:
        with _bounded_http(PROBE_HTTP_POLICY):
            client.get_experiment_by_name(settings.experiment)
    except (MlflowException, OSError) as exc:
        raise TrackingFailed(
            f"MLflow at {_shown(settings.tracking_uri)} ({_tracking_uri()}) does not "
            f"answer: {_cause(exc)}. Nothing was trained or saved: start the tracking server, "
            "correct the URI, or unset it to train without tracking"
        ) from exc
    return client


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
        with _bounded_http(RUN_HTTP_POLICY):
            return _log(client, settings, report, store, activate=activate)
    except (MlflowException, OSError) as exc:
        raise TrackingFailed(
            f"MLflow at {_shown(str(settings.tracking_uri))} did not record the run: {_cause(exc)}"
        ) from exc


def _log(
    client: MlflowClient,
    settings: MlflowSettings,
    report: TrainingReport,
    store: ModelStore,
    *,
    activate: bool,
) -> str:
    version = report.version
    assert version is not None  # checked by log_training
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
        "version": version,
        "classifier": CLASSIFIER,
        "seed": report.seed,
        "test_size": report.test_size,
        "margin": report.margin,
        "compared_with": report.compared_with,
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
    client.log_artifact(run_id, str(store.artefact_path(version)), ARTEFACT_DIR)
    client.log_artifact(run_id, str(store.metadata_path(version)), ARTEFACT_DIR)
    client.set_terminated(run_id)
    return run_id
