"""Training: fit on leads with known outcomes, compare with the points model on held-out leads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

from cauce.leads.learned.errors import NotEnoughOutcomes
from cauce.leads.learned.features import features_of
from cauce.leads.learned.model import CALIBRATION_FOLDS, FeatureWeight, LearnedModel, build_pipeline
from cauce.leads.scoring import PointsModel

Example = tuple[Mapping[str, Any], bool]
"""One lead's facts (`scoring.facts_of`) and whether it was won."""

MIN_EXAMPLES = 50
MIN_PER_OUTCOME = 10
DEFAULT_MARGIN = 0.01
DEFAULT_TEST_SIZE = 0.25
DEFAULT_SEED = 0
TOP_FEATURES = 10


@dataclass(frozen=True, slots=True)
class TrainingReport:
    """What a training run measured, and what became of the model."""

    model: LearnedModel = field(repr=False, compare=False)
    auc_learned: float
    auc_points: float
    margin: float
    n_train: int
    n_test: int
    n_won: int
    n_lost: int
    seed: int
    test_size: float
    top_features: tuple[FeatureWeight, ...]
    version: int | None = None
    activated: bool = False
    active_version: int | None = None
    mlflow_run_id: str | None = None

    @property
    def beats_points(self) -> bool:
        """Strictly better ranking than the points model, by at least the margin."""
        return self.auc_learned > self.auc_points and (
            self.auc_learned - self.auc_points >= self.margin
        )

    def metrics(self) -> dict[str, float]:
        """The figures tracked per run (metadata file and MLflow)."""
        return {
            "auc_learned": self.auc_learned,
            "auc_points": self.auc_points,
            "n_train": float(self.n_train),
            "n_test": float(self.n_test),
        }


def check_outcomes(examples: Sequence[Example]) -> tuple[int, int]:
    """Count won and lost examples; refuse a set too small to train and evaluate on."""
    won = sum(1 for _, outcome in examples if outcome)
    lost = len(examples) - won
    if len(examples) < MIN_EXAMPLES or min(won, lost) < MIN_PER_OUTCOME:
        raise NotEnoughOutcomes(
            f"training needs at least {MIN_EXAMPLES} leads marked won or lost, with at least "
            f"{MIN_PER_OUTCOME} of each; found {won} won and {lost} lost",
            won=won,
            lost=lost,
        )
    return won, lost


def train(
    examples: Sequence[Example],
    *,
    seed: int = DEFAULT_SEED,
    test_size: float = DEFAULT_TEST_SIZE,
    margin: float = DEFAULT_MARGIN,
    points: PointsModel | None = None,
) -> TrainingReport:
    """Fit the learned model and rank held-out leads with it and with the points model.

    The split is stratified on the outcome, so both classes are in the held-out part;
    both models are measured on exactly the same held-out leads. The model kept is the
    one fitted on the training part, so the figures describe the model that is saved.
    """
    if not 0 < test_size < 1:
        raise ValueError("test_size must be between 0 and 1")
    if margin < 0:
        raise ValueError("margin must not be negative")
    n_won, n_lost = check_outcomes(examples)
    facts = [f for f, _ in examples]
    labels = [int(outcome) for _, outcome in examples]
    train_idx, test_idx = train_test_split(
        list(range(len(examples))), test_size=test_size, stratify=labels, random_state=seed
    )
    y_train = [labels[i] for i in train_idx]
    y_test = [labels[i] for i in test_idx]
    if len(set(y_test)) < 2:
        raise NotEnoughOutcomes("the held-out split lacks won or lost leads; add more outcomes")
    folds = min(CALIBRATION_FOLDS, sum(y_train), len(y_train) - sum(y_train))
    pipeline = build_pipeline(folds=folds)
    pipeline.fit([features_of(facts[i]) for i in train_idx], y_train)
    model = LearnedModel(pipeline)

    held_out = [facts[i] for i in test_idx]
    points_model = points or PointsModel()
    auc_learned = float(roc_auc_score(y_test, model.probabilities(held_out)))
    auc_points = float(roc_auc_score(y_test, [points_model.score(f).value for f in held_out]))
    return TrainingReport(
        model=model,
        auc_learned=auc_learned,
        auc_points=auc_points,
        margin=margin,
        n_train=len(train_idx),
        n_test=len(test_idx),
        n_won=n_won,
        n_lost=n_lost,
        seed=seed,
        test_size=test_size,
        top_features=model.top_features(TOP_FEATURES),
    )


def render_report(report: TrainingReport) -> str:
    """The report as plain text for the CLI."""
    total = report.n_train + report.n_test
    difference = report.auc_learned - report.auc_points
    lines = [
        f"Lead scoring: {report.model.name} trained on {report.n_train} leads, "
        f"evaluated on {report.n_test} held out ({report.n_won} won, {report.n_lost} lost "
        f"of {total}).",
        "",
        f"  ROC AUC, held out   learned {report.auc_learned:.3f}   "
        f"points {report.auc_points:.3f}   (difference {difference:+.3f}, "
        f"margin {report.margin:.3f})",
    ]
    keeps = f"learned-v{report.active_version}" if report.active_version else "the points model"
    if report.activated:
        verdict = f"activated: {report.model.name} now scores new leads"
    elif report.version is None:
        verdict = (
            "beats the points model" if report.beats_points else "does not beat the points model"
        )
    else:
        verdict = f"not activated: it does not beat the points model by the margin; {keeps} stays"
    lines += [f"  Result              {verdict}"]
    if report.version is not None:
        lines += [f"  Saved as            version {report.version}"]
    if report.mlflow_run_id:
        lines += [f"  MLflow run          {report.mlflow_run_id}"]
    lines += ["", "  Top features (change in log-odds of winning)"]
    width = max((len(fw.feature) for fw in report.top_features), default=0)
    lines += [
        f"    {fw.weight:+6.2f}  {fw.feature:<{width}}  {fw.description}"
        for fw in report.top_features
    ]
    return "\n".join(lines)
