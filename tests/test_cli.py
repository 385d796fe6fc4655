"""The `cauce` command end to end, as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import uvicorn
from alembic.script import ScriptDirectory
from prometheus_client.parser import text_string_to_metric_families

from cauce.cli import server_options
from cauce.cli_serve import WORKER_HEALTHCHECK_SECONDS, processes_config
from cauce.core.db.migrate import alembic_config
from tests.conftest import TEST_SECRET, make_settings

(HEAD,) = ScriptDirectory.from_config(alembic_config()).get_heads()


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the CLI: its own data dir, JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env.update(
        CAUCE_DATA_DIR=str(tmp_path / "data"), CAUCE_LOG__FORMAT="json", COLUMNS="200", **extra
    )
    return env


def cauce(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `cauce ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "cauce", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_apikey_lifecycle(tmp_path: Path) -> None:
    """create prints the key once on stdout, list shows it without the secret, revoke marks it."""
    created = cauce(tmp_path, "apikey", "create", "--name", "ops", "--scopes", "admin,leads:read")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cauce_")
    key_id = token.split("_")[1]
    listed = cauce(tmp_path, "apikey", "list")
    assert key_id in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    assert cauce(tmp_path, "apikey", "revoke", key_id).returncode == 0
    assert cauce(tmp_path, "apikey", "revoke", "nosuchkey000").returncode == 1


def test_apikey_create_refuses_unknown_scope(tmp_path: Path) -> None:
    """A typo in a scope is an error with a clear message and no key."""
    result = cauce(tmp_path, "apikey", "create", "--name", "x", "--scopes", "leads:raed")
    assert result.returncode == 2
    assert "unknown scope" in result.stderr
    assert result.stdout == ""


def test_every_command_has_help(tmp_path: Path) -> None:
    """--help works on every command and says something useful."""
    for args in (
        ["serve"],
        ["db", "upgrade"],
        ["db", "current"],
        ["db", "check"],
        ["apikey", "create"],
        ["apikey", "list"],
        ["apikey", "revoke"],
        ["worker"],
        ["jobs", "list"],
    ):
        result = cauce(tmp_path, *args, "--help")
        assert result.returncode == 0, args
        assert "Usage" in result.stdout


def test_serve_end_to_end_and_graceful_sigterm(tmp_path: Path) -> None:
    """`cauce serve` answers the operational routes, accepts a created key, refuses a revoked
    one, and exits cleanly on SIGTERM."""
    port = free_port()
    env = cli_env(tmp_path, CAUCE_HTTP__PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cauce", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            assert proc.poll() is None, "server exited"
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert "cauce_build_info" in httpx.get(f"{base}/metrics").text
        assert "/v1/me" in httpx.get(f"{base}/openapi.json").json()["paths"]
        token = cauce(tmp_path, "apikey", "create", "--name", "n", "--scopes", "leads:read")
        key = token.stdout.strip()
        auth = {"authorization": f"Bearer {key}"}
        assert httpx.get(f"{base}/v1/me", headers=auth).json()["name"] == "n"
        assert cauce(tmp_path, "apikey", "revoke", key.split("_")[1]).returncode == 0
        time.sleep(5.5)  # the documented cache window (CAUCE_AUTH__CACHE_TTL_SECONDS=5)
        assert httpx.get(f"{base}/v1/me", headers=auth).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # uvicorn finishes its graceful shutdown, then re-raises SIGTERM so supervisors see it.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "cauce.stopped" in output
    assert key not in output  # keys are never logged


def test_serve_refuses_postgres_with_pending_migrations(
    tmp_path: Path, empty_database_url: str, backend: str
) -> None:
    """On PostgreSQL, `serve` refuses an out-of-date schema until `db upgrade` has run."""
    if backend == "sqlite":
        pytest.skip("SQLite applies its migrations itself (tested in test_db)")
    env = {
        "CAUCE_DATABASE_URL": empty_database_url,
        "CAUCE_HTTP__PORT": str(free_port()),
        "CAUCE_ENV": "production",
        "CAUCE_SECRET_KEY": TEST_SECRET,
    }
    refused = cauce(tmp_path, "serve", **env)
    assert refused.returncode == 2
    assert "cauce db upgrade" in refused.stderr
    started = time.monotonic()
    behind = cauce(tmp_path, "db", "check", "--wait", "1", **env)
    assert (behind.returncode, "cauce db upgrade" in behind.stdout) == (1, True)
    assert time.monotonic() - started >= 1.0  # it kept checking for the second asked
    upgraded = cauce(tmp_path, "db", "upgrade", **env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database at revision {HEAD}" in upgraded.stdout
    current = cauce(tmp_path, "db", "current", **env)
    assert "pending migrations: no" in current.stdout
    checked = cauce(tmp_path, "db", "check", **env)
    assert (checked.returncode, checked.stdout.strip()) == (0, "schema is current")
    # A database a later version migrated: no upgrade of this code helps, and it says so.
    engine = sqlalchemy.create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    ahead = cauce(tmp_path, "db", "check", **env)
    assert (ahead.returncode, "migrated by a later version" in ahead.stdout) == (1, True)


def test_db_check_waits_for_a_database_that_does_not_answer(tmp_path: Path) -> None:
    """`db check --wait` keeps trying a database that refuses connections (an init
    container started before PostgreSQL), then says so, instead of failing at once."""
    env = {
        "CAUCE_DATABASE_URL": f"postgresql+psycopg://u:p@127.0.0.1:{free_port()}/db",
        "CAUCE_ENV": "production",
        "CAUCE_SECRET_KEY": TEST_SECRET,
    }
    started = time.monotonic()
    result = cauce(tmp_path, "db", "check", "--wait", "2.5", **env)
    assert result.returncode == 1, result.stderr
    assert "the database does not answer" in result.stdout
    assert time.monotonic() - started >= 2.5


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


async def _client_seen(options: dict[str, Any], peer: str, forwarded: str) -> str:
    """The client address an app served with `options` sees for a request from `peer`
    that says it was forwarded for `forwarded`."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"][0])

    config = uvicorn.Config(app, **{k: v for k, v in options.items() if k != "lifespan"})
    config.load()
    scope = {
        "type": "http",
        "client": (peer, 40000),
        "scheme": "http",
        "headers": [(b"x-forwarded-for", forwarded.encode())],
    }
    await config.loaded_app(scope, None, None)
    return seen[0]


async def test_forwarded_addresses_are_believed_only_from_trusted_proxies(
    tmp_path: Path,
) -> None:
    """By default the peer is the client (a client could otherwise name any address in
    the access log); with `CAUCE_HTTP__TRUSTED_PROXIES`, that proxy's X-Forwarded-For is."""
    plain = server_options(make_settings(tmp_path), None, None)
    assert await _client_seen(plain, "10.0.0.5", "203.0.113.9") == "10.0.0.5"
    trusting = server_options(
        make_settings(tmp_path, http={"trusted_proxies": "10.0.0.5, 10.0.1.0/24"}), None, None
    )
    assert await _client_seen(trusting, "10.0.0.5", "203.0.113.9") == "203.0.113.9"
    assert await _client_seen(trusting, "10.0.1.7", "203.0.113.9") == "203.0.113.9"
    assert await _client_seen(trusting, "192.0.2.1", "203.0.113.9") == "192.0.2.1"


def test_serve_processes_get_time_to_start_before_their_supervisor_gives_up() -> None:
    """uvicorn kills a process that misses its 5 s health ping and starts another; on a
    busy 2-core machine processes still importing missed it, and a restart took 18-29 s
    (found by a crash audit). `serve --workers N` gives them 30 s."""
    config = processes_config(2, {"host": "127.0.0.1", "port": 0})
    assert config.workers == 2
    assert config.timeout_worker_healthcheck == WORKER_HEALTHCHECK_SECONDS >= 30


def test_serve_with_workers_runs_processes_that_share_the_port(
    tmp_path: Path, database_url: str, backend: str
) -> None:
    """On PostgreSQL `serve --workers 2` runs two processes on one port, which take leads
    side by side (one lead per email between them), and stop together on SIGTERM. On
    SQLite it refuses: one writer."""
    port = free_port()
    env = cli_env(
        tmp_path,
        CAUCE_DATABASE_URL=database_url,
        CAUCE_SECRET_KEY=TEST_SECRET,
        CAUCE_HTTP__PORT=str(port),
        CAUCE_JOBS__EMBEDDED_WORKER="false",
    )
    command = [sys.executable, "-m", "cauce", "serve", "--workers", "2"]
    if backend == "sqlite":
        refused = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 2
        assert "one writer" in refused.stderr
        return
    key = subprocess.run(
        [
            sys.executable,
            "-m",
            "cauce",
            "apikey",
            "create",
            "--name",
            "w",
            "--scopes",
            "leads:write,leads:read",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while len(_children(proc.pid)) < 2 or not _ready(base):
            assert time.monotonic() < deadline, "the workers did not start"
            assert proc.poll() is None, "serve exited"
            time.sleep(0.2)
        auth = {"authorization": f"Bearer {key}"}
        emails = [f"w{i % 10}@empresa.es" for i in range(40)]  # each email four times

        def post(email: str) -> int:  # a connection each: either process may take it
            return httpx.post(f"{base}/v1/leads", json={"email": email}, headers=auth).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(post, emails))
        assert sorted(set(codes)) == [200, 201]
        assert codes.count(201) == 10  # one lead per email, whichever process took it
        # Whichever process a scrape reaches, it counts the requests both served.
        for _ in range(6):
            scraped = httpx.get(f"{base}/metrics").text
            assert _sample(scraped, "cauce_http_requests_total", route="/v1/leads") == 40
            assert _sample(scraped, "cauce_leads_intake_total", outcome="created") == 10
            assert _sample(scraped, "cauce_http_requests_in_flight") == 1  # the scrape
        metrics_dir = _metrics_dir(proc.pid)
        assert metrics_dir.is_dir()
        # A process killed outright (as the supervisor kills a hung one) is replaced, and
        # its live gauges leave the sums; what it counted stays.
        serving = [p for p in _children(proc.pid) if _live_gauges(metrics_dir, p)]
        assert len(serving) == 2  # (the parent's other child is multiprocessing's tracker)
        killed = serving[0]
        os.kill(killed, signal.SIGKILL)
        while killed in _children(proc.pid) or len(_children(proc.pid)) < len(serving):
            assert time.monotonic() < deadline + 60, "the killed process was not replaced"
            time.sleep(0.2)
        while _live_gauges(metrics_dir, killed):
            assert time.monotonic() < deadline + 60, "the killed process's gauges stayed"
            time.sleep(0.2)
        scraped = _scrape_when_ready(base)
        assert _sample(scraped, "cauce_http_requests_total", route="/v1/leads") == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert output.count("cauce.stopped") == 2
    assert not metrics_dir.exists()  # removed with the processes


def _live_gauges(metrics_dir: Path, pid: int) -> list[Path]:
    """The files of process `pid`'s live gauges (in flight, build info)."""
    return list(metrics_dir.glob(f"gauge_live*_{pid}.db"))


def _scrape_when_ready(base: str) -> str:
    """A scrape once the port answers again (a replaced process is starting)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(f"{base}/metrics", timeout=5).text
        except httpx.TransportError:
            assert time.monotonic() < deadline, "no process answered"
            time.sleep(0.2)


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples in a scrape whose labels include `labels`."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert found, f"no {name} {labels} in the scrape"
    return sum(found)


def _metrics_dir(pid: int) -> Path:
    """The shared metrics directory the serving processes were given."""
    child = _children(pid)[0]
    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    found = [entry.split(b"=", 1)[1] for entry in environ if entry.startswith(b"_CAUCE_SHARED")]
    assert found, "the processes share no metrics directory"
    return Path(found[0].decode())


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
