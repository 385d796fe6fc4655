"""The learned lead-scoring model (`cauce leads train`, `cauce leads model`).

A calibrated logistic regression over the points model's facts, trained on leads whose
outcome is known, compared on held-out leads with the scorer active now (the points
model or an earlier learned model), saved as a versioned artefact and activated only
when it ranks leads better with confidence. It scores in the points model's `Score`
shape, with the features that moved each lead's score most as its reasons.
"""

from cauce.leads.learned.errors import (
    ModelArtefactInvalid,
    ModelStoreUnavailable,
    NotEnoughOutcomes,
    TrackingFailed,
)
from cauce.leads.learned.features import describe, features_of, seniority
from cauce.leads.learned.impact import routing_impact
from cauce.leads.learned.model import FeatureWeight, LearnedModel
from cauce.leads.learned.report import render_report
from cauce.leads.learned.runs import labelled_examples, publish, train_from_database
from cauce.leads.learned.store import ModelStore, load_active
from cauce.leads.learned.training import (
    DEFAULT_MARGIN,
    MIN_EXAMPLES,
    MIN_HELD_OUT_PER_OUTCOME,
    MIN_PER_OUTCOME,
    ActiveComparison,
    Example,
    PointsRules,
    RoutingImpact,
    TrainingReport,
    auc_gain_interval,
    train,
)

__all__ = [
    "DEFAULT_MARGIN",
    "MIN_EXAMPLES",
    "MIN_HELD_OUT_PER_OUTCOME",
    "MIN_PER_OUTCOME",
    "ActiveComparison",
    "Example",
    "FeatureWeight",
    "LearnedModel",
    "ModelArtefactInvalid",
    "ModelStore",
    "ModelStoreUnavailable",
    "NotEnoughOutcomes",
    "PointsRules",
    "RoutingImpact",
    "TrackingFailed",
    "TrainingReport",
    "auc_gain_interval",
    "describe",
    "features_of",
    "labelled_examples",
    "load_active",
    "publish",
    "render_report",
    "routing_impact",
    "seniority",
    "train",
    "train_from_database",
]
