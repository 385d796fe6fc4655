"""When a learned model becomes active: with confidence, against the active scorer, and
what the report and the store say when it does not or cannot."""

from __future__ import annotations

import os
import random
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]

from cauce.core.config import MlflowSettings
from cauce.leads.learned import (
    MIN_HELD_OUT_PER_OUTCOME,
    ModelStore,
    ModelStoreUnavailable,
    TrackingFailed,
    TrainingReport,
    auc_gain_interval,
    publish,
    render_report,
    routing_impact,
    train,
)
from cauce.leads.learned.tracking import _bounded_http, mlflow_client
from cauce.leads.learned.training import DEFAULT_TEST_SIZE, _aucs, held_out_point
from cauce.leads.scoring import PointsModel
from cauce.leads.synthetic import synthetic_leads, training_examples
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def signal() -> list[tuple[dict[str, Any], bool]]:
    """800 leads whose outcome follows known drivers the points model half ignores."""
    return training_examples(synthetic_leads(800, seed=1))


@pytest.fixture(scope="module")
def first(signal: list[tuple[dict[str, Any], bool]]) -> TrainingReport:
    """A model trained on them, which beats the points model with confidence."""
    return train(signal, seed=1)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """An empty model store."""
    return ModelStore.for_data_dir(tmp_path)


# -- confidence -----------------------------------------------------------------------------


def test_random_outcomes_are_never_activated() -> None:
    """Outcomes that are coin flips give no model a confident win, whatever the seed."""
    facts = [lead.facts() for lead in synthetic_leads(400, seed=11)]
    for seed in range(8):
        rng = random.Random(seed)
        report = train([(f, rng.random() < 0.5) for f in facts], seed=seed)
        assert report.enough_held_out
        assert not report.should_activate, (seed, report.points_interval)
        assert "not certain" in (report.why_not() or "") or "below the margin" in (
            report.why_not() or ""
        )


def test_real_signal_is_activated_with_its_interval_reported(first: TrainingReport) -> None:
    """A real gain has an interval above 0, and the report shows it."""
    low, high = first.points_interval
    assert 0 < low < first.auc_learned - first.auc_points < high
    assert first.should_activate
    assert f"95 % interval {low:+.3f} to {high:+.3f}" in render_report(first)


def test_a_small_held_out_split_decides_nothing(
    signal: list[tuple[dict[str, Any], bool]],
) -> None:
    """With fewer than 20 won or lost held-out leads the model is not activated, and why."""
    report = train(signal, seed=1, test_size=0.05)
    assert min(report.held_out_won, report.held_out_lost) < MIN_HELD_OUT_PER_OUTCOME
    assert not report.should_activate
    assert f"at least {MIN_HELD_OUT_PER_OUTCOME} of each" in render_report(report)


def test_resampled_auc_is_roc_auc_with_ties() -> None:
    """The bootstrap's AUC equals scikit-learn's on tied scores, and a scorer ties itself."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(4, 200))
        won = np.arange(n) % 3 == 0
        scores = rng.integers(0, 6, n).astype(float)
        levels, index = np.unique(scores, return_inverse=True)
        auc = _aucs(index[won][None, :], index[~won][None, :], levels.size)[0]
        assert auc == pytest.approx(roc_auc_score(won, scores))
    outcomes = [1, 0] * 30
    same = list(rng.random(60))
    assert auc_gain_interval(outcomes, same, same) == (0.0, 0.0)
    assert auc_gain_interval(outcomes, same, same[::-1], seed=3) == auc_gain_interval(
        outcomes, same, same[::-1], seed=3
    )


# -- against the active scorer ---------------------------------------------------------------


def test_a_new_model_must_beat_the_active_learned_model(
    first: TrainingReport, store: ModelStore
) -> None:
    """A retrained model no better than the active learned one leaves it active, and says so."""
    assert publish(first, store).activated
    active = store.load_active()
    assert active is not None
    again = train(training_examples(synthetic_leads(800, seed=2)), seed=2, active=active)
    assert again.beats_points  # against points alone it would have been activated
    assert again.active is not None
    assert again.active.name == "learned-v1"
    second = publish(again, store)
    assert (second.version, second.activated, second.active_version) == (2, False, 1)
    text = render_report(second)
    assert "Active at training  learned-v1" in text
    assert "its gain over learned-v1" in text
    assert "learned-v1 stays active" in text


def test_a_comparison_with_another_scorer_than_the_active_one_is_not_activated(
    first: TrainingReport, store: ModelStore
) -> None:
    """A report compared with the points model is not activated over a learned model."""
    assert publish(first, store).activated
    stale = publish(first, store)
    assert (stale.version, stale.activated, stale.active_version) == (2, False, 1)
    assert "learned-v1 became active meanwhile" in render_report(stale)


def test_an_active_model_worse_than_points_is_flagged(store: ModelStore) -> None:
    """When outcomes follow the points model exactly, the report says to go back to it
    (and a new model that beats the active one but not the points model is not activated)."""
    leads = synthetic_leads(800, seed=4)
    noise = random.Random(4)
    coin_flips = train([(lead.facts(), noise.random() < 0.3) for lead in leads], seed=4)
    assert store.save(coin_flips).version == 1
    store.activate(1)  # by hand: a coin-flip model is never activated by training
    points = PointsModel()
    by_points = [(lead.facts(), points.score(lead.facts()).value >= 40) for lead in leads]
    report = publish(train(by_points, seed=4, active=store.load_active()), store)
    assert not report.activated  # it beats the coin-flip model it would replace...
    assert report.points_interval[1] < 0  # ...but not the points model
    assert "Warning             learned-v1 ranks these held-out leads worse" in render_report(
        report
    )
    assert "`cauce leads model activate points`" in render_report(report)


# -- what activation changes ----------------------------------------------------------------


def test_activation_reports_the_new_scale_and_routing_moves(
    first: TrainingReport,
    signal: list[tuple[dict[str, Any], bool]],
    store: ModelStore,
    tmp_path: Path,
) -> None:
    """Replacing points says what scores mean now and how many leads change team."""
    teams = {"top": [{"name": "Marta"}], "rest": [{"name": "Carmen"}]}
    leads = make_settings(
        tmp_path,
        leads={
            "routing_rules": [{"team": "top", "min_score": 50}],
            "teams": teams,
            "default_team": "rest",
        },
    )
    facts = [f for f, _ in signal]
    impact = routing_impact(facts, PointsModel(), first.model, leads)
    expected = sum(
        (PointsModel().score(f).value >= 50) != (first.model.score(f).value >= 50) for f in facts
    )
    assert impact.uses_score
    assert impact.total == len(facts)
    assert impact.moved == expected > 0
    assert {(a, b) for a, b, _ in impact.moves} <= {("top", "rest"), ("rest", "top")}
    published = publish(first, store)
    text = render_report(replace(published, routing=impact))
    assert "chance of winning x 100" in text
    assert "do not add up" in text
    assert f"{expected} of the {len(facts)} leads with outcomes would go to another team" in text

    unscored = make_settings(tmp_path, leads={"default_team": "rest", "teams": teams})
    assert routing_impact(facts, PointsModel(), first.model, unscored).moved == 0


# -- store and tracking failures -----------------------------------------------------------


def test_file_system_errors_name_the_model_store(first: TrainingReport, tmp_path: Path) -> None:
    """A model store that cannot be written is reported as that, naming its directory."""
    (tmp_path / "models").write_text("not a directory")
    store = ModelStore.for_data_dir(tmp_path)
    with pytest.raises(ModelStoreUnavailable, match=r"lead-scoring model store .*models/lead"):
        store.save(first)
    with pytest.raises(ModelStoreUnavailable, match="Not a directory"):
        store.active_version()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_tracking_server_fails_at_once_in_one_line() -> None:
    """Before any training, a tracking URI nobody answers is one line, credentials hidden."""
    uri = f"http://ops:hunter2@127.0.0.1:{_free_port()}"
    with pytest.raises(TrackingFailed) as caught:
        mlflow_client(MlflowSettings(tracking_uri=uri))
    message = caught.value.detail
    assert "does not answer" in message
    assert "Connection refused" in message
    assert "hunter2" not in message
    assert "\n" not in message


def test_mlflow_http_retries_are_bounded_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's retry variables are bounded inside the block, the operator's own kept."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    with _bounded_http({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": 0, "MLFLOW_HTTP_REQUEST_TIMEOUT": 5}):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


class _DownClient:
    """An MLflow client whose server went away after the check before training."""

    def get_experiment_by_name(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        raise MlflowException("API request failed: connection refused")


def test_tracking_failure_after_training_keeps_the_report(
    first: TrainingReport, store: ModelStore, tmp_path: Path
) -> None:
    """The model is saved, not activated, and the report says both, with its figures."""
    tracking = MlflowSettings(tracking_uri="http://127.0.0.1:9")
    report = publish(first, store, tracking, client=_DownClient())  # type: ignore[arg-type]
    assert (report.version, report.activated, report.active_version) == (1, False, None)
    assert report.tracking_error is not None
    text = render_report(report)
    assert "MLflow did not record the run" in text
    assert "Saved as            version 1" in text
    assert "`cauce leads model activate 1`" in text
    assert f"learned {first.auc_learned:.3f}" in text


def test_held_out_leads_are_fixed_by_their_ids() -> None:
    """With lead ids, the same leads are held out whatever the seed; an active model is
    compared on leads it never saw (its own held-out share when smaller), so its AUC in a
    later run is exactly the one it was measured at."""
    examples = training_examples(synthetic_leads(800, seed=2))
    ids = [f"lead-{n}" for n in range(len(examples))]
    first = train(examples, seed=1, lead_ids=ids)
    assert first.held_out_below == DEFAULT_TEST_SIZE
    held = {n for n, lead_id in enumerate(ids) if held_out_point(lead_id) < DEFAULT_TEST_SIZE}
    assert first.n_test == len(held)
    assert first.n_train == len(examples) - len(held)
    again = train(
        examples,
        seed=9,
        lead_ids=ids,
        active=first.model,
        active_held_out_below=first.held_out_below,
    )
    assert again.active is not None
    assert (again.n_test, again.active.auc) == (first.n_test, first.auc_learned)
    # A larger test share now: only the leads the active model never saw are held out,
    # and the ones between are neither trained on nor held out.
    wider = train(
        examples,
        seed=9,
        test_size=0.4,
        lead_ids=ids,
        active=first.model,
        active_held_out_below=first.held_out_below,
    )
    assert wider.held_out_below == DEFAULT_TEST_SIZE
    assert wider.n_test == first.n_test
    assert wider.n_train == sum(held_out_point(i) >= 0.4 for i in ids)
    points = [held_out_point(i) for i in ids]
    assert min(points) >= 0
    assert max(points) < 1


def test_an_active_model_saved_before_fixed_held_out_leads_is_not_the_bar() -> None:
    """A model saved without its held-out share (trained on a random 75 %) may have seen
    the leads a run holds out: it is shown, but the new model is judged against the points
    model, or a retrain could never replace it (a review caught the first upgrade's run
    still comparing with it)."""
    examples = training_examples(synthetic_leads(800, seed=2))
    ids = [f"lead-{n}" for n in range(len(examples))]
    legacy = train(examples, seed=1)  # a random split: no held_out_below
    assert legacy.held_out_below is None
    again = train(examples, seed=2, lead_ids=ids, active=legacy.model, active_held_out_below=None)
    assert again.active is not None
    assert again.active.may_have_seen
    assert again.replaces == "the points model"
    assert again.beats_active == again.beats_points
    assert "judged against the points model" in render_report(again)
    fixed = train(examples, seed=2, lead_ids=ids, active=legacy.model, active_held_out_below=0.25)
    assert fixed.active is not None
    assert not fixed.active.may_have_seen
    assert fixed.replaces == fixed.active.name
