"""Training: fit on leads with known outcomes, compare with the active scorer on held-out leads.

A new model is activated only when it ranks the held-out leads better than the points
model, and than the learned model active at the time if there is one, each with
confidence: its ROC AUC gain is at least the margin, and the lower end of a 95 % paired
bootstrap interval of that gain is above zero. A split with fewer than
`MIN_HELD_OUT_PER_OUTCOME` won or lost leads decides nothing: with a few dozen held-out
leads, a model trained on coin flips "beat" the points model in about a third of runs.

Leads from the database are held out by their ids (`held_out_point`): the same leads in
every run, so the active learned model, trained on the others, is compared on leads it
never saw. A random split would hand it, in most of a new run's held-out leads, leads it
was trained on: the incumbent would look better than it is and never be replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
# The calibration cross-validates in folds that each need a won and a lost lead, and
# scikit-learn wants at least two folds: fewer training leads of an outcome cannot be fit.
MIN_TRAIN_PER_OUTCOME = 2
# Below this many won (or lost) held-out leads an AUC moves by several hundredths from
# one lead to the next, and no interval is narrow enough to act on.
MIN_HELD_OUT_PER_OUTCOME = 20
DEFAULT_MARGIN = 0.01
DEFAULT_TEST_SIZE = 0.25
MAX_TEST_SIZE = 0.5
DEFAULT_SEED = 0
TOP_FEATURES = 10
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
# Resamples counted at once: bounds memory to a few arrays of this many 8-byte cells.
_BOOTSTRAP_CELLS = 2_000_000

Interval = tuple[float, float]
"""The low and high ends of a 95 % interval."""


@dataclass(frozen=True, slots=True)
class RoutingImpact:
    """How many leads with outcomes the routing rules would send to another team, when
    the scores of the model just activated replace those of the one before."""

    uses_score: bool
    """Whether any routing rule tests the score (otherwise nothing can move)."""
    total: int
    moves: tuple[tuple[str, str, int], ...] = ()
    """(team before, team after, leads), most leads first."""

    @property
    def moved(self) -> int:
        """Leads that would go to another team."""
        return sum(count for _, _, count in self.moves)


@dataclass(frozen=True, slots=True)
class PointsRules:
    """The points model's rules a run compared with: they come from the settings
    (`leads.scoring_rules`, in `cauce.toml` or the environment) or are the built-in ones,
    so which ones is part of what the figures mean."""

    fingerprint: str
    """`scoring.rules_fingerprint`: the same rules give the same one."""
    count: int
    builtin: bool

    @classmethod
    def of(cls, points: PointsModel) -> PointsRules:
        """The rules `points` scores with."""
        return cls(points.fingerprint, len(points.rules), points.builtin)

    def as_dict(self) -> dict[str, Any]:
        """JSON shape (metadata files)."""
        return {"sha256": self.fingerprint, "count": self.count, "builtin": self.builtin}

    def describe(self) -> str:
        """In words, for the report."""
        origin = "built-in" if self.builtin else "from the settings (leads.scoring_rules)"
        return f"{origin}, {self.count} rules, sha256 {self.fingerprint}"


@dataclass(frozen=True, slots=True)
class ActiveComparison:
    """The learned model active at training time, measured on the same held-out leads.

    With leads held out by id, it never saw them. Otherwise (a random split, or a model
    saved before held-out leads were fixed: `may_have_seen`) it may have been trained on
    some of them, which flatters it.
    """

    name: str
    auc: float
    interval: Interval
    """AUC(new model) - AUC(active model)."""
    points_interval: Interval
    """AUC(active model) - AUC(points model)."""
    may_have_seen: bool = False
    """Saved without its held-out share (before they were fixed by id): it may have been
    trained on these leads, so the new model is judged against the points model instead
    (beating a model on leads it learned would be all but impossible)."""


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
    points_interval: Interval = (0.0, 0.0)
    """AUC(new model) - AUC(points model), 95 % paired bootstrap interval."""
    held_out_won: int = 0
    held_out_lost: int = 0
    active: ActiveComparison | None = None
    """The learned model that was active when training started (None: the points model)."""
    version: int | None = None
    activated: bool = False
    active_version: int | None = None
    mlflow_run_id: str | None = None
    tracking_error: str | None = None
    routing: RoutingImpact | None = None
    active_changed: str | None = None
    """The scorer active at publishing, when another than the one compared with."""
    held_out_below: float | None = None
    """Held out: the leads whose `held_out_point` is below this (None: a random split)."""
    points_rules: PointsRules | None = None
    """The points model's rules the new model was compared with."""

    @property
    def beats_points(self) -> bool:
        """Better ranking than the points model by at least the margin, with confidence."""
        return _confidently_better(
            self.auc_learned - self.auc_points, self.points_interval, self.margin
        )

    @property
    def beats_active(self) -> bool:
        """Better than the points model and than the scorer it would replace (the active
        learned model, unless it may have seen the held-out leads), each with confidence:
        a model is activated only if it beats the points model."""
        return not self._shortfalls()

    def _shortfalls(self) -> list[str]:
        """Each comparison the new model fails to win with confidence, in words."""
        bars = [("the points model", self.auc_points, self.points_interval)]
        if self.active is not None and not self.active.may_have_seen:
            bars.append((self.active.name, self.active.auc, self.active.interval))
        failed = []
        for name, auc, (low, high) in bars:
            difference = self.auc_learned - auc
            if _confidently_better(difference, (low, high), self.margin):
                continue
            if difference <= 0 or difference < self.margin:
                failed.append(
                    f"its ROC AUC gain over {name} ({difference:+.3f}) is below the "
                    f"margin ({self.margin:.3f})"
                )
            else:
                failed.append(
                    f"its gain over {name} is not certain: the 95 % interval "
                    f"({low:+.3f} to {high:+.3f}) reaches 0"
                )
        return failed

    @property
    def set_aside(self) -> int:
        """Leads with outcomes neither trained on nor held out: with a larger test share
        than the active model's, those between the two (it was trained on them)."""
        return self.n_won + self.n_lost - self.n_train - self.n_test

    @property
    def compared_with(self) -> str:
        """Every scorer the new model had to beat to be activated."""
        if self.active is None or self.active.may_have_seen:
            return "the points model"
        return f"the points model and {self.active.name}"

    @property
    def capped(self) -> bool:
        """Whether fewer leads were held out than `test_size` asked: only the active
        model's own held-out share, the leads it never saw."""
        return self.held_out_below is not None and self.held_out_below < self.test_size

    @property
    def enough_held_out(self) -> bool:
        """Enough won and lost held-out leads for the comparison to mean something."""
        return min(self.held_out_won, self.held_out_lost) >= MIN_HELD_OUT_PER_OUTCOME

    @property
    def should_activate(self) -> bool:
        """Whether publishing this report makes its model the one that scores new leads."""
        return self.active_changed is None and self.enough_held_out and self.beats_active

    @property
    def replaces(self) -> str:
        """The scorer the new model was measured against to be activated."""
        if self.active is None or self.active.may_have_seen:
            return "the points model"
        return self.active.name

    def why_not(self) -> str | None:
        """Why the model is not activated, in words (None when it should be)."""
        if self.active_changed is not None:
            return (
                f"it was compared with {self.replaces}, but {self.active_changed} became "
                "active meanwhile (train again to compare with it)"
            )
        if not self.enough_held_out:
            # Half the leads held out is the most `cauce leads train --test-size` allows.
            larger_split = min(self.n_won, self.n_lost) * MAX_TEST_SIZE >= MIN_HELD_OUT_PER_OUTCOME
            if not larger_split:
                hint = ""
            elif self.capped:
                hint = (
                    ", or activate the points model (`cauce leads model activate points`) "
                    "and raise --test-size"
                )
            else:
                hint = ", or raise --test-size"
            return (
                f"only {self.held_out_won} won and {self.held_out_lost} lost leads were held "
                f"out, and judging a model needs at least {MIN_HELD_OUT_PER_OUTCOME} of each "
                f"(mark more leads won or lost{hint})"
            )
        return "; and ".join(self._shortfalls()) or None

    def metrics(self) -> dict[str, float]:
        """The figures tracked per run (metadata file and MLflow)."""
        metrics = {
            "auc_learned": self.auc_learned,
            "auc_points": self.auc_points,
            "auc_gain_points_low": self.points_interval[0],
            "auc_gain_points_high": self.points_interval[1],
            "n_train": float(self.n_train),
            "n_test": float(self.n_test),
            "n_test_won": float(self.held_out_won),
            "n_test_lost": float(self.held_out_lost),
        }
        if self.active is not None:
            metrics |= {
                "auc_active": self.active.auc,
                "auc_gain_active_low": self.active.interval[0],
                "auc_gain_active_high": self.active.interval[1],
            }
        return metrics


def _confidently_better(difference: float, interval: Interval, margin: float) -> bool:
    return difference > 0 and difference >= margin and interval[0] > 0


def _aucs(
    won: np.ndarray[Any, Any], lost: np.ndarray[Any, Any], levels: int
) -> np.ndarray[Any, Any]:
    """ROC AUC of each resample (row), from the score levels of its won and lost leads.

    `won` and `lost` hold indices into the sorted distinct scores. AUC is the chance that
    a won lead outscores a lost one, ties counting half (what `roc_auc_score` computes):
    per level, won leads there x (lost leads below + half the lost leads there). Counting
    per level instead of ranking keeps it linear and needs nothing beyond numpy.
    """
    rows = won.shape[0]
    offsets = np.arange(rows)[:, None] * levels
    size = rows * levels
    won_at = np.bincount((won + offsets).ravel(), minlength=size).reshape(rows, levels)
    lost_at = np.bincount((lost + offsets).ravel(), minlength=size).reshape(rows, levels)
    lost_below = np.cumsum(lost_at, axis=1) - lost_at
    pairs = (won_at * (lost_below + 0.5 * lost_at)).sum(axis=1)
    result: np.ndarray[Any, Any] = pairs / (won.shape[1] * lost.shape[1])
    return result


def auc_gain_interval(
    outcomes: Sequence[int],
    new: Sequence[float],
    old: Sequence[float],
    *,
    seed: int = DEFAULT_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Percentile interval of AUC(new) - AUC(old) over paired bootstrap resamples.

    Paired: each resample draws the same leads for both scorers, so what they share
    (which leads happen to be hard) cancels out. Stratified: won and lost leads are drawn
    separately, keeping their counts, so every resample has both outcomes.
    """
    y = np.asarray(outcomes, dtype=bool)
    won, lost = np.flatnonzero(y), np.flatnonzero(~y)
    if won.size == 0 or lost.size == 0:
        raise ValueError("both outcomes are needed to compare rankings")
    # Each lead's score as its level among the distinct scores, per scorer.
    level_values = [np.unique(np.asarray(s, dtype=float), return_inverse=True) for s in (new, old)]
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // (y.size + max(v.size for v, _ in level_values)))
    gains: list[np.ndarray[Any, Any]] = []
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn_won = rng.choice(won, (rows, won.size))
        drawn_lost = rng.choice(lost, (rows, lost.size))
        new_auc, old_auc = (
            _aucs(levels[drawn_won], levels[drawn_lost], values.size)
            for values, levels in level_values
        )
        gains.append(new_auc - old_auc)
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(gains), [tail, 1 - tail])
    return float(low), float(high)


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


def _check_split(y_train: Sequence[int], y_test: Sequence[int], *, won: int, lost: int) -> None:
    """Refuse a split the calibration's cross-validation or the comparison cannot use.

    The calibration cross-validates with as many folds as the rarer outcome has training
    leads (at most `CALIBRATION_FOLDS`): every fold must hold a won and a lost lead, and
    scikit-learn needs at least two folds, so the training part needs at least
    `MIN_TRAIN_PER_OUTCOME` of each. The held-out part needs both outcomes to be ranked.
    """
    train_won = sum(y_train)
    train_lost = len(y_train) - train_won
    test_won = sum(y_test)
    test_lost = len(y_test) - test_won
    if min(train_won, train_lost) < MIN_TRAIN_PER_OUTCOME:
        where = f"the training leads have {train_won} won and {train_lost} lost"
        need = f"at least {MIN_TRAIN_PER_OUTCOME} of each"
    elif min(test_won, test_lost) < 1:
        where = f"the held-out leads have {test_won} won and {test_lost} lost"
        need = "at least one of each"
    else:
        return
    raise NotEnoughOutcomes(
        f"not enough outcomes to train: {where}, and training needs {need} "
        f"(found {won} won and {lost} lost in all); mark more leads won or lost",
        won=won,
        lost=lost,
    )


def held_out_point(lead_id: str) -> float:
    """Where a lead falls in [0, 1), from its id alone: leads below a run's test size are
    held out, in every run and every process alike."""
    digest = hashlib.sha256(lead_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def train(
    examples: Sequence[Example],
    *,
    seed: int = DEFAULT_SEED,
    test_size: float = DEFAULT_TEST_SIZE,
    margin: float = DEFAULT_MARGIN,
    points: PointsModel | None = None,
    active: LearnedModel | None = None,
    lead_ids: Sequence[str] | None = None,
    active_held_out_below: float | None = None,
) -> TrainingReport:
    """Fit the learned model and rank held-out leads with it, the points model and `active`.

    With `lead_ids` (one per example), the leads whose `held_out_point` is below
    `test_size` are held out, and below `active_held_out_below` too when given (the
    active model's own held-out share: it never saw those leads); without, a random split
    stratified on the outcome (`seed`). Every scorer is measured on exactly the same
    held-out leads. The model kept is the one fitted on the training part, so the figures
    describe the model that is saved. `active` is the learned model scoring leads now
    (None: the points model does).
    """
    if not 0 < test_size < 1:
        raise ValueError("test_size must be between 0 and 1")
    if margin < 0:
        raise ValueError("margin must not be negative")
    n_won, n_lost = check_outcomes(examples)
    facts = [f for f, _ in examples]
    labels = [int(outcome) for _, outcome in examples]
    held_out_below: float | None = None
    if lead_ids is not None:
        if len(lead_ids) != len(examples):
            raise ValueError("one lead id per example")
        held_out_below = test_size
        if active is not None and active_held_out_below is not None:
            held_out_below = min(test_size, active_held_out_below)
        points_of = [held_out_point(lead_id) for lead_id in lead_ids]
        test_idx = [i for i, at in enumerate(points_of) if at < held_out_below]
        train_idx = [i for i, at in enumerate(points_of) if at >= test_size]
    else:
        train_idx, test_idx = train_test_split(
            list(range(len(examples))), test_size=test_size, stratify=labels, random_state=seed
        )
    y_train = [labels[i] for i in train_idx]
    y_test = [labels[i] for i in test_idx]
    _check_split(y_train, y_test, won=n_won, lost=n_lost)
    folds = min(CALIBRATION_FOLDS, sum(y_train), len(y_train) - sum(y_train))
    pipeline = build_pipeline(folds=folds)
    pipeline.fit([features_of(facts[i]) for i in train_idx], y_train)
    model = LearnedModel(pipeline)

    held_out = [facts[i] for i in test_idx]
    points_model = points or PointsModel()
    new_scores = model.probabilities(held_out)
    points_scores = [float(points_model.score(f).value) for f in held_out]
    auc_learned = float(roc_auc_score(y_test, new_scores))
    auc_points = float(roc_auc_score(y_test, points_scores))
    comparison = None
    if active is not None:
        active_scores = active.probabilities(held_out)
        comparison = ActiveComparison(
            name=active.name,
            auc=float(roc_auc_score(y_test, active_scores)),
            interval=auc_gain_interval(y_test, new_scores, active_scores, seed=seed),
            points_interval=auc_gain_interval(y_test, active_scores, points_scores, seed=seed),
            may_have_seen=lead_ids is not None and active_held_out_below is None,
        )
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
        points_interval=auc_gain_interval(y_test, new_scores, points_scores, seed=seed),
        held_out_won=sum(y_test),
        held_out_lost=len(y_test) - sum(y_test),
        active=comparison,
        held_out_below=held_out_below,
        points_rules=PointsRules.of(points_model),
    )
