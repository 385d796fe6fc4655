"""The deployment files (deploy/, docs/deployment.md) agree with the code: every CAUCE_
variable is a setting, every `cauce` command and option exists, the systemd units have
their keys, their stop timeouts cover the graceful shutdowns, and the reverse proxy's
body limits are at least Cauce's."""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cauce.cli import app as cli_app
from cauce.core.config import Settings, load_settings
from cauce.core.errors import ConfigError
from cauce.leads.wiring import body_limits

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS_DIR = DEPLOY / "systemd"
ENV_EXAMPLE = DEPLOY / "cauce.env.example"
RUNBOOK = ROOT / "docs" / "deployment.md"
API_UNIT = "cauce-api.service"
WORKER_UNIT = "cauce-worker@.service"
MIGRATE_UNIT = "cauce-migrate.service"
UNIT_NAMES = (API_UNIT, WORKER_UNIT, MIGRATE_UNIT)
VALID_SECRET = "0123456789abcdef" * 4

Unit = dict[str, list[tuple[str, str]]]

_VARIABLE = re.compile(r"\bCAUCE_[A-Z0-9]+(?:__?[A-Z0-9]+)*")
_ASSIGNMENT = re.compile(r"^(#\s*)?(CAUCE_[A-Z0-9_]+)=(.*)$")
_FENCE = re.compile(r"^```([\w-]*)\s*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+)`")
_SHELL_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_WRAPPERS = {"sudo", "env", "exec", "time", "nohup"}
_SUDO_ARGUMENT_OPTIONS = {"-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t"}


# --- reading the files ------------------------------------------------------------------


def parse_unit(text: str) -> Unit:
    """A systemd unit as section -> [(key, value)], keys in order, repeats kept."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    logical = re.sub(r"\\\n", " ", text)
    for number, raw in enumerate(logical.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep or not key.strip():
            raise ValueError(f"line {number} is not `Key=Value` inside a section: {raw!r}")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    """Every value of `key` in `section` (systemd allows repeats)."""
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, section: str, key: str) -> str:
    """The single value of `key` in `section`."""
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


def env_assignments(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The example's active `CAUCE_X=value` lines, and its commented-out ones."""
    active: dict[str, str] = {}
    commented: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match is None:
            continue
        name, value = match.group(2), match.group(3).strip()
        if match.group(1):
            commented.append((name, value))
        else:
            assert name not in active, f"{name} is set twice"
            active[name] = value
    return active, commented


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """Fenced code blocks as (language, body)."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(markdown)]


def inline_spans(markdown: str) -> list[str]:
    """Inline code spans outside fenced blocks."""
    return _INLINE.findall(_FENCE.sub("", markdown))


def shell_segments(text: str) -> Iterator[list[str]]:
    """Simple commands of a shell-like text: lines joined at `\\`, split at `;`, `&&`,
    `|`, parentheses; comments dropped."""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # unbalanced quotes: not shell (YAML, nginx...)
            tokens = line.split()
        segment: list[str] = []
        for token in tokens:
            if token and set(token) <= set("();<>|&"):
                yield segment
                segment = []
            else:
                segment.append(token)
        yield segment


def _command_position(segment: list[str]) -> int:
    """Index of the command word, past assignments and wrappers such as `sudo -u x`."""
    i = 0
    wrapped = False
    while i < len(segment):
        token = segment[i]
        if _SHELL_ASSIGNMENT.match(token) or token in _WRAPPERS:
            wrapped = wrapped or token in _WRAPPERS
            i += 1
        elif wrapped and token.startswith("-"):
            i += 2 if token in _SUDO_ARGUMENT_OPTIONS else 1
        else:
            return i
    return i


def cauce_invocations(text: str) -> list[list[str]]:
    """The arguments of each `cauce` command in a shell-like text: the installed binary
    (`.../bin/cauce`, also as `ExecStart=.../bin/cauce`) anywhere, or `cauce` as the
    command word. Passthroughs (`cauce "$@"`) and a bare `cauce` are left out."""
    found: list[list[str]] = []
    for segment in shell_segments(text):
        start = next(
            (i for i, t in enumerate(segment) if t.split("=", 1)[-1].endswith("/bin/cauce")),
            None,
        )
        if start is None:
            position = _command_position(segment)
            if position < len(segment) and segment[position] == "cauce":
                start = position
        if start is None:
            continue
        args = segment[start + 1 :]
        if args and not args[0].startswith("$"):
            found.append(args)
    return found


@functools.cache
def cli_help(path: tuple[str, ...]) -> str | None:
    """`cauce <path> --help` as the CLI prints it, or None if no such command."""
    result = CliRunner().invoke(cli_app, [*path, "--help"])
    return result.output if result.exit_code == 0 else None


def _is_group(help_text: str) -> bool:
    return re.search(r"Usage: .*COMMAND \[ARGS\]", help_text) is not None


def _options(help_text: str) -> set[str]:
    """The option names in the help's Options panel (`--name`, `--flag --no-flag`)."""
    names: set[str] = set()
    inside = False
    for line in help_text.splitlines():
        if re.match(r"^╭─ Options ─", line):
            inside = True
        elif line.startswith("╰"):
            inside = False
        elif inside and (row := re.match(r"^│\s*(?:\*\s+)?((?:--[\w-]+\s+)+)", line)):
            names.update(row.group(1).split())
    return names


def check_invocation(args: list[str]) -> list[str]:
    """What is wrong with `cauce <args>`: a subcommand or an option the CLI does not have
    (asked through `--help`, as a user would)."""
    path: list[str] = []
    rest = list(args)
    help_text = cli_help(())
    assert help_text is not None
    while rest and _is_group(help_text):
        sub = cli_help((*path, rest[0]))
        if sub is None:
            return [f"`{' '.join(['cauce', *path])}` has no subcommand {rest[0]!r}"]
        path.append(rest.pop(0))
        help_text = sub
    if _is_group(help_text):
        return []  # `cauce db` alone: it prints its help
    known = _options(help_text)
    assert "--help" in known, f"cannot read the options of `cauce {' '.join(path)} --help`"
    return [
        f"`{' '.join(['cauce', *path])}` has no option {a.split('=', 1)[0]}"
        for a in rest
        if a.startswith("--") and a.split("=", 1)[0] not in known
    ]


def option_value(args: list[str], option: str) -> str | None:
    """The value given to `option` (`--name value` or `--name=value`) in `args`."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def systemd_seconds(span: str) -> float:
    """A systemd time span (`45`, `45s`, `1min 30s`, `2h`) in seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span.strip())
    assert parts, f"not a time span: {span!r}"
    return sum(float(n) * units[u] for n, u in parts)


def nginx_body_limits(block: str) -> dict[str | None, int]:
    """`client_max_body_size` in bytes by location path (None: the server level)."""
    sizes = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    limits: dict[str | None, int] = {}
    location: str | None = None
    location_depth = 0
    depth = 0
    for raw in block.splitlines():
        line = raw.split("#", 1)[0].strip()
        if match := re.match(r"location\s+(?:=\s*)?(\S+)\s*\{", line):
            location, location_depth = match.group(1), depth
        if match := re.match(r"client_max_body_size\s+(\d+)([kmg]?)\s*;", line, re.IGNORECASE):
            limits[location] = int(match.group(1)) * sizes[match.group(2).lower()]
        depth += line.count("{") - line.count("}")
        if location is not None and depth <= location_depth:
            location = None
    return limits


def proxy_limit(limits: Mapping[str | None, int], path: str) -> int | None:
    """The limit the proxy applies to `path`: its longest matching location's, else the
    server's."""
    matching = [loc for loc in limits if loc is not None and path.startswith(loc)]
    if matching:
        return limits[max(matching, key=len)]
    return limits.get(None)


# --- fixtures ---------------------------------------------------------------------------


# Each test sees no CAUCE_* variable from the caller and no cauce.toml (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("clean_env")


def _units() -> dict[str, Unit]:
    return {name: parse_unit((UNITS_DIR / name).read_text()) for name in UNIT_NAMES}


def _active_example() -> dict[str, str]:
    """The example's settings with a valid secret in place of its empty placeholder."""
    active, _ = env_assignments(ENV_EXAMPLE.read_text())
    return {**active, "CAUCE_SECRET_KEY": VALID_SECRET}


def _load(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> Settings:
    """The settings Cauce would load from exactly these variables."""
    with monkeypatch.context() as scoped:
        for name, value in env.items():
            scoped.setenv(name, value)
        return load_settings()


def _deploy_texts() -> dict[str, str]:
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in DEPLOY.rglob("*") if p.is_file()}
    texts[str(RUNBOOK.relative_to(ROOT))] = RUNBOOK.read_text()
    return texts


def _example_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    return _load(monkeypatch, _active_example())


# --- settings ---------------------------------------------------------------------------


def test_env_example_loads_as_production_postgresql_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example, once given a secret, is a valid production configuration on PostgreSQL."""
    settings = _example_settings(monkeypatch)
    assert settings.env == "production"
    assert not settings.is_sqlite
    assert settings.log.format == "json"
    assert settings.data_dir.is_absolute()


def test_env_example_secret_placeholder_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example as shipped does not start: its CAUCE_SECRET_KEY must be set first."""
    active, _ = env_assignments(ENV_EXAMPLE.read_text())
    assert "CAUCE_SECRET_KEY" in active
    with pytest.raises(ConfigError, match="CAUCE_SECRET_KEY"):
        _load(monkeypatch, active)


def test_every_variable_named_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each CAUCE_ variable in deploy/ and the runbook is a setting the loader accepts,
    and each value they assign to one (`CAUCE_X=value`) loads."""
    assigned: dict[str, set[str]] = {}
    active, commented = env_assignments(ENV_EXAMPLE.read_text())
    for name, value in [*_active_example().items(), *commented]:
        assigned.setdefault(name, set()).add(value)
    runbook = RUNBOOK.read_text()
    for text in [body for _, body in fenced_blocks(runbook)] + inline_spans(runbook):
        for name, value in re.findall(r"\b(CAUCE_[A-Z0-9_]+)=([^\s`'\"]+)", text):
            assigned.setdefault(name, set()).add(value)
    assigned["CAUCE_SECRET_KEY"] = {VALID_SECRET}  # the example's placeholder is empty
    named = {n for text in _deploy_texts().values() for n in _VARIABLE.findall(text)}
    assert {"CAUCE_DATABASE_URL", "CAUCE_JOBS__GRACEFUL_SHUTDOWN_SECONDS"} <= named
    assert named >= set(active)

    problems = []
    for name in sorted(named | set(assigned)):
        for value in sorted(assigned.get(name, {""})):
            env = {"CAUCE_SECRET_KEY": VALID_SECRET, name: value or "1"}
            try:
                _load(monkeypatch, env)
            except ConfigError as exc:
                # A name without a value of its own gets a dummy one: only "unknown
                # setting" is wrong for it. An assigned value must load.
                if name in assigned or f"{name}: unknown setting" in str(exc):
                    problems.append(f"{name}={value}: {exc}")
    assert not problems, "\n".join(problems)


# --- commands ---------------------------------------------------------------------------


def test_every_command_and_option_exists() -> None:
    """Each `cauce ...` in the units' ExecStart= and in the runbook (code blocks and
    inline code) names subcommands and options that `cauce ... --help` shows."""
    invocations: list[tuple[str, list[str]]] = []
    for name, unit in _units().items():
        for exec_start in values(unit, "Service", "ExecStart"):
            invocations += [(name, args) for args in cauce_invocations(exec_start)]
    runbook = RUNBOOK.read_text()
    for _, body in fenced_blocks(runbook):
        invocations += [("docs/deployment.md", args) for args in cauce_invocations(body)]
    for span in inline_spans(runbook):
        if span.startswith("cauce "):
            invocations.append(("docs/deployment.md (inline)", span.split()[1:]))
    problems = [
        f"{where}: cauce {shlex.join(args)}: {problem}"
        for where, args in invocations
        for problem in check_invocation(args)
    ]
    assert not problems, "\n".join(problems)
    commands = {" ".join(args[:2]) for _, args in invocations}
    assert {"serve --workers", "worker --concurrency", "db upgrade", "apikey create"} <= commands


# --- systemd units ----------------------------------------------------------------------


def test_units_have_sections_and_required_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each unit has [Unit], [Service] and [Install], runs the installed `cauce` as the
    `cauce` user with the shared EnvironmentFile, hardened, writing only the data dir."""
    data_dir = str(_example_settings(monkeypatch).data_dir)
    units = _units()
    binaries = set()
    env_files = set()
    for name, unit in units.items():
        assert {"Unit", "Service", "Install"} <= set(unit), name
        exec_start = shlex.split(one(unit, "Service", "ExecStart").lstrip("-@:+!"))
        binaries.add(exec_start[0])
        env_files.add(one(unit, "Service", "EnvironmentFile"))
        assert one(unit, "Service", "User") == "cauce", name
        assert one(unit, "Service", "WorkingDirectory") == data_dir, name
        assert one(unit, "Service", "NoNewPrivileges") == "yes", name
        assert one(unit, "Service", "ProtectSystem") == "strict", name
        assert one(unit, "Service", "PrivateTmp") == "yes", name
        writable = " ".join(values(unit, "Service", "ReadWritePaths")).split()
        assert data_dir in writable, f"{name}: ReadWritePaths= lacks {data_dir}"
        assert values(unit, "Install", "WantedBy"), name
    (binary,) = binaries
    assert binary.startswith("/")
    assert binary.endswith("/bin/cauce")
    assert env_files == {"/etc/cauce/cauce.env"}

    for name in (API_UNIT, WORKER_UNIT):
        unit = units[name]
        assert one(unit, "Service", "KillSignal") == "SIGTERM", name
        assert one(unit, "Service", "Restart") == "on-failure", name
        for key in ("Requires", "After"):
            assert MIGRATE_UNIT in " ".join(values(unit, "Unit", key)).split(), (name, key)
    migrate = units[MIGRATE_UNIT]
    assert one(migrate, "Service", "Type") == "oneshot"
    assert cauce_invocations(one(migrate, "Service", "ExecStart")) == [["db", "upgrade"]]
    assert cauce_invocations(one(units[API_UNIT], "Service", "ExecStart"))[0][0] == "serve"
    (worker_args,) = cauce_invocations(one(units[WORKER_UNIT], "Service", "ExecStart"))
    assert worker_args[0] == "worker"
    assert "%i" in worker_args, "each worker instance needs its own metrics port"


def test_stop_timeouts_outlast_graceful_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd waits longer than Cauce's graceful shutdowns before it sends SIGKILL: a
    worker's job grace period, and for the API its request grace period followed by
    the embedded worker's (SQLite)."""
    settings = _example_settings(monkeypatch)
    units = _units()
    worker_stop = systemd_seconds(one(units[WORKER_UNIT], "Service", "TimeoutStopSec"))
    assert worker_stop > settings.jobs.graceful_shutdown_seconds
    api_stop = systemd_seconds(one(units[API_UNIT], "Service", "TimeoutStopSec"))
    assert api_stop > (
        settings.http.graceful_shutdown_seconds + settings.jobs.graceful_shutdown_seconds
    )


def test_worker_pool_fits_its_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker unit's concurrency fits the example's database pool (concurrency + 2,
    the check `cauce worker` warns about at start-up)."""
    settings = _example_settings(monkeypatch)
    (args,) = cauce_invocations(one(_units()[WORKER_UNIT], "Service", "ExecStart"))
    given = option_value(args, "--concurrency")
    concurrency = int(given) if given is not None else settings.jobs.concurrency
    assert concurrency + 2 <= settings.db.pool_size + settings.db.max_overflow


# --- reverse proxy ----------------------------------------------------------------------


def test_proxy_body_limits_cover_cauces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runbook's nginx example lets through every body Cauce accepts, per route, so
    Cauce (not the proxy) decides on 413."""
    settings = _example_settings(monkeypatch)
    (block,) = [body for lang, body in fenced_blocks(RUNBOOK.read_text()) if lang == "nginx"]
    limits = nginx_body_limits(block)
    server = limits.get(None)
    assert server is not None, "no server-level client_max_body_size"
    assert server >= settings.http.max_body_bytes
    for path, limit in body_limits(settings).items():
        allowed = proxy_limit(limits, path)
        assert allowed is not None, path
        assert allowed >= limit, (path, allowed, limit)
