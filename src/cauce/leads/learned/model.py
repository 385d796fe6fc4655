"""The learned model: a calibrated logistic regression over `features_of`, read back as reasons.

Why logistic regression (inside `CalibratedClassifierCV`, sigmoid) rather than gradient
boosting: the features are a few dozen one-hot and boolean facts, where a linear model
ranks about as well as trees and needs far fewer won/lost leads to stay stable; and a
linear model explains itself exactly. With `ensemble=False` the calibrator is fitted on
cross-validated predictions and wraps ONE logistic regression fitted on all training
rows, and a sigmoid calibration is affine in that model's log-odds, so the whole model
stays one logistic function: probability = sigmoid(b + sum(w_j * x_j)). A feature's
contribution to a lead is then w_j * x_j, with no SHAP-style approximation. Sigmoid
(Platt) calibration rather than isotonic: isotonic overfits below about a thousand rows,
and the training sets here start at fifty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
from sklearn.feature_extraction import DictVectorizer  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

from cauce.leads.learned.errors import ModelArtefactInvalid
from cauce.leads.learned.features import describe, features_of
from cauce.leads.scoring import MAX_SCORE, MIN_SCORE, Reason, Score

MODEL_PREFIX = "learned"
TOP_REASONS = 5
CALIBRATION_FOLDS = 5
# L2 strength of the logistic regression: mild, the vocabulary is small and binary.
REGULARISATION_C = 1.0


@dataclass(frozen=True, slots=True)
class FeatureWeight:
    """One feature's weight: the change in log-odds of winning when the feature is 1."""

    feature: str
    weight: float
    description: str

    def as_dict(self) -> dict[str, Any]:
        """JSON shape (metadata files, MLflow, the API)."""
        return {"feature": self.feature, "weight": self.weight, "description": self.description}


def versioned_name(version: int) -> str:
    """A saved model's name, as `score_model` shows it: `learned-v3`."""
    return f"{MODEL_PREFIX}-v{version}"


def build_pipeline(*, folds: int = CALIBRATION_FOLDS) -> Any:
    """An unfitted pipeline: feature dicts -> sparse matrix -> calibrated classifier."""
    classifier = CalibratedClassifierCV(
        LogisticRegression(C=REGULARISATION_C, max_iter=1000),
        method="sigmoid",
        cv=folds,
        ensemble=False,
    )
    return Pipeline([("features", DictVectorizer(sparse=True)), ("classifier", classifier)])


def _sigmoid(logit: float) -> float:
    # Written to never overflow for large |logit|.
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)


class LearnedModel:
    """A fitted pipeline with its version, scoring leads in the points model's `Score` shape."""

    def __init__(self, pipeline: Any, *, version: int | None = None) -> None:
        self.pipeline = pipeline
        self.version = version
        # When this process loaded it (`GET /v1/leads/scoring/model` says so).
        self.loaded_at = datetime.now(UTC)
        try:
            vectorizer = pipeline.named_steps["features"]
            calibrated = pipeline.named_steps["classifier"].calibrated_classifiers_
            (only,) = calibrated
            (calibrator,) = only.calibrators
            coef = np.asarray(only.estimator.coef_, dtype=float).ravel()
            intercept = float(np.asarray(only.estimator.intercept_, dtype=float).ravel()[0])
            a, b = float(calibrator.a_), float(calibrator.b_)
            names = tuple(str(name) for name in vectorizer.get_feature_names_out())
            vocabulary: dict[str, int] = {str(k): int(v) for k, v in vectorizer.vocabulary_.items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelArtefactInvalid(f"not a fitted lead-scoring pipeline: {exc}") from exc
        if len(names) != coef.size:
            raise ModelArtefactInvalid("feature names and coefficients disagree")
        # Platt scaling gives p = 1 / (1 + exp(a * f + b)) on the regression's log-odds f,
        # so the calibrated log-odds are -(a * f + b): fold a and b into the weights.
        self._weights = -a * coef
        self._intercept = -(a * intercept + b)
        self._vocabulary = vocabulary
        self.feature_names = names

    @property
    def name(self) -> str:
        """`learned-v<N>` once saved in the store."""
        return versioned_name(self.version) if self.version is not None else MODEL_PREFIX

    def with_version(self, version: int) -> LearnedModel:
        """The same model, named after its version in the store."""
        return LearnedModel(self.pipeline, version=version)

    def weights(self) -> dict[str, float]:
        """Every feature's weight in calibrated log-odds."""
        return {name: float(self._weights[i]) for i, name in enumerate(self.feature_names)}

    def top_features(self, n: int = 10) -> tuple[FeatureWeight, ...]:
        """The n features with the largest weights, in either direction."""
        ranked = sorted(self.weights().items(), key=lambda item: (-abs(item[1]), item[0]))
        return tuple(FeatureWeight(name, w, describe(name)) for name, w in ranked[:n])

    def _contributions(self, facts: Mapping[str, Any]) -> dict[str, float]:
        contributions = {}
        for name, value in features_of(facts).items():
            index = self._vocabulary.get(name)
            # A feature never seen in training has no weight: it contributes nothing.
            if index is not None and value:
                contributions[name] = float(self._weights[index]) * value
        return contributions

    def probability(self, facts: Mapping[str, Any]) -> float:
        """The calibrated probability that this lead is won."""
        return _sigmoid(self._intercept + sum(self._contributions(facts).values()))

    def probabilities(self, facts: Sequence[Mapping[str, Any]]) -> list[float]:
        """Calibrated probabilities for many leads at once (through scikit-learn)."""
        if not facts:
            return []
        proba = self.pipeline.predict_proba([features_of(f) for f in facts])
        return [float(p) for p in proba[:, 1]]

    def score(self, facts: Mapping[str, Any], *, top: int = TOP_REASONS) -> Score:
        """Score 0..100 (probability x 100) with the features that moved it most for this lead.

        A reason's points are how much lower (or higher) the score would be without that
        feature, all else equal; they are ranked by the size of the feature's log-odds
        contribution (weight x value).
        """
        contributions = self._contributions(facts)
        logit = self._intercept + sum(contributions.values())
        probability = _sigmoid(logit)
        ranked = sorted(contributions.items(), key=lambda item: (-abs(item[1]), item[0]))
        reasons: list[Reason] = []
        for feature, contribution in ranked:
            if len(reasons) == top:
                break
            points = round(100 * (probability - _sigmoid(logit - contribution)))
            if points:
                reasons.append(Reason(feature, points, describe(feature)))
        value = max(MIN_SCORE, min(MAX_SCORE, round(100 * probability)))
        return Score(value, self.name, tuple(reasons))
