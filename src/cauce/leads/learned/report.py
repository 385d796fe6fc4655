"""The training report as plain text for `cauce leads train`."""

from __future__ import annotations

from cauce.leads.learned.model import versioned_name
from cauce.leads.learned.training import Interval, TrainingReport

_LABEL_WIDTH = 20


def _row(label: str, text: str) -> str:
    return f"  {label:<{_LABEL_WIDTH}}{text}"


def _gain(difference: float, interval: Interval) -> str:
    low, high = interval
    return f"difference {difference:+.3f}, 95 % interval {low:+.3f} to {high:+.3f}"


def _active_name(report: TrainingReport) -> str:
    if report.active_version is None:
        return "the points model"
    return versioned_name(report.active_version)


def _verdict(report: TrainingReport) -> str:
    why = report.why_not()
    if report.version is None:  # trained, not published
        if why is None:
            return f"beats {report.compared_with} with confidence: it would be activated"
        return f"would not be activated: {why}"
    if report.activated:
        return f"activated: {report.model.name} now scores new leads, in place of {report.replaces}"
    stays = f"{_active_name(report)} stays active"
    if report.tracking_error is not None and why is None:
        return (
            "not activated: MLflow did not record the run, and an active model always has "
            f"its run recorded; {stays} (it beat {report.compared_with}: to use it untracked, "
            f"run `cauce leads model activate {report.version}`)"
        )
    return f"not activated: {why}; {stays}"


def _worse_than_points(report: TrainingReport) -> tuple[str, Interval] | None:
    """The learned model now active, when the points model ranks held-out leads better."""
    if report.activated:
        if report.points_interval[1] < 0:
            return report.model.name, report.points_interval
        return None
    active = report.active
    # Only while the model compared is still the active one.
    if active is not None and active.name == _active_name(report) and active.points_interval[1] < 0:
        return active.name, active.points_interval
    return None


def _scale_notes(report: TrainingReport) -> list[str]:
    """What changes for users when a learned model replaces the points model."""
    lines: list[str] = []
    if report.activated and report.active is None:
        lines.append(
            _row(
                "Scores now",
                "mean the estimated chance of winning x 100, no longer a sum of rule points; "
                "reasons are the features that moved a lead's score most, and do not add up "
                "to it",
            )
        )
    routing = report.routing
    if report.activated and routing is not None:
        if not routing.uses_score:
            text = "no routing rule tests the score (min_score, max_score): teams do not change"
        elif not routing.moved:
            text = f"none of the {routing.total} leads with outcomes would change team"
        else:
            moves = ", ".join(f"{a} -> {b} {n}" for a, b, n in routing.moves[:4])
            more = ", ..." if len(routing.moves) > 4 else ""
            text = (
                f"{routing.moved} of the {routing.total} leads with outcomes would go to "
                f"another team under the new scores ({moves}{more}): check min_score and "
                "max_score in leads.routing_rules"
            )
        lines.append(_row("Routing", text))
    return lines


def render_report(
    report: TrainingReport, *, settings_file: str | None = None, data_dir: str | None = None
) -> str:
    """The report as plain text for the CLI (one line per fact: never wrap it).

    `settings_file` says where the settings came from (the points rules, the routing rules
    of the routing impact: `cauce leads train` reads the `cauce.toml` of the directory it
    runs in), `data_dir` where the model was saved."""
    total = report.n_won + report.n_lost
    aside = f"; {report.set_aside} set aside" if report.set_aside else ""
    lines = [
        f"Lead scoring: {report.model.name} trained on {report.n_train} leads, "
        f"evaluated on {report.n_test} held out ({report.held_out_won} won, "
        f"{report.held_out_lost} lost); {total} leads with outcomes ({report.n_won} won, "
        f"{report.n_lost} lost{aside}).",
        "",
    ]
    if settings_file is not None:
        lines.append(_row("Settings file", settings_file))
    if data_dir is not None:
        lines.append(_row("Data directory", data_dir))
    if report.points_rules is not None:
        lines.append(_row("Points rules", report.points_rules.describe()))
    lines += [
        _row(
            "ROC AUC, held out",
            f"learned {report.auc_learned:.3f}   points {report.auc_points:.3f}   "
            f"({_gain(report.auc_learned - report.auc_points, report.points_interval)}; "
            f"margin {report.margin:.3f})",
        ),
    ]
    if report.active is not None:
        lines.append(
            _row(
                "Active at training",
                f"{report.active.name} {report.active.auc:.3f}   "
                f"({_gain(report.auc_learned - report.active.auc, report.active.interval)})",
            )
        )
        if report.capped and report.held_out_below is not None:
            lines.append(
                _row(
                    "Held out",
                    f"kept at {report.held_out_below:.2f}, {report.active.name}'s own share "
                    f"(--test-size {report.test_size:.2f} asked): it was trained on the other "
                    "leads, so both models are compared on leads neither saw; the "
                    f"{report.set_aside} leads between the two shares are neither trained on "
                    "nor held out",
                )
            )
        if report.active.may_have_seen:
            lines.append(
                _row(
                    "Note",
                    f"{report.active.name} was saved before held-out leads were fixed by "
                    "id and may have been trained on these: the new model is judged "
                    "against the points model",
                )
            )
    lines.append(_row("Result", _verdict(report)))
    if report.version is not None:
        lines.append(_row("Saved as", f"version {report.version}"))
    if report.mlflow_run_id:
        lines.append(_row("MLflow run", report.mlflow_run_id))
    if report.tracking_error is not None:
        lines.append(_row("MLflow", report.tracking_error))
    if (worse := _worse_than_points(report)) is not None:
        name, (low, high) = worse
        lines.append(
            _row(
                "Warning",
                f"{name} ranks these held-out leads worse than the points model (95 % "
                f"interval {low:+.3f} to {high:+.3f}): go back to the points model with "
                "`cauce leads model activate points`",
            )
        )
    lines += _scale_notes(report)
    lines += ["", "  Top features (change in log-odds of winning)"]
    width = max((len(fw.feature) for fw in report.top_features), default=0)
    lines += [
        f"    {fw.weight:+6.2f}  {fw.feature:<{width}}  {fw.description}"
        for fw in report.top_features
    ]
    return "\n".join(lines)
