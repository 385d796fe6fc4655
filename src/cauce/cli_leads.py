"""CLI commands of the leads context and the demo: `cauce demo`, `cauce leads train`.

Mounted by `cauce.cli`; the helpers for settings and errors are passed in so this module
does not import the CLI root (which imports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from cauce.core.config import Settings

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def build_leads_app(settings_of: Callable[[], Settings], run: Runner, out: Console) -> typer.Typer:
    """`cauce leads ...`."""
    leads_app = typer.Typer(help="Leads: scoring models.", no_args_is_help=True)

    @leads_app.command("train")
    def train(
        margin: Annotated[
            float,
            typer.Option(
                min=0.0,
                max=1.0,
                help="ROC AUC the learned model must gain over the points model to be used",
            ),
        ] = 0.01,
        test_size: Annotated[
            float, typer.Option(min=0.05, max=0.5, help="Share of won/lost leads held out")
        ] = 0.25,
        seed: Annotated[int, typer.Option(help="Seed for the split and the folds")] = 0,
    ) -> None:
        """Train the learned scoring model on won/lost leads; use it only if it wins."""
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

        out.print(render_report(run(go())), highlight=False, markup=False)

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
