"""`cauce jobs probe --queue X` deferred a probe to any queue, one no worker can be asked to
serve (`cauce worker --queues` refuses it): the user then waited for a probe nothing
measured. Now refused as `cauce worker --queues nosuch` is, a usage error (2) naming the
queues there are, before anything is touched."""

from __future__ import annotations

from pathlib import Path

from cauce.app import open_resources
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.observability.metrics import build_registry
from cauce.worker import unknown_queues
from tests.conftest import make_settings
from tests.test_cli import cauce
from tests.test_cli_audit import refused

KNOWN = "crm, default, imports"


def test_probe_refuses_a_queue_no_worker_can_serve(tmp_path: Path) -> None:
    """Exit 2, one line naming the queues, and no database created; a known queue is
    still probed."""
    result = cauce(tmp_path, "jobs", "probe", "--queue", "nosuch")
    assert refused(result, 2) == (
        f"error: --queue: no task runs on queue 'nosuch'; the queues are {KNOWN}"
    )
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()
    assert refused(cauce(tmp_path, "jobs", "probe", "--queue", ""), 2).startswith(
        "error: --queue: no task runs on queue ''; the queues are"
    )
    probed = cauce(tmp_path, "jobs", "probe", "--queue", "crm")
    assert probed.returncode == 0, probed.stderr
    job = probed.stdout.strip()
    assert job.isdigit()
    listed = cauce(tmp_path, "jobs", "list", "--queue", "crm")
    assert listed.returncode == 0, listed.stderr
    assert job in listed.stdout.split()


async def test_the_probes_queues_are_those_a_worker_serves(tmp_path: Path) -> None:
    """The queues `probe` accepts are exactly those the tasks a worker registers run on
    (what `cauce worker --queues` accepts): a context's new queue is not refused."""
    from cauce.cli_jobs import served_queues

    settings = make_settings(tmp_path)
    registry = build_registry()
    async with open_resources(
        settings, registry=registry, job_metrics=JobMetrics(registry)
    ) as resources:
        queues = sorted({spec.queue for spec in resources.tasks.tasks.values()})
        assert unknown_queues(resources.tasks, served_queues(), settings) is None
    assert served_queues() == queues
    assert ", ".join(queues) == KNOWN


def test_probe_warns_when_these_settings_workers_do_not_serve_its_queue(tmp_path: Path) -> None:
    """`jobs.queues` set to crm alone: a probe to imports (or to the default queue) would
    wait for a worker started with `--queues imports`, which the settings cannot see. It is
    deferred, with a warning naming where `jobs.queues` was set; one to crm says nothing."""
    (tmp_path / "cauce.toml").write_text('[jobs]\nqueues = ["crm"]\n', encoding="utf-8")
    imports = cauce(tmp_path, "jobs", "probe", "--queue", "imports")
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.strip().isdigit()
    assert (
        "warning: cauce.toml: jobs.queues is crm: workers started with these settings do not "
        "serve queue 'imports'; the probe runs only if one started with "
        "`cauce worker --queues imports` does"
    ) in " ".join(imports.stderr.split())
    default = cauce(tmp_path, "jobs", "probe", CAUCE_JOBS__QUEUES='["crm","imports"]')
    assert default.returncode == 0, default.stderr
    assert "warning: CAUCE_JOBS__QUEUES is crm, imports:" in " ".join(default.stderr.split())
    assert "queue 'default'" in default.stderr
    crm = cauce(tmp_path, "jobs", "probe", "--queue", "crm")
    assert crm.returncode == 0, crm.stderr
    assert "warning" not in crm.stderr
