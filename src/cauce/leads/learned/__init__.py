"""The learned lead-scoring model (`cauce leads train`).

A calibrated logistic regression over the points model's facts, trained on leads whose
outcome is known, compared with the points model on held-out leads, saved as a versioned
artefact and activated only when it ranks leads better. It scores in the points model's
`Score` shape, with the features that moved each lead's score as its reasons.
"""

from cauce.leads.learned.errors import ModelArtefactInvalid, NotEnoughOutcomes, TrackingFailed
from cauce.leads.learned.features import describe, features_of, seniority
from cauce.leads.learned.model import FeatureWeight, LearnedModel
from cauce.leads.learned.runs import labelled_examples, publish, train_from_database
from cauce.leads.learned.store import ModelStore, load_active
from cauce.leads.learned.training import (
    DEFAULT_MARGIN,
    MIN_EXAMPLES,
    MIN_PER_OUTCOME,
    Example,
    TrainingReport,
    render_report,
    train,
)

__all__ = [
    "DEFAULT_MARGIN",
    "MIN_EXAMPLES",
    "MIN_PER_OUTCOME",
    "Example",
    "FeatureWeight",
    "LearnedModel",
    "ModelArtefactInvalid",
    "ModelStore",
    "NotEnoughOutcomes",
    "TrackingFailed",
    "TrainingReport",
    "describe",
    "features_of",
    "labelled_examples",
    "load_active",
    "publish",
    "render_report",
    "seniority",
    "train",
    "train_from_database",
]
