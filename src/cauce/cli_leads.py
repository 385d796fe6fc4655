"""CLI commands of the leads context and the demo: `cauce demo`, `cauce leads
train|model|recheck|erasures`.

Mounted by `cauce.cli`; the helpers for settings and errors are passed in so this module
does not import the CLI root (which imports it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from cauce.core.config import Settings
    from cauce.leads.service import LeadsRuntime

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, Any]], Any]
Failer = Callable[[str, int], typer.Exit]
POINTS = "points"
# A saved version as the report and the API name it (`learned-v3`), or short (`v3`, `3`).
_VERSION = re.compile(r"(?:learned-v|v)?([1-9][0-9]{0,8})")
RESTART = (
    "running processes keep the model they started with: restart every `cauce serve` and "
    "every `cauce worker` (workers score CSV imports) to load it"
)


def build_leads_app(
    settings_of: Callable[[], Settings], run: Runner, out: Console, fail: Failer
) -> typer.Typer:
    """`cauce leads ...`."""
    leads_app = typer.Typer(
        help="Leads: scoring models, stored leads read again under today's rules, and the "
        "erasures the CRM still owes.",
        no_args_is_help=True,
    )
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
        text = render_report(
            report, settings_file=_settings_file(), data_dir=str(settings.data_dir.resolve())
        )
        # soft_wrap: Rich would cut lines at 80 columns when stdout is not a terminal.
        out.print(text, highlight=False, markup=False, soft_wrap=True)
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
        saved = guarded(store.versions)
        loadable = []
        if active is not None and active not in saved:  # a file of it is gone
            try:
                store.load(active)
            except (ModelArtefactInvalid, ModelStoreUnavailable) as exc:
                refused = f"{versioned_name(active)} cannot load ({exc.detail})"
        for version in saved:
            try:
                store.load(version)  # the same checks as activation and start-up
                loadable.append(version)
                meta = store.metadata(version)
                metrics = meta.get("metrics") or {}
                figures = (
                    f"ROC AUC learned {float(metrics['auc_learned']):.3f}, "
                    f"points {float(metrics['auc_points']):.3f}, on "
                    f"{int(metrics['n_test'])} held-out leads; saved {meta.get('created_at')}"
                )
            except (ModelArtefactInvalid, ModelStoreUnavailable) as exc:
                figures = f"refused: {exc.detail}"
                if version == active:
                    refused = f"{versioned_name(version)} cannot load ({exc.detail})"
            except (KeyError, TypeError, ValueError) as exc:
                figures = f"unreadable metrics ({exc!r})"
            lines.append(f"{'*' if version == active else ' '} v{version:<4} {figures}")
        if not refused:
            scorer = versioned_name(active) if active is not None else "the points model"
            lines.append(f"new leads are scored by {scorer}")
        if lines:
            out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
        if refused:
            others = [v for v in loadable if v != active]
            another = f" or another saved version (`cauce leads model activate {others[-1]}`)"
            raise fail(
                f"no model can score new leads: {refused}; `cauce serve` and `cauce worker` "
                "refuse to start until you run `cauce leads model activate points`"
                f"{another if others else ''}",
                1,
            )

    @model_app.command("activate")
    def model_activate(
        version: Annotated[
            str,
            typer.Argument(
                help="A saved version (3, v3 or learned-v3), or `points` for the points model"
            ),
        ],
    ) -> None:
        """Choose what scores new leads: a saved version (its checks must pass) or the points
        model. Running `cauce serve` and `cauce worker` processes keep their model until
        restarted."""
        from cauce.leads.learned import ModelStore
        from cauce.leads.learned.model import versioned_name

        text = version.strip().casefold()
        match = _VERSION.fullmatch(text)
        if text != POINTS and match is None:
            raise fail(
                f"{version!r} is neither a saved version (3, v3, learned-v3) nor `points`", 2
            )
        store = ModelStore.for_data_dir(settings_of().data_dir)
        if match is None:
            guarded(store.deactivate)
            chosen = "the points model"
        else:
            number = int(match.group(1))
            guarded(lambda: store.activate(number))
            chosen = versioned_name(number)
        out.print(
            f"{chosen} now scores new leads; {RESTART}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    @leads_app.command("recheck")
    def recheck(
        apply: Annotated[
            bool,
            typer.Option(
                "--apply",
                help="Clear the values found (each lead as a PATCH would: re-scored, "
                "re-keyed, a history line, synced again); without it nothing changes",
            ),
        ] = False,
        show: Annotated[
            int, typer.Option(min=0, max=100_000, help="How many findings to list")
        ] = 20,
    ) -> None:
        """Read every stored lead again under today's intake rules: a company, job title,
        city or region that says none (`N/A`, `-`) and a stand-in email (`test@test.com`)
        beside a phone are cleared with --apply; a stand-in email that is the lead's only
        contact, and an email today's rules refuse (`gmail.con`), are listed for a person
        to fix. A dry run unless --apply."""
        from cauce.leads import recheck as rechecking

        settings = settings_of()
        err = Console(stderr=True)

        async def go() -> rechecking.RecheckReport:
            async with _leads_runtime(settings) as rt:
                total = await rechecking.count_live(rt.sessionmaker)
                page = rechecking.PAGE_SIZE
                with _progress(err, total, page) as advance:
                    return await rechecking.recheck(
                        rt, apply=apply, show=show, page_size=page, on_page=advance
                    )

        report: rechecking.RecheckReport = run(go())
        out.print(rechecking.render(report), highlight=False, markup=False, soft_wrap=True)

    @leads_app.command("erasures")
    def erasures(
        retry: Annotated[
            bool,
            typer.Option(
                "--retry",
                help="Queue the CRM erasure again of every one that failed, and of every "
                "pending one with no job queued; `cauce serve` or `cauce worker` runs them",
            ),
        ] = False,
    ) -> None:
        """List the erased leads whose erasure the CRM still owes: pending (its crm.erase
        job queued or retrying) or failed (the CRM refused it: a revoked token, a missing
        scope), with the reason (status code and the CRM's error category). Only the
        lead's id, dates and the reason: nothing of the person. Once the cause is fixed,
        --retry queues them again; failed jobs are purged, these records are not."""
        settings = settings_of()
        if retry and settings.crm.provider == "none":
            raise fail(
                "no CRM is configured (CAUCE_CRM__PROVIDER): set the CRM the erasures are "
                "owed to, then run `cauce leads erasures --retry` again",
                1,
            )
        lines = run(_erasures(settings, retry=retry))
        out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)

    return leads_app


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at:%Y-%m-%dT%H:%M:%SZ}"


async def _erasures(settings: Settings, *, retry: bool) -> list[str]:
    """`cauce leads erasures`'s lines: the erasures owed (queued again first, with
    `retry`)."""
    from cauce.core.db import unit_of_work
    from cauce.leads.sync_backlog import owed_erasures
    from cauce.leads.tasks import erasures_waiting, retry_erasures

    lines: list[str] = []
    async with _leads_runtime(settings) as rt:
        waiting = await erasures_waiting(rt.queue)
        if retry:
            async with unit_of_work(rt.sessionmaker) as session:
                queued = await retry_erasures(session, rt.queue, settings, waiting)
            if not queued:
                return [
                    "nothing to queue again: no CRM erasure failed, and every pending one "
                    "has its job queued"
                ]
            plural = "" if len(queued) == 1 else "s"
            lines.append(
                f"queued {len(queued)} CRM erasure{plural} again: `cauce serve` or "
                "`cauce worker` runs them (`cauce leads erasures` shows what is left)"
            )
            lines.extend(f"  lead {uid}" for uid in queued)
            return lines
        async with rt.sessionmaker() as session:
            owed = await owed_erasures(session)
    if not owed:
        return ["no CRM erasure is owed"]
    failed = sum(1 for erasure in owed if erasure.state == "failed")
    plural = "" if len(owed) == 1 else "s"
    lines.append(
        f"{len(owed)} CRM erasure{plural} owed: {len(owed) - failed} pending, {failed} failed"
    )
    stuck = 0
    for erasure in owed:
        if erasure.state == "failed":
            why = erasure.reason or "refused by the CRM"
        elif erasure.uid not in waiting:
            stuck += 1
            why = "no job queued: --retry queues it"
        else:
            why = "job queued"
            if erasure.reason:
                why += f"; last failure: {erasure.reason}"
        lines.append(
            f"{erasure.uid}  {erasure.state:<7}  erased {_when(erasure.erased_at)}  "
            f"{erasure.state} since {_when(erasure.changed_at)}  {why}"
        )
    if failed or stuck:
        lines.append(
            "the CRM may still hold these people's contacts: fix the cause (a failed one's "
            "reason: CAUCE_CRM__TOKEN, the app's scopes), then run "
            "`cauce leads erasures --retry`"
        )
    if settings.crm.provider == "none":
        lines.append("no CRM is configured (CAUCE_CRM__PROVIDER): nothing runs them")
    return lines


def _settings_file() -> str:
    """The settings file the CLI read, for the training report: the points rules, and the
    routing rules of its routing impact, come from it (or from CAUCE_ variables), and it
    is `./cauce.toml` of the directory the command runs in unless CAUCE_CONFIG names one."""
    from cauce.core.config import config_file

    path = Path(config_file())
    if path.is_file():
        return str(path.resolve())
    return f"none ({path.resolve()} does not exist): built-in defaults, and CAUCE_ variables if set"


@asynccontextmanager
async def _leads_runtime(settings: Settings) -> AsyncIterator[LeadsRuntime]:
    """What the PATCH service needs, as `cauce serve` builds it (`leads.wiring`): the
    database (its schema checked), a queue that can defer the CRM delivery (the jobs run
    in `cauce serve` or `cauce worker`, not here) and the active scorer."""
    from cauce.cli_support import ensure_schema
    from cauce.core.db import create_database
    from cauce.core.jobs.builtin import register_core_tasks
    from cauce.core.jobs.factory import build_job_queue
    from cauce.core.jobs.metrics import JobMetrics
    from cauce.core.jobs.registry import TaskRegistry
    from cauce.leads.service import LeadsRuntime
    from cauce.leads.tasks import LeadsTaskDeps, register_leads_tasks
    from cauce.leads.wiring import scorer_for

    db = create_database(settings)
    try:
        await ensure_schema(settings, db)
        registry = TaskRegistry()
        register_core_tasks(registry)
        # Registered to be deferred only: no CRM client, this process runs no jobs.
        register_leads_tasks(registry, LeadsTaskDeps(settings, db.sessionmaker, None))
        queue = build_job_queue(db, registry, JobMetrics())
        yield LeadsRuntime(settings, db.sessionmaker, queue, scorer=scorer_for(settings))
    finally:
        await db.dispose()


# Without a terminal, a long run says how far it got every this many leads.
_PLAIN_EVERY = 10_000


@contextmanager
def _progress(err: Console, total: int, page: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for a run of more than one page (plain lines every
    `_PLAIN_EVERY` leads when stderr is no terminal); yields `advance(leads_read)`."""
    if total <= page:
        yield lambda _read: None
        return
    if not err.is_terminal:
        done = 0

        def count(read: int) -> None:
            nonlocal done
            before, done = done, done + read
            if done // _PLAIN_EVERY > before // _PLAIN_EVERY:
                err.print(f"checked {done} of {total} leads", highlight=False, markup=False)

        yield count
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "checking leads",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("recheck", total=total)
        yield lambda read: progress.advance(task, read)


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
