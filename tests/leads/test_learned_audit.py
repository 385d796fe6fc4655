"""Learned scoring, after an audit: the calibration's edges, activation against the points
model, version numbers, and what `cauce leads model` says."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert

from cauce.core.config import Settings
from cauce.core.db import create_database, unit_of_work
from cauce.leads.learned import (
    ModelStore,
    NotEnoughOutcomes,
    TrainingReport,
    publish,
    render_report,
    train,
)
from cauce.leads.learned.training import held_out_point
from cauce.leads.models import Lead
from cauce.leads.scoring import PointsModel
from cauce.leads.synthetic import synthetic_leads, training_examples
from tests.leads.test_learned_activation import first, signal
from tests.test_cli_jobs import restore_logging
from tests.test_cli_leads import cauce_here

__all__ = ["first", "restore_logging", "signal"]  # fixtures, used by name

IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"cauce-audit-lead-{n}")) for n in range(400)]


def _one_in_training(won_is_rare: bool) -> list[bool]:
    """Outcomes of the 400 `IDS` leads: 15 of the rarer outcome held out, one trained on."""
    held = [n for n, i in enumerate(IDS) if held_out_point(i) < 0.25]
    trained = [n for n, i in enumerate(IDS) if held_out_point(i) >= 0.25]
    rare = set(held[:15]) | {trained[0]}
    return [(n in rare) == won_is_rare for n in range(len(IDS))]


# -- 1. the calibration's cross-validation needs two of each outcome in training -------------


@pytest.mark.parametrize("won_is_rare", [True, False])
def test_one_lead_of_an_outcome_in_training_is_refused_not_a_traceback(won_is_rare: bool) -> None:
    """A single won (or lost) training lead cannot be cross-validated (scikit-learn wants
    two folds): it is `NotEnoughOutcomes`, as too few outcomes are, not scikit-learn's
    InvalidParameterError."""
    facts = [lead.facts() for lead in synthetic_leads(len(IDS), seed=3)]
    outcomes = _one_in_training(won_is_rare)
    with pytest.raises(NotEnoughOutcomes, match="training needs at least 2 of each"):
        train(list(zip(facts, outcomes, strict=True)), lead_ids=IDS)
    two = outcomes.copy()
    trained = [n for n, i in enumerate(IDS) if held_out_point(i) >= 0.25]
    two[trained[1]] = won_is_rare  # a second one: two folds, each with both outcomes
    assert train(list(zip(facts, two, strict=True)), lead_ids=IDS).n_test > 0


async def _insert(settings: Settings, outcomes: list[bool]) -> None:
    db = create_database(settings)
    try:
        leads = synthetic_leads(len(outcomes), seed=3)
        rows = [
            {"id": n + 1, "uid": IDS[n], **lead.fields, "status": "won" if won else "lost"}
            for n, (lead, won) in enumerate(zip(leads, outcomes, strict=True))
        ]
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(insert(Lead), rows)
    finally:
        await db.dispose()


def test_train_command_refuses_one_won_training_lead_in_one_line(
    tmp_path: Path, settings: Settings, database_url: str, restore_logging: None
) -> None:
    """`cauce leads train` says there are not enough outcomes, exit 1, no traceback."""
    asyncio.run(_insert(settings, _one_in_training(won_is_rare=True)))
    refused = cauce_here(tmp_path, "leads", "train", CAUCE_DATABASE_URL=database_url)
    assert refused.exit_code == 1, refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert "not enough outcomes" in line
    assert "training leads have 1 won" in line
    assert ModelStore.for_data_dir(tmp_path / "data").versions() == []


# -- 2. activated only if it beats the points model too --------------------------------------


def test_a_model_that_beats_the_active_one_but_not_points_is_not_activated(
    tmp_path: Path,
) -> None:
    """A coin-flip model is active; outcomes follow the points model. A new model beats the
    coin-flip one but not the points model: it is saved, not activated, and the report
    says the comparison with the points model failed."""
    store = ModelStore.for_data_dir(tmp_path)
    leads = synthetic_leads(800, seed=4)
    noise = random.Random(4)
    store.save(train([(lead.facts(), noise.random() < 0.3) for lead in leads], seed=4))
    store.activate(1)
    points = PointsModel()
    by_points = [(lead.facts(), points.score(lead.facts()).value >= 40) for lead in leads]
    report = train(by_points, seed=4, active=store.load_active())
    assert report.active is not None
    assert report.auc_learned - report.active.auc >= report.margin  # beats learned-v1...
    assert report.points_interval[1] < 0  # ...not the points model
    assert not report.should_activate
    published = publish(report, store)
    assert (published.version, published.activated, store.active_version()) == (2, False, 1)
    why = published.why_not() or ""
    assert "over the points model" in why
    assert "learned-v1" not in why  # that comparison it won
    text = render_report(published)
    assert "learned-v1 stays active" in text
    assert "Warning             learned-v1 ranks these held-out leads worse" in text


def test_beating_both_names_both(tmp_path: Path) -> None:
    """A model that beats the points model and a weaker active one says it beat both."""
    store = ModelStore.for_data_dir(tmp_path)
    weak = train(training_examples(synthetic_leads(800, seed=9))[:120], seed=9)
    store.activate(store.save(weak).version or 0)
    signal = training_examples(synthetic_leads(800, seed=1))
    report = train(signal, seed=1, active=store.load_active())
    assert report.compared_with == "the points model and learned-v1"
    assert report.should_activate
    assert "beats the points model and learned-v1 with confidence" in render_report(report)
    published = publish(report, store)
    assert published.activated
    assert store.metadata(2)["compared_with"] == "the points model and learned-v1"


# -- 3. `learned-v3` is a version name the CLI takes ------------------------------------------


def test_activate_takes_the_name_the_report_prints(
    first: TrainingReport, tmp_path: Path, restore_logging: None
) -> None:
    """`learned-v2` (the API's `score_model`, the report's name) is accepted, as 2 and v2."""
    store = ModelStore.for_data_dir(tmp_path / "data")
    store.save(first)
    store.save(first)
    for name, version in (("learned-v2", 2), ("LEARNED-V1", 1), ("v2", 2), ("1", 1)):
        chosen = cauce_here(tmp_path, "leads", "model", "activate", name)
        assert chosen.exit_code == 0, (name, chosen.output)
        assert store.active_version() == version
    assert cauce_here(tmp_path, "leads", "model", "activate", "learned-2").exit_code == 2


# -- 4. a version number is never given twice -------------------------------------------------


def test_a_deleted_versions_number_is_not_given_again(
    first: TrainingReport, tmp_path: Path
) -> None:
    """Deleting the newest version's files does not free its number: leads and MLflow runs
    already name a model by it."""
    store = ModelStore.for_data_dir(tmp_path)
    assert [store.save(first).version for _ in range(3)] == [1, 2, 3]
    store.artefact_path(3).unlink()
    store.metadata_path(3).unlink()
    assert store.save(first).version == 4
    for version in (2, 4):
        store.artefact_path(version).unlink()
        store.metadata_path(version).unlink()
    assert store.versions() == [1]
    assert store.save(first).version == 5
    assert (store.root / "claimed").stat().st_mode & 0o777 == 0o600


# -- 5. `model list` and `model activate` say what processes will do --------------------------


@pytest.mark.parametrize("damage", ["artefact", "metadata", "pointer"])
def test_list_says_when_the_active_model_cannot_load(
    first: TrainingReport, tmp_path: Path, damage: str, restore_logging: None
) -> None:
    """An active model whose files are gone (or a pointer to a version never saved) is not
    "scoring new leads": the list says it cannot load, how to recover, and exits 1."""
    store = ModelStore.for_data_dir(tmp_path / "data")
    store.save(first)
    store.save(first)
    store.activate(2)
    if damage == "artefact":
        store.artefact_path(2).unlink()
    elif damage == "metadata":
        store.metadata_path(2).unlink()
    else:
        (store.root / "active").write_text("v9\n")
    listed = cauce_here(tmp_path, "leads", "model", "list")
    assert listed.exit_code == 1, listed.output
    assert "new leads are scored by" not in listed.stdout
    assert listed.stdout.startswith("  v1    ROC AUC learned")
    (line,) = [x for x in listed.stderr.splitlines() if x.startswith("error:")]
    assert f"learned-v{9 if damage == 'pointer' else 2} cannot load" in line
    assert "`cauce leads model activate points`" in line
    assert f"`cauce leads model activate {2 if damage == 'pointer' else 1}`" in line
    assert "`cauce worker`" in line


def test_activate_says_serve_and_workers_must_restart(
    first: TrainingReport, tmp_path: Path, restore_logging: None
) -> None:
    """Workers score CSV imports: they keep their model until restarted, like `serve`."""
    ModelStore.for_data_dir(tmp_path / "data").save(first)
    for name in ("1", "points"):
        chosen = cauce_here(tmp_path, "leads", "model", "activate", name)
        assert chosen.exit_code == 0, chosen.output
        assert "every `cauce serve` and every `cauce worker`" in chosen.stdout


# -- 6. a larger --test-size than the active model's ------------------------------------------


def test_a_capped_test_size_is_reported_and_the_counts_add_up() -> None:
    """The held-out share stays the active model's (leads neither model saw); the report
    says so, and its counts add up."""
    examples = training_examples(synthetic_leads(800, seed=2))
    ids = [f"lead-{n}" for n in range(len(examples))]
    active = train(examples, seed=1, lead_ids=ids)
    wider = train(
        examples,
        seed=9,
        test_size=0.4,
        lead_ids=ids,
        active=active.model.with_version(1),
        active_held_out_below=active.held_out_below,
    )
    assert wider.capped
    between = sum(0.25 <= held_out_point(i) < 0.4 for i in ids)
    assert wider.set_aside == between > 0
    assert wider.n_train + wider.n_test + wider.set_aside == wider.n_won + wider.n_lost
    text = render_report(wider)
    first_line = text.splitlines()[0]
    assert f"{len(examples)} leads with outcomes" in first_line
    assert f"{between} set aside" in first_line
    assert "Held out            kept at 0.25, learned-v1's own share (--test-size 0.40" in text
    assert not active.capped
    assert "set aside" not in render_report(active)
