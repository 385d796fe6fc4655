"""CLI commands of the leads context and the demo: `cauce demo`, `cauce leads train|model`.

Mounted by `cauce.cli`; the helpers for settings and errors are passed in so this module
does not import the CLI root (which imports it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from cauce.core.config import Settings

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, Any]], Any]
Failer = Callable[[str, int], typer.Exit]
POINTS = "points"
_VERSION = re.compile(r"v?([1-9][0-9]{0,8})")


def build_leads_app(
    settings_of: Callable[[], Settings], run: Runner, out: Console, fail: Failer
) -> typer.Typer:
    """`cauce leads ...`."""
    leads_app = typer.Typer(help="Leads: scoring models.", no_args_is_help=True)
    model_app = typer.Typer(
        help="The learned scoring model's saved versions and which one scores new leads.",
        no_args_is_help=True,
    )
    leads_app.add_typer(model_app, name="model")

    @leads_app.command("train")
    def train(
        margin: Annotated[
            float,
            typer.Option(
                min=0.0,
                max=1.0,
                help="ROC AUC the new model must gain over the active scorer to be used",
            ),
        ] = 0.01,
        test_size: Annotated[
            float, typer.Option(min=0.05, max=0.5, help="Share of won/lost leads held out")
        ] = 0.25,
        seed: Annotated[
            int,
            typer.Option(help="Seed for the folds and the bootstrap (held-out leads go by id)"),
        ] = 0,
    ) -> None:
        """Train the learned scoring model on won/lost leads; use it only if it ranks held-out
        leads better than the active scorer (points or learned) with confidence."""
        from cauce.core.db import create_database
        from cauce.core.db.migrate import prepare_schema
        from cauce.leads.learned import render_report, train_from_database

        settings = settings_of()

        async def go() -> Any:
            db = create_database(settings)
            try:
                await prepare_schema(db, settings)
                return await train_from_database(
                    db.sessionmaker, settings, seed=seed, test_size=test_size, margin=margin
                )
            finally:
                await db.dispose()

        report = run(go())
        # soft_wrap: Rich would cut lines at 80 columns when stdout is not a terminal.
        out.print(render_report(report), highlight=False, markup=False, soft_wrap=True)
        if report.tracking_error is not None:
            raise fail(
                f"MLflow did not record the run: version {report.version} is saved, not "
                "activated (see the report above)",
                1,
            )

    def guarded(call: Callable[[], T]) -> T:
        """Run a model-store call; its errors are one line, not a traceback."""
        from cauce.core.errors import CauceError

        try:
            return call()
        except CauceError as exc:
            raise fail(exc.detail, 1) from None

    @model_app.command("list")
    def model_list() -> None:
        """List the saved versions with their held-out figures; mark the active one."""
        from cauce.leads.learned import ModelArtefactInvalid, ModelStore, ModelStoreUnavailable
        from cauce.leads.learned.model import versioned_name

        store = ModelStore.for_data_dir(settings_of().data_dir)

        def pointer() -> tuple[int | None, str]:
            try:
                return store.active_version(), ""
            except ModelArtefactInvalid as exc:  # listed anyway: this is how to recover
                return None, exc.detail

        active, refused = guarded(pointer)
        lines = []
        for version in guarded(store.versions):
            try:
                meta = store.metadata(version)
                metrics = meta.get("metrics") or {}
                figures = (
                    f"ROC AUC learned {float(metrics['auc_learned']):.3f}, "
                    f"points {float(metrics['auc_points']):.3f}, on "
                    f"{int(metrics['n_test'])} held-out leads; saved {meta.get('created_at')}"
                )
                store.load(version)  # the same checks as activation and start-up
            except (ModelArtefactInvalid, ModelStoreUnavailable) as exc:
                figures = f"refused: {exc.detail}"
            except (KeyError, TypeError, ValueError) as exc:
                figures = f"unreadable metrics ({exc!r})"
            lines.append(f"{'*' if version == active else ' '} v{version:<4} {figures}")
        if refused:
            lines.append(
                f"no model can score new leads: {refused}; `cauce serve` refuses to start "
                "until `cauce leads model activate` names a version or `points`"
            )
        else:
            scorer = versioned_name(active) if active is not None else "the points model"
            lines.append(f"new leads are scored by {scorer}")
        out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)

    @model_app.command("activate")
    def model_activate(
        version: Annotated[
            str, typer.Argument(help="A saved version (3 or v3), or `points` for the points model")
        ],
    ) -> None:
        """Choose what scores new leads: a saved version (its checks must pass) or the points
        model. Running `cauce serve` processes keep their model until restarted."""
        from cauce.leads.learned import ModelStore
        from cauce.leads.learned.model import versioned_name

        text = version.strip().casefold()
        match = _VERSION.fullmatch(text)
        if text != POINTS and match is None:
            raise fail(f"{version!r} is neither a saved version (3, v3) nor `points`", 2)
        store = ModelStore.for_data_dir(settings_of().data_dir)
        if match is None:
            guarded(store.deactivate)
            chosen = "the points model"
        else:
            number = int(match.group(1))
            guarded(lambda: store.activate(number))
            chosen = versioned_name(number)
        out.print(
            f"{chosen} now scores new leads; restart `cauce serve` to load it",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    return leads_app


def demo_command(out: Console) -> Callable[..., None]:
    """`cauce demo`."""

    def demo(
        leads: Annotated[
            int, typer.Option(min=100, max=20_000, help="How many leads to send")
        ] = 3000,
        seed: Annotated[int, typer.Option(help="Seed of the generated leads and faults")] = 7,
        data_dir: Annotated[
            Path | None, typer.Option(help="Where to keep the demo's data (default: a temp dir)")
        ] = None,
    ) -> None:
        """Run Cauce end to end against a faulty sandbox CRM; exit 0 if every lead is there once."""
        from cauce.demo import run_demo

        ok = asyncio.run(run_demo(count=leads, seed=seed, data_dir=data_dir, console=out))
        raise typer.Exit(0 if ok else 1)

    return demo
