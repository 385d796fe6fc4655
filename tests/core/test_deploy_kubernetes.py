"""The Kubernetes manifests (deploy/kubernetes/) are valid Kubernetes objects and agree
with the code: kustomization.yaml lists them, every CAUCE_ variable is a setting and the
secret ones come from the Secret, every `cauce` command and option exists, the probes
and scrape ports are the app's, the grace periods cover the graceful shutdowns, the pods
are hardened, and the Ingress lets through every body Cauce accepts.

The helpers shared with the systemd files come from `test_deploy_files`."""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel, SecretStr

from cauce.app import create_app
from cauce.core.config import ENV_PREFIX, Settings
from cauce.core.errors import ConfigError
from cauce.core.web.system import READY_TIMEOUT_SECONDS
from cauce.leads.wiring import body_limits
from tests.core.test_deploy_files import (
    VALID_SECRET,
    _load,
    check_invocation,
    option_value,
    proxy_limit,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
# Examples to copy, never applied (the Secret: an apply must not overwrite the real one).
EXAMPLE_SUFFIX = ".example.yaml"

# The oldest Kubernetes the manifests target (`preStop: sleep` is on by default from
# 1.30), and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())

API = "cauce-api"
WORKER = "cauce-worker"
MIGRATE = "cauce-migrate"
CONTAINER = "cauce"
# What a process needs after its graceful shutdown to release jobs and close.
STOP_MARGIN_SECONDS = 5
# Settings that may carry credentials besides the SecretStr ones.
CREDENTIAL_URLS = {f"{ENV_PREFIX}DATABASE_URL", f"{ENV_PREFIX}REDIS_URL"}

Manifest = dict[str, Any]

_COMMENTED_VARIABLE = re.compile(r"^\s*#\s*(CAUCE_[A-Z0-9_]+):\s*(.*?)\s*$", re.MULTILINE)
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_QUANTITY_FACTORS = {
    "": 1.0,
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 1024.0,
    "Mi": 1024.0**2,
    "Gi": 1024.0**3,
    "Ti": 1024.0**4,
}
_NGINX_SIZE = re.compile(r"^(\d+)([kmg]?)$", re.IGNORECASE)


# --- reading the manifests --------------------------------------------------------------


@functools.cache
def _documents() -> tuple[tuple[str, Manifest], ...]:
    """Every YAML document under deploy/kubernetes as (file name, document)."""
    found: list[tuple[str, Manifest]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                assert isinstance(document, dict), f"{path.name}: a document is not a mapping"
                found.append((path.name, cast(Manifest, document)))
    return tuple(found)


def _objects(kind: str) -> list[Manifest]:
    return [doc for _, doc in _documents() if doc.get("kind") == kind]


def _object(kind: str, name: str) -> Manifest:
    (found,) = [doc for doc in _objects(kind) if doc["metadata"]["name"] == name]
    return found


def _pod_specs() -> dict[str, Manifest]:
    """The pod spec of each workload (Deployments and Jobs) by workload name."""
    return {
        doc["metadata"]["name"]: cast(Manifest, doc["spec"]["template"]["spec"])
        for doc in _objects("Deployment") + _objects("Job")
    }


def _all_containers(spec: Manifest) -> list[Manifest]:
    """A pod's init containers, then its containers."""
    return [*spec.get("initContainers", []), *spec["containers"]]


def _container(workload: str) -> Manifest:
    (found,) = [c for c in _pod_specs()[workload]["containers"] if c["name"] == CONTAINER]
    return cast(Manifest, found)


def _command(container: Manifest) -> list[str]:
    return [str(a) for a in [*container.get("command", []), *container.get("args", [])]]


def _cauce_args(container: Manifest) -> list[str]:
    """The arguments of the container's `cauce` command."""
    command = _command(container)
    assert command, f"{container['name']}: no command"
    assert command[0] == "cauce" or command[0].endswith("/bin/cauce"), command
    return command[1:]


def _secret_example() -> Manifest:
    (secret,) = [doc for name, doc in _documents() if doc.get("kind") == "Secret"]
    return secret


def _environment(container: Manifest, *, real_secret: bool = True) -> dict[str, str]:
    """The variables the container gets from its envFrom and env, the example Secret's
    placeholder CAUCE_SECRET_KEY replaced by a valid one unless `real_secret` is off."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = _object("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            secret = _secret_example()
            assert secret["metadata"]["name"] == source["secretRef"]["name"]
            data = secret["stringData"]
            if real_secret:
                data = {**data, f"{ENV_PREFIX}SECRET_KEY": VALID_SECRET}
        env.update({str(k): str(v) for k, v in data.items()})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
    return env


def _settings(monkeypatch: pytest.MonkeyPatch, workload: str) -> Settings:
    """The settings Cauce loads in the workload's container."""
    env = _environment(_container(workload))
    return _load(monkeypatch, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})


def _port(container: Manifest, port: int | str) -> int:
    """A port of the container, given by number or by name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
    return int(number)


def _quantity(value: object) -> float:
    """A Kubernetes quantity (`250m`, `1`, `768Mi`) as a number."""
    match = _QUANTITY.match(str(value))
    assert match is not None, f"not a quantity: {value!r}"
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(2) or ""]


def _nginx_size(value: str) -> int:
    """An nginx size (`1m`, `201m`) in bytes."""
    match = _NGINX_SIZE.match(value.strip())
    assert match is not None, f"not an nginx size: {value!r}"
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * factor


def _secret_settings(model: type[BaseModel], prefix: str = ENV_PREFIX) -> set[str]:
    """The variables of every SecretStr setting in `model`, nested sections included."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        variable = prefix + name.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _secret_settings(annotation, variable + "__")
        elif annotation is SecretStr or SecretStr in typing.get_args(annotation):
            names.add(variable)
    return names


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# Each test sees no CAUCE_* variable from the caller and no cauce.toml (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("clean_env")


# --- the objects ------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_document_is_a_valid_kubernetes_object(version: str) -> None:
    """Each document validates against the Kubernetes OpenAPI schemas, strictly (no
    unknown field), offline; the Kustomization is kustomize's, not an API object."""
    problems = []
    checked = 0
    for file, doc in _documents():
        if doc.get("kind") == "Kustomization":
            continue
        name = f"{file}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: {exc.message}")
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 8


def test_names_are_unique_and_namespaced_by_kustomize() -> None:
    """One object per kind and name, none naming its namespace: the Kustomization sets it."""
    seen: set[tuple[str, str]] = set()
    for file, doc in _documents():
        if doc["kind"] == "Kustomization":
            continue
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{file}: {key} twice"
        seen.add(key)
        assert "namespace" not in doc["metadata"], f"{file}: {key} names its namespace"
    assert isinstance(_object("Namespace", "cauce"), dict)


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml lists each manifest file once, the examples excepted, sets the
    namespace, and sets the image every container names."""
    (kustomization,) = _objects("Kustomization")
    assert [f for f, d in _documents() if d is kustomization] == [KUSTOMIZATION.name]
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    files = {
        p.name
        for p in MANIFESTS.glob("*.yaml")
        if p != KUSTOMIZATION and not p.name.endswith(EXAMPLE_SUFFIX)
    }
    assert set(resources) == files, (
        f"missing: {sorted(files - set(resources))}, unknown: {sorted(set(resources) - files)}"
    )
    assert not list(MANIFESTS.glob("*.yml")), "use the .yaml extension"
    assert kustomization["namespace"] == _objects("Namespace")[0]["metadata"]["name"]

    image_names = {i["name"] for i in kustomization.get("images", [])}
    for workload, spec in _pod_specs().items():
        for container in _all_containers(spec):
            name = container["image"].rsplit(":", 1)[0]
            assert name in image_names, f"{workload}: kustomize does not set {name}"


# --- settings and secrets ---------------------------------------------------------------


@pytest.mark.parametrize("workload", [API, WORKER, MIGRATE])
def test_containers_load_production_postgresql_settings(
    monkeypatch: pytest.MonkeyPatch, workload: str
) -> None:
    """Each container's environment (ConfigMap, example Secret with a real key, env) is a
    valid production configuration on PostgreSQL."""
    settings = _settings(monkeypatch, workload)
    assert settings.env == "production"
    assert not settings.is_sqlite
    assert settings.log.format == "json"
    assert settings.data_dir.is_absolute()


def test_example_secret_placeholder_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example Secret as shipped does not start Cauce: its CAUCE_SECRET_KEY must be set."""
    env = _environment(_container(API), real_secret=False)
    assert f"{ENV_PREFIX}SECRET_KEY" in _secret_example()["stringData"]
    with pytest.raises(ConfigError, match=f"{ENV_PREFIX}SECRET_KEY"):
        _load(monkeypatch, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})


def test_every_variable_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each CAUCE_ variable the ConfigMap, the example Secret and the containers' env
    set, or their comments show (`# CAUCE_X: value`), is a setting, and its value loads."""
    assigned: list[tuple[str, str]] = []
    for doc in _objects("ConfigMap"):
        assigned += [(str(k), str(v)) for k, v in doc.get("data", {}).items()]
    assigned += [(str(k), str(v)) for k, v in _secret_example()["stringData"].items()]
    for spec in _pod_specs().values():
        for container in _all_containers(spec):
            assigned += [
                (e["name"], str(e["value"]))
                for e in container.get("env", [])
                if e["name"].startswith(ENV_PREFIX) and "value" in e
            ]
    for file in {f for f, d in _documents() if d["kind"] in ("ConfigMap", "Secret")}:
        for name, value in _COMMENTED_VARIABLE.findall((MANIFESTS / file).read_text()):
            assigned.append((name, str(yaml.safe_load(value))))
    assert {name for name, _ in assigned} >= {
        f"{ENV_PREFIX}DATABASE_URL",
        f"{ENV_PREFIX}HTTP__GRACEFUL_SHUTDOWN_SECONDS",
        f"{ENV_PREFIX}JOBS__GRACEFUL_SHUTDOWN_SECONDS",
    }

    problems = []
    for name, value in assigned:
        if not name.startswith(ENV_PREFIX):
            problems.append(f"{name}: not a Cauce setting in Cauce's ConfigMap or Secret")
            continue
        if name == f"{ENV_PREFIX}SECRET_KEY":
            value = VALID_SECRET  # the example's placeholder is refused (test above)
        try:
            _load(monkeypatch, {f"{ENV_PREFIX}SECRET_KEY": VALID_SECRET, name: value})
        except ConfigError as exc:
            problems.append(f"{name}={value}: {exc}")
    assert not problems, "\n".join(problems)


def test_secrets_come_from_the_secret() -> None:
    """The secret settings (SecretStr ones, and the URLs that may carry passwords) are in
    the Secret, never in a ConfigMap or inline in a container; every pod reads the
    ConfigMap and the Secret, which share no key."""
    secret_names = _secret_settings(Settings) | CREDENTIAL_URLS
    assert {f"{ENV_PREFIX}SECRET_KEY", f"{ENV_PREFIX}CRM__TOKEN"} <= secret_names
    secret = _secret_example()
    assert secret["type"] == "Opaque"
    assert {f"{ENV_PREFIX}SECRET_KEY", f"{ENV_PREFIX}DATABASE_URL"} <= set(secret["stringData"])

    problems = []
    for file, doc in _documents():
        if doc["kind"] != "ConfigMap":
            continue
        commented = _COMMENTED_VARIABLE.findall((MANIFESTS / file).read_text())
        names = set(doc.get("data", {})) | {name for name, _ in commented}
        problems += [f"{file}: {n}" for n in sorted(names & secret_names)]
        assert not set(doc.get("data", {})) & set(secret["stringData"]), "a key in both"
    for workload, spec in _pod_specs().items():
        for container in _all_containers(spec):
            problems += [
                f"{workload}: {e['name']} inline"
                for e in container.get("env", [])
                if e["name"] in secret_names and "value" in e
            ]
            refs = [next(iter(source)) for source in container.get("envFrom", [])]
            assert refs == ["configMapRef", "secretRef"], (workload, refs)
    assert not problems, "\n".join(problems)


# --- commands ---------------------------------------------------------------------------


def test_every_command_and_option_exists() -> None:
    """Each container runs `cauce` with subcommands and options `cauce ... --help` shows:
    the Job `cauce db upgrade`, the API `cauce serve --workers N`, the workers `cauce
    worker --concurrency C --metrics-port P`."""
    problems = [
        f"{workload}: {problem}"
        for workload, spec in _pod_specs().items()
        for container in _all_containers(spec)
        for problem in check_invocation(_cauce_args(container))
    ]
    assert not problems, "\n".join(problems)
    assert _cauce_args(_container(MIGRATE)) == ["db", "upgrade"]
    api = _cauce_args(_container(API))
    assert api[0] == "serve"
    assert int(option_value(api, "--workers") or 1) > 1
    worker = _cauce_args(_container(WORKER))
    assert worker[0] == "worker"
    # The API and the workers first wait for the Job's migrations (`cauce db check`
    # exits 1 while they are pending), instead of crash-looping with back-off.
    for workload in (API, WORKER):
        (init,) = _pod_specs()[workload]["initContainers"]
        waits = _cauce_args(init)
        assert waits[:2] == ["db", "check"], waits
        assert float(option_value(waits, "--wait") or 0) >= 60
    assert option_value(worker, "--concurrency") is not None
    assert option_value(worker, "--metrics-port") is not None


def test_worker_pool_fits_its_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's concurrency fits its database pool (concurrency + 2, the check `cauce
    worker` warns about at start-up)."""
    settings = _settings(monkeypatch, WORKER)
    given = option_value(_cauce_args(_container(WORKER)), "--concurrency")
    concurrency = int(given) if given is not None else settings.jobs.concurrency
    assert concurrency + 2 <= settings.db.pool_size + settings.db.max_overflow


# --- probes, ports, metrics -------------------------------------------------------------


def test_api_probes_match_its_port_and_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's probes ask its own port: liveness (and start-up) /healthz, readiness
    /readyz, with a timeout above /readyz's own; the port is the one `cauce serve`
    listens on, and the paths are routes of the app."""
    settings = _settings(monkeypatch, API)
    container = _container(API)
    given = option_value(_cauce_args(container), "--port")
    listening = int(given) if given is not None else settings.http.port
    assert settings.http.host in ("0.0.0.0", "::"), "the kubelet and the Service need it"
    assert _port(container, "http") == listening

    # The app's GET routes, as its OpenAPI document lists them.
    paths = create_app(settings).openapi()["paths"]
    routes = {path for path, operations in paths.items() if "get" in operations}
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe_name, path in expected.items():
        probe = container[probe_name]["httpGet"]
        assert probe["path"] == path, probe_name
        assert path in routes
        assert _port(container, probe["port"]) == listening, probe_name
    assert container["readinessProbe"]["timeoutSeconds"] > READY_TIMEOUT_SECONDS
    assert container["livenessProbe"]["timeoutSeconds"] >= 1

    pod = _object("Deployment", API)["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == listening
    assert annotations["prometheus.io/path"] in routes


def test_worker_metrics_port_matches_its_scrape_port() -> None:
    """The worker serves metrics on its --metrics-port, which is its container port named
    `metrics`, its scrape annotation's port, and its readiness probe's."""
    container = _container(WORKER)
    metrics_port = option_value(_cauce_args(container), "--metrics-port")
    assert metrics_port is not None
    assert _port(container, "metrics") == int(metrics_port)
    annotations = _object("Deployment", WORKER)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == int(metrics_port)
    probe = container["readinessProbe"]["httpGet"]
    assert _port(container, probe["port"]) == int(metrics_port)
    assert "livenessProbe" not in container, "the metrics thread would answer for a hung worker"


def test_selectors_pick_their_pods() -> None:
    """Each Deployment selects its own pods; the Service and the API's PDB select the API
    pods only, the worker's PDB the worker pods only; the Service targets the API port."""
    pods = {
        name: cast(dict[str, str], doc["spec"]["template"]["metadata"]["labels"])
        for doc in _objects("Deployment") + _objects("Job")
        for name in [doc["metadata"]["name"]]
    }
    for doc in _objects("Deployment"):
        assert _matches(doc["spec"]["selector"]["matchLabels"], pods[doc["metadata"]["name"]])

    def selected(selector: Mapping[str, str]) -> set[str]:
        return {name for name, labels in pods.items() if _matches(selector, labels)}

    service = _object("Service", API)
    assert selected(service["spec"]["selector"]) == {API}
    (port,) = service["spec"]["ports"]
    assert _port(_container(API), port["targetPort"]) == _port(_container(API), "http")
    for name in (API, WORKER):
        pdb = _object("PodDisruptionBudget", name)
        assert selected(pdb["spec"]["selector"]["matchLabels"]) == {name}


# --- stopping ---------------------------------------------------------------------------


def test_grace_periods_outlast_graceful_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet waits longer than Cauce's graceful shutdowns before it sends SIGKILL:
    for the API its preStop pause plus its request grace period (plus the embedded
    worker's on SQLite), for a worker its job grace period."""
    api_settings = _settings(monkeypatch, API)
    api = _pod_specs()[API]
    pause = _container(API).get("lifecycle", {}).get("preStop", {}).get("sleep", {})
    needed = pause.get("seconds", 0) + api_settings.http.graceful_shutdown_seconds
    if api_settings.is_sqlite and api_settings.jobs.embedded_worker:
        needed += api_settings.jobs.graceful_shutdown_seconds
    assert api["terminationGracePeriodSeconds"] >= needed + STOP_MARGIN_SECONDS

    worker_settings = _settings(monkeypatch, WORKER)
    worker = _pod_specs()[WORKER]
    assert (
        worker["terminationGracePeriodSeconds"]
        >= worker_settings.jobs.graceful_shutdown_seconds + STOP_MARGIN_SECONDS
    )


# --- hardening and resources ------------------------------------------------------------


@pytest.mark.parametrize("workload", [API, WORKER, MIGRATE])
def test_pods_are_hardened(workload: str) -> None:
    """Non-root, no privilege escalation, no capabilities, the runtime's seccomp profile,
    a read-only root file system with an emptyDir at /tmp ($TMPDIR: the API's shared
    metrics and spooled uploads), no API token, no service links (they would add
    CAUCE_API_SERVICE_HOST & co., which Cauce refuses as unknown settings), and CPU and
    memory requests and limits."""
    spec = _pod_specs()[workload]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] > 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in _all_containers(spec):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context.get("privileged", False) is False
        assert "ALL" in context["capabilities"]["drop"]
        assert not context["capabilities"].get("add")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, "/tmp must be writable"
        tmp = volumes[mounts["/tmp"]]
        assert "emptyDir" in tmp
        assert tmp["emptyDir"].get("sizeLimit"), "a full /tmp must not fill the node"
        assert container.get("workingDir", "/tmp") in mounts

        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request = _quantity(resources["requests"][resource])
            limit = _quantity(resources["limits"][resource])
            assert 0 < request <= limit, (container["name"], resource)


def test_data_dir_is_one_shared_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API and the workers mount the same ReadWriteMany claim at CAUCE_DATA_DIR: an
    upload is written by one API pod and read by whichever worker imports it."""
    claims = set()
    for workload in (API, WORKER):
        data_dir = str(_settings(monkeypatch, workload).data_dir)
        spec = _pod_specs()[workload]
        mounts = {m["mountPath"]: m["name"] for m in _container(workload)["volumeMounts"]}
        assert data_dir in mounts, f"{workload}: nothing mounted at {data_dir}"
        (volume,) = [v for v in spec["volumes"] if v["name"] == mounts[data_dir]]
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    assert "ReadWriteMany" in _object("PersistentVolumeClaim", claim)["spec"]["accessModes"]


# --- ingress ----------------------------------------------------------------------------


def test_ingress_body_limits_cover_cauces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ingress lets through every body Cauce accepts, per route, so that Cauce (not
    the proxy) decides on 413; it refuses /metrics; it sends everything to the API."""
    settings = _settings(monkeypatch, API)
    service = _object("Service", API)
    limits: dict[str | None, int] = {}
    denied: set[str] = set()
    for ingress in _objects("Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
                if "nginx.ingress.kubernetes.io/denylist-source-range" in annotations:
                    ranges = annotations["nginx.ingress.kubernetes.io/denylist-source-range"]
                    assert set(ranges.split(",")) >= {"0.0.0.0/0", "::/0"}
                    denied.add(path["path"])
                    continue
                size = _nginx_size(annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
                if path["path"] == "/" and path["pathType"] == "Prefix":
                    limits[None] = size
                else:
                    assert path["pathType"] == "Exact", path
                    limits[path["path"]] = size
    assert denied == {"/metrics"}
    server = limits.get(None)
    assert server is not None, "no Ingress for /"
    assert server >= settings.http.max_body_bytes
    for path, limit in body_limits(settings).items():
        allowed = proxy_limit(limits, path)
        assert allowed is not None, path
        assert allowed >= limit, (path, allowed, limit)
