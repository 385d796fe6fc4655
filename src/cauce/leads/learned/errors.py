"""Errors of the learned scoring model (each with a stable code, DESIGN.md §4.4)."""

from __future__ import annotations

from cauce.core.errors import Conflict, ServiceUnavailable
from cauce.leads.errors import LeadsError


class NotEnoughOutcomes(LeadsError, Conflict):
    """Too few leads with a known outcome (won or lost) to train and evaluate a model."""

    code = "lead_scoring_not_enough_outcomes"
    title = "Not enough won and lost leads to train a scoring model"


class ModelArtefactInvalid(LeadsError):
    """A stored model is missing, altered (checksum mismatch) or holds unexpected types."""

    code = "lead_scoring_model_invalid"
    title = "The stored lead-scoring model cannot be trusted"


class ModelStoreUnavailable(LeadsError, ServiceUnavailable):
    """The model store's directory or files cannot be read or written (a file-system error)."""

    code = "lead_scoring_store_unavailable"
    title = "The lead-scoring model store cannot be used"


class TrackingFailed(LeadsError, ServiceUnavailable):
    """MLflow refused or could not record the training run."""

    code = "lead_scoring_tracking_failed"
    title = "The training run could not be recorded in MLflow"
