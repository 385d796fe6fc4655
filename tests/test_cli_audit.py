"""The `cauce` command line as an operator meets it (helper-129's audit): bad input ends
with one `error: ...` line and the right exit status (2 for configuration and usage, 1 for
a failure), never a traceback."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cauce.core.errors import ConfigError
from cauce.demo import DemoSettings, demo_directory
from tests.test_cli import HEAD, cauce, free_port


def refused(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a refused command printed on stderr (its exit status `code`)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_key_name_with_brackets_is_shown_and_listed_as_typed(tmp_path: Path) -> None:
    """`--name "[/]"` stored the key and then failed (rich markup) before printing it: the
    key was lost, and `apikey list` failed for good after it."""
    created = cauce(tmp_path, "apikey", "create", "--name", "[/]", "--scopes", "admin")
    assert created.returncode == 0, created.stderr
    assert "Traceback" not in created.stderr
    assert created.stdout.startswith("cauce_")
    key_id = created.stdout.split("_")[1]
    assert f"Created key {key_id} ([/]) with scopes admin." in created.stderr
    bold = cauce(tmp_path, "apikey", "create", "--name", "[bold]ops", "--scopes", "admin")
    assert "([bold]ops)" in bold.stderr  # not swallowed as markup
    listed = cauce(tmp_path, "apikey", "list")
    assert listed.returncode == 0, listed.stderr
    assert "[/]" in listed.stdout
    assert "[bold]ops" in listed.stdout


def test_error_lines_show_brackets_as_typed(tmp_path: Path) -> None:
    revoke = cauce(tmp_path, "apikey", "revoke", "[/]")
    assert refused(revoke, 1) == "error: no API key with id [/]"
    port = cauce(tmp_path, "apikey", "list", CAUCE_HTTP__PORT="[/]")
    assert refused(port, 2) == (
        "error: invalid configuration: CAUCE_HTTP__PORT: Input should be a valid integer, "
        "unable to parse string as an integer (got '[/]')"
    )


def test_a_database_url_whose_port_is_no_number(tmp_path: Path) -> None:
    """sqlalchemy's ValueError was a traceback (after the settings had been accepted)."""
    url = "postgresql+psycopg://cauce:s3cret@127.0.0.1:notaport/cauce"
    for command in (["db", "current"], ["apikey", "list"], ["worker"]):
        line = refused(cauce(tmp_path, *command, CAUCE_DATABASE_URL=url), 2)
        assert line == (
            "error: invalid configuration: CAUCE_DATABASE_URL: its port is not a number "
            "(percent-encode a password's special characters)"
        )
        assert "s3cret" not in line


def test_job_ids_beyond_64_bits_are_a_usage_error(tmp_path: Path) -> None:
    """SQLite raised an OverflowError traceback; PostgreSQL blamed the database."""
    for command in ("show", "cancel", "retry"):
        result = cauce(tmp_path, "jobs", command, "99999999999999999999")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "less than or equal to 9223372036854775807" in result.stderr
    biggest = cauce(tmp_path, "jobs", "show", str(2**63 - 1))
    assert refused(biggest, 1) == f"error: no job {2**63 - 1}"


def test_db_upgrade_to_an_unknown_revision(tmp_path: Path) -> None:
    result = cauce(tmp_path, "db", "upgrade", "nosuchrev")
    assert refused(result, 2) == (
        "error: cannot migrate the database: Can't locate revision identified by 'nosuchrev'"
    )


def test_a_database_a_later_version_migrated(tmp_path: Path) -> None:
    """As after a rollback: on SQLite every command was an Alembic traceback, and `db
    current` said to run `cauce db upgrade`, which cannot help."""
    assert cauce(tmp_path, "db", "upgrade").returncode == 0
    with sqlite3.connect(tmp_path / "data" / "cauce.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    expected = (
        "error: the database is at revision 0999, which this version of Cauce does not "
        f"know (it knows up to {HEAD}): a later version migrated it (run that version, or "
        "roll the schema back)"
    )
    for command in (["db", "upgrade"], ["apikey", "list"], ["jobs", "list"]):
        assert refused(cauce(tmp_path, *command), 2) == expected, command
    serve = cauce(tmp_path, "serve", "--port", str(free_port()))
    assert refused(serve, 2) == expected
    current = cauce(tmp_path, "db", "current")
    assert current.returncode == 0, current.stderr
    assert "revision: 0999" in current.stdout
    assert "run `cauce db upgrade`" not in current.stdout
    assert "a later version migrated it" in current.stdout


def test_serve_on_a_port_in_use(tmp_path: Path) -> None:
    """uvicorn started the app (and its job worker), then exited with status 3 and a log
    line; now the address is tried first."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cauce(tmp_path, "serve", "--port", str(port))
        line = refused(result, 1)
    assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "cauce.started" not in result.stderr


@pytest.mark.parametrize("port", ["0", "70000"])
def test_serve_refuses_a_port_out_of_range(tmp_path: Path, port: str) -> None:
    """`--port 0` served on 8000 (0 read as "not given")."""
    result = cauce(tmp_path, "serve", "--port", port)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Invalid value for '--port'" in result.stderr


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    """makedirs said "File exists"."""
    path = tmp_path / "data"  # the data dir `cauce()` gives
    path.write_text("")
    result = cauce(tmp_path, "apikey", "list")
    assert refused(result, 1) == f"error: cannot use {path}: not a directory"


def test_demo_refuses_a_data_dir_it_cannot_use(tmp_path: Path) -> None:
    """An earlier run's database made the demo report FAILED (its leads merged instead of
    being created); a file was a traceback."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "cauce.db").write_bytes(b"")
    result = cauce(tmp_path, "demo", "--leads", "100", "--data-dir", str(earlier))
    assert refused(result, 2) == (
        f"error: --data-dir {earlier} holds an earlier run's database: give the demo a new "
        "directory (or none, for a temporary one)"
    )
    afile = tmp_path / "afile"
    afile.write_text("")
    result = cauce(tmp_path, "demo", "--leads", "100", "--data-dir", str(afile))
    assert refused(result, 2) == f"error: --data-dir {afile}: not a directory"


def test_demo_settings_ignore_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CAUCE_DATABASE_URL in the shell sent the demo's made-up leads into that database."""
    monkeypatch.setenv("CAUCE_DATABASE_URL", "postgresql+psycopg://cauce:x@db.example/prod")
    monkeypatch.setenv("CAUCE_JOBS__EMBEDDED_WORKER", "false")
    (tmp_path / "cauce.toml").write_text('redis_url = "redis://127.0.0.1:1/0"\n')
    monkeypatch.chdir(tmp_path)
    settings = DemoSettings(data_dir=tmp_path / "demo")
    assert settings.database_url is None
    assert settings.is_sqlite
    assert settings.redis_url is None
    assert settings.jobs.embedded_worker is True
    with pytest.raises(ConfigError, match="not a directory"):
        demo_directory(tmp_path / "cauce.toml")
    assert demo_directory(tmp_path / "new") == tmp_path / "new"
