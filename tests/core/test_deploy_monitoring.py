"""The monitoring files (deploy/prometheus/, deploy/grafana/) agree with the code and the
runbook: promtool accepts the alert rules and passes their unit tests, which try every
alert both ways; every alert has its severity, summary, description and a runbook
section of docs/deployment.md; the dashboard is well formed; and every metric the rules
and the dashboard query is one Cauce exports, with the labels they use.

The exported metrics are read, not listed: an app started in-process serves a few
requests, runs jobs and calls an upstream, then its /metrics is scraped; a worker's
registry is built as `cauce worker` builds it."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cauce.app import Resources, create_app, open_resources
from cauce.core.db import unit_of_work
from cauce.core.http.types import Request
from cauce.core.jobs.builtin import PROBE_TASK
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JsonDict, RetryLater
from cauce.core.jobs.registry import TaskRegistry, TaskSpec
from cauce.core.observability.metrics import build_registry
from cauce.core.resilience.errors import CircuitOpenError, RetryableError
from tests.conftest import SettingsFactory
from tests.core.http.upstream import Reply, ScriptedServer
from tests.leads.test_delivery import MemoryCrm

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cauce.json"
RUNBOOK = ROOT / "docs" / "deployment.md"
RUNBOOK_LINK = "docs/deployment.md#"

SEVERITIES = {"warning", "critical"}
ANNOTATIONS = {"summary", "description", "runbook"}
# The dashboard's data source, a variable of type prometheus.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DASHBOARD_ROWS = {"HTTP", "Leads intake", "Jobs", "CRM and outbound calls", "Process"}
MIN_SCHEMA_VERSION = 36

# Labels Prometheus gives every series of a target, and the series it writes itself.
TARGET_LABELS = frozenset({"job", "instance"})
PROMETHEUS_SERIES = {"up": TARGET_LABELS, "scrape_duration_seconds": TARGET_LABELS}
# What the dashboard's variables stand for when its expressions are checked.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$job": ".+", "$instance": ".+"}

# The upstream the test app calls (a local scripted server): a breaker that opens after
# two failed calls, quick retries, no retry budget.
UPSTREAM = "monitoring-probe"
UPSTREAM_POLICY = {
    "retry": {
        "max_attempts": 2,
        "backoff_base": 0.001,
        "backoff_cap": 0.002,
        "budget": {"enabled": False},
    },
    "breaker": {"minimum_number_of_calls": 2, "sliding_window_size": 2},
}
FLAKY_TASK = "monitoring.flaky"
POSTPONING_TASK = "monitoring.postponing"
JOBS_SECONDS = 30.0

_PROMTOOL_REQUIRED = "CAUCE_TEST_REQUIRE_POSTGRES"  # set by the test command, as in CI


# --- promtool ---------------------------------------------------------------------------


def promtool() -> str:
    """The promtool binary; skip without it, or fail when the test command requires it."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get(_PROMTOOL_REQUIRED) == "1":
            pytest.fail(
                f"promtool is not installed but {_PROMTOOL_REQUIRED}=1 requires every "
                "check: install Prometheus's promtool (CI does)"
            )
        pytest.skip("promtool is not installed (Prometheus's rule checker; CI installs it)")
    return path


def run_promtool(*args: str | Path) -> str:
    """Run promtool from the repository root; its output, after asserting it succeeded."""
    done = subprocess.run(
        [promtool(), *(str(arg) for arg in args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{output}"
    return output


# --- reading the files ------------------------------------------------------------------


@functools.cache
def alert_rules() -> tuple[dict[str, Any], ...]:
    """Every rule of alerts.yml, in order."""
    document = yaml.safe_load(ALERTS.read_text())
    return tuple(rule for group in document["groups"] for rule in group["rules"])


@functools.cache
def dashboard() -> dict[str, Any]:
    """The Grafana dashboard."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, Grafana's variables replaced."""
    found = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            found.append(
                (f"panel {panel['title']!r} {target['refId']}", grafana_to_promql(target["expr"]))
            )
    return found


def grafana_to_promql(expr: str) -> str:
    """`expr` with Grafana's variables replaced by what they stand for."""
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


_FENCE = re.compile(r"^```.*?^```\s*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown` (`## Rolling restart` is
    `#rolling-restart`; a repeated heading gets `-1`, `-2`...)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


# --- PromQL -----------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?=\s*(.?))")
_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*([a-zA-Z_]\w*)\s*\)$")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)


@dataclass(frozen=True)
class Query:
    """What one PromQL expression reads: (metric, labels matched) per selector, and the
    labels it groups or matches on."""

    selectors: tuple[tuple[str, frozenset[str]], ...]
    grouping: frozenset[str]


def parse_query(expr: str) -> Query:
    """The selectors and grouping labels of `expr` (enough PromQL for these files: a
    selector without a metric name is refused)."""
    text = _STRING.sub('""', expr)
    grouping = frozenset(
        label.strip() for clause in _GROUPING.findall(text) for label in clause.split(",")
    ) - {""}
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    selectors: list[tuple[str, frozenset[str]]] = []

    def take(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name, f"a selector without a metric name: {match.group(0)!r} in {expr!r}"
        selectors.append((name, frozenset(_MATCHER.findall(match.group(2)))))
        return " "

    text = _SELECTOR.sub(take, text)
    for name, following in _IDENTIFIER.findall(text):
        if following != "(" and name not in _KEYWORDS:
            selectors.append((name, frozenset()))
    return Query(tuple(selectors), grouping)


# --- what Cauce exports -----------------------------------------------------------------


@dataclass
class Exported:
    """Series names a scrape may show, each with the label names its samples carried
    (None: no sample was seen, so its labels are unknown)."""

    labels: dict[str, set[str] | None] = field(default_factory=dict)

    def add(self, exposition: str) -> None:
        """Add the series of one scrape's text."""
        # No `<name>_created` series: build_registry turns them off, as the processes of
        # `cauce serve --workers N` (multiprocess) never had them.
        for family in text_string_to_metric_families(exposition):
            for name, extra in _series_names(family.name, family.type):
                self.labels.setdefault(name, None)
                seen = [s.labels for s in family.samples if s.name == name]
                if seen:
                    known = self.labels[name] or set()
                    self.labels[name] = known.union(*(set(labels) for labels in seen)) | extra

    def problems(self, where: str, expr: str) -> list[str]:
        """What `expr` reads that is not exported, or with labels it does not have."""
        query = parse_query(expr)
        found: list[str] = []
        available = set(TARGET_LABELS)
        for name, matched in query.selectors:
            labels: set[str] | frozenset[str] | None
            if name in PROMETHEUS_SERIES:
                labels = PROMETHEUS_SERIES[name]
            elif name in self.labels:
                labels = self.labels[name]
            else:
                found.append(f"{where}: {name} is not exported")
                continue
            if labels is None:
                found.append(f"{where}: no sample of {name} was seen; its labels are unchecked")
                continue
            available |= labels
            for label in sorted(matched - labels - TARGET_LABELS):
                found.append(f"{where}: {name} has no label {label!r} (it has {sorted(labels)})")
        for label in sorted(query.grouping - available):
            found.append(f"{where}: groups by {label!r}, which none of its metrics has")
        return found


def _series_names(family: str, kind: str) -> Iterator[tuple[str, set[str]]]:
    """The series names a family of this type exposes, with labels they add (`le`)."""
    if kind == "counter":
        yield family + "_total", set()
    elif kind == "histogram":
        yield family + "_bucket", {"le"}
        yield from ((family + suffix, set()) for suffix in ("_count", "_sum"))
    elif kind == "summary":
        yield family, {"quantile"}
        yield from ((family + suffix, set()) for suffix in ("_count", "_sum"))
    elif kind == "info":
        yield family + "_info", set()
    else:
        yield family, set()


def _tasks() -> TaskRegistry:
    """Two tasks for the embedded worker: one whose first attempt fails (then a retry
    succeeds), one that postpones its first run."""
    runs: Counter[str] = Counter()

    async def flaky(ctx: JobContext, payload: JsonDict) -> None:
        runs[FLAKY_TASK] += 1
        if runs[FLAKY_TASK] == 1:
            raise RuntimeError("the first attempt fails")

    async def postponing(ctx: JobContext, payload: JsonDict) -> None:
        runs[POSTPONING_TASK] += 1
        if runs[POSTPONING_TASK] == 1:
            raise RetryLater(datetime.now(UTC), "the first run is postponed")

    tasks = TaskRegistry()
    policy = RetryPolicy(max_attempts=2, base_seconds=0.0, cap_seconds=0.0)
    tasks.add(TaskSpec(FLAKY_TASK, flaky, policy=policy))
    tasks.add(TaskSpec(POSTPONING_TASK, postponing, policy=policy))
    return tasks


async def _run_jobs(resources: Resources, api: httpx.AsyncClient) -> None:
    """Defer jobs that succeed, retry, postpone and fail; wait for the embedded worker."""
    async with unit_of_work(resources.db.sessionmaker) as session:
        await resources.jobs.defer(session, PROBE_TASK, {})
        await resources.jobs.defer(session, PROBE_TASK, {"fail": True})
        await resources.jobs.defer(session, FLAKY_TASK, {})
        await resources.jobs.defer(session, POSTPONING_TASK, {})
    wanted = [f"cauce_jobs_{n}_total" for n in ("succeeded", "retried", "failed", "postponed")]
    async with asyncio.timeout(JOBS_SECONDS):
        while True:
            stats = await resources.jobs.stats()
            text = (await api.get("/metrics")).text
            idle = not stats.depth.get("todo") and not stats.depth.get("doing")
            if idle and all(re.search(rf"^{name}{{", text, re.MULTILINE) for name in wanted):
                return
            await asyncio.sleep(0.05)


async def _call_upstream(resources: Resources, server: ScriptedServer) -> None:
    """One call that succeeds, then failing ones until the breaker refuses."""
    assert resources.http is not None
    client = resources.http.get(UPSTREAM)
    await client.send(Request("GET", server.url("/ok")))
    for _ in range(5):
        try:
            await client.send(Request("GET", server.url("/down")))
        except CircuitOpenError:
            return
        except RetryableError:
            continue
    pytest.fail(f"the breaker of {UPSTREAM} never opened")


async def exported_by_cauce(settings_factory: SettingsFactory) -> Exported:
    """The series an API scrape shows after some traffic, and those of a worker."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t", "webhook_secret": "s"},
        upstreams={UPSTREAM: UPSTREAM_POLICY},
    )
    exported = Exported()
    server = await ScriptedServer().start()
    server.script("/down", Reply(status=503))
    try:
        app = create_app(settings, crm=MemoryCrm(), tasks=_tasks())
        async with LifespanManager(app):
            resources: Resources = app.state.resources
            key = await resources.api_keys.create("monitoring", ["leads:read", "leads:write"])
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://cauce.test",
                headers={"Authorization": f"Bearer {key.token}"},
            ) as api:
                lead = {"email": "ana@ejemplo.es", "first_name": "Ana"}
                assert (await api.post("/v1/leads", json=lead)).status_code == 201
                assert (await api.post("/v1/leads", json={"email": "x"})).status_code == 422
                assert (await api.get("/readyz")).status_code == 200
                assert (await api.get("/no-such-route")).status_code == 404
                webhook = await api.post("/v1/webhooks/hubspot", content=b"[]")
                assert webhook.status_code == 401, webhook.text
                await _run_jobs(resources, api)
                await _call_upstream(resources, server)
                scrape = await api.get("/metrics")
                assert scrape.status_code == 200
                exported.add(scrape.text)
    finally:
        await server.stop()

    # `cauce worker --metrics-port` serves this registry (cauce.worker.run_worker).
    registry = build_registry()
    job_metrics = JobMetrics(registry)
    async with open_resources(settings, registry=registry, job_metrics=job_metrics):
        exported.add(generate_latest(registry).decode())
    return exported


# --- promtool ---------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` finds every alert and no problem."""
    output = run_promtool("check", "rules", ALERTS.relative_to(ROOT))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes alerts.test.yml."""
    run_promtool("test", "rules", ALERT_TESTS.relative_to(ROOT))


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    """Every dashboard query is PromQL promtool accepts (as a recording rule's)."""
    expressions = dashboard_expressions()
    assert expressions
    rules = [
        {"record": f"cauce:dashboard:{n}", "expr": expr} for n, (_, expr) in enumerate(expressions)
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool("check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in output, output


# --- alerts -----------------------------------------------------------------------------


def test_alerts_have_for_severity_and_annotations() -> None:
    """Each rule is an alert with a unique name, a `for:`, a severity (warning or
    critical) as its only label, and a summary, a description and a runbook link into
    docs/deployment.md."""
    rules = alert_rules()
    names = [rule.get("alert") for rule in rules]
    assert all(names), "alerts.yml holds only alerting rules"
    assert len(set(names)) == len(names), f"an alert name is repeated: {names}"
    problems = []
    for rule in rules:
        name = rule["alert"]
        if not rule.get("for"):
            problems.append(f"{name}: no `for:`")
        if set(rule.get("labels", {})) != {"severity"}:
            problems.append(f"{name}: labels {rule.get('labels')}, want only severity")
        elif rule["labels"]["severity"] not in SEVERITIES:
            problems.append(f"{name}: severity {rule['labels']['severity']!r}")
        annotations = rule.get("annotations", {})
        if set(annotations) != ANNOTATIONS:
            problems.append(
                f"{name}: annotations {sorted(annotations)}, want {sorted(ANNOTATIONS)}"
            )
        elif not all(str(annotations[key]).strip() for key in ANNOTATIONS):
            problems.append(f"{name}: an empty annotation")
        elif not str(annotations["runbook"]).startswith(RUNBOOK_LINK):
            problems.append(f"{name}: runbook {annotations['runbook']!r} is not {RUNBOOK_LINK}...")
    assert not problems, "\n".join(problems)


def test_every_alert_is_tested_firing_and_not() -> None:
    """alerts.test.yml has, for every alert, a case where it fires and one where it
    does not, and names no alert alerts.yml lacks."""
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    names = {rule["alert"] for rule in alert_rules()}
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert not (firing | quiet) - names, f"tests of unknown alerts: {(firing | quiet) - names}"
    assert not names - firing, f"never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"never tested quiet: {sorted(names - quiet)}"


def test_runbook_anchors_exist() -> None:
    """Each alert's runbook link names a heading of docs/deployment.md."""
    anchors = heading_anchors(RUNBOOK.read_text())
    missing = [
        f"{rule['alert']}: #{anchor}"
        for rule in alert_rules()
        if (anchor := str(rule["annotations"]["runbook"]).removeprefix(RUNBOOK_LINK)) not in anchors
    ]
    assert not missing, "docs/deployment.md has no heading for:\n" + "\n".join(missing)


# --- dashboard --------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    """A recent schema; a prometheus data source variable and `job`/`instance`
    variables; the five rows; unique panel ids; every panel queries the data source
    variable, with targets of their own refId; and panels fit the 24-column grid
    without overlapping."""
    board = dashboard()
    assert board["schemaVersion"] >= MIN_SCHEMA_VERSION
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query", name
        assert variables[name]["datasource"] == DATASOURCE, name

    panels = list(dashboard_panels())
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids), f"repeated panel ids: {ids}"
    assert {p["title"] for p in panels if p["type"] == "row"} == DASHBOARD_ROWS

    cells: dict[tuple[int, int], str] = {}
    problems = []
    for panel in board["panels"]:  # a collapsed row's panels are laid out when it opens
        grid = panel["gridPos"]
        if grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            problems.append(f"{panel['title']}: outside the grid {grid}")
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                if (x, y) in cells:
                    problems.append(f"{panel['title']} overlaps {cells[(x, y)]} at {(x, y)}")
                cells[(x, y)] = panel["title"]
    for panel in panels:
        title = panel["title"]
        if panel["type"] == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{title}: data source {panel.get('datasource')}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no targets")
        refs = [target.get("refId") for target in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{title}: refIds {refs}")
        for target in targets:
            if target.get("datasource") != DATASOURCE or not str(target.get("expr", "")).strip():
                problems.append(f"{title} {target.get('refId')}: {target}")
    assert not problems, "\n".join(sorted(set(problems)))


# --- metrics ----------------------------------------------------------------------------


def _queries() -> Iterable[tuple[str, str]]:
    for rule in alert_rules():
        yield f"alerts.yml {rule['alert']}", str(rule["expr"])
    yield from (("cauce.json " + where, expr) for where, expr in dashboard_expressions())
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(grafana_to_promql(variable["definition"]))
            assert match, f"variable {variable['name']}: not label_values(selector, label)"
            selector, label = match.groups()
            yield f"cauce.json variable {variable['name']}", f"sum by ({label}) ({selector})"


def test_query_parser_reads_selectors_and_grouping() -> None:
    """The PromQL reader this file relies on."""
    query = parse_query(
        'sum by (job, le) (rate(a_total{route!~"/x|{y}", status="5"}[5m] offset 15m))'
        " / on (job) group_left (task) b and histogram_quantile(0.5, c_bucket) > 0.1"
    )
    assert sorted(query.selectors) == [
        ("a_total", frozenset({"route", "status"})),
        ("b", frozenset()),
        ("c_bucket", frozenset()),
    ]
    assert query.grouping == {"job", "le", "task"}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_queried_metrics_are_exported(settings_factory: SettingsFactory) -> None:
    """Every metric alerts.yml and the dashboard read is one the API's /metrics or a
    worker's metrics port exports (Prometheus's own `up` and `scrape_duration_seconds`
    aside), and every label they match or group on is one its samples carry.

    SQLite only: the names do not depend on the database, and there the API runs the
    jobs itself, so one process shows every family with samples."""
    exported = await exported_by_cauce(settings_factory)
    assert "cauce_http_requests_total" in exported.labels
    assert "cauce_upstream_requests_total" in exported.labels
    problems = [p for where, expr in _queries() for p in exported.problems(where, expr)]
    assert not problems, "\n".join(problems)
