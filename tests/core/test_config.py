"""Settings: environment variables, cauce.toml, validation messages, unsafe values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cauce.core.config import DEV_SECRET_KEY, Settings, load_settings
from cauce.core.errors import ConfigError
from tests.settings_cli import serve_refusal

SECRET = "s" * 40


# Each test sees no CAUCE_* variable from the caller and no cauce.toml (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_embed_sqlite_in_data_dir() -> None:
    """With nothing set, the database is a SQLite file inside ./.cauce."""
    settings = load_settings()
    assert settings.env == "development"
    assert settings.is_sqlite
    assert settings.effective_database_url.endswith("/.cauce/cauce.db")


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """`__` separates nesting levels under the CAUCE_ prefix."""
    monkeypatch.setenv("CAUCE_DB__POOL_SIZE", "42")
    monkeypatch.setenv("CAUCE_HTTP__MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("CAUCE_DATA_DIR", "/srv/cauce")
    settings = load_settings()
    assert settings.db.pool_size == 42
    assert settings.http.max_body_bytes == 2048
    assert settings.effective_database_url == "sqlite+aiosqlite:////srv/cauce/cauce.db"


def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value fails with a message naming the variable, the problem and the input."""
    monkeypatch.setenv("CAUCE_DB__POOL_SIZE", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "CAUCE_DB__POOL_SIZE" in message
    assert "'lots'" in message
    assert "\n" not in message


@pytest.mark.parametrize("zone", ["Mars/Base", "../../etc/passwd", "", "Europe/"])
def test_an_unknown_crm_time_zone_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """A CRM time zone the tz database lacks is one line naming the variable; it passed
    the settings and stopped `serve` later with a traceback (exit 3)."""
    monkeypatch.setenv("CAUCE_CRM__TIMEZONE", zone)
    with pytest.raises(ConfigError, match="CAUCE_CRM__TIMEZONE: not an IANA time zone"):
        load_settings()
    monkeypatch.setenv("CAUCE_CRM__TIMEZONE", "America/Mexico_City")
    assert load_settings().crm.timezone == "America/Mexico_City"


def test_unknown_nested_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in a nested setting is reported instead of silently ignored."""
    monkeypatch.setenv("CAUCE_HTTP__MAX_BODY", "10")
    with pytest.raises(ConfigError, match="CAUCE_HTTP__MAX_BODY: unknown setting"):
        load_settings()


def test_unknown_top_level_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt top-level variable is reported, not silently ignored."""
    monkeypatch.setenv("CAUCE_DATABSE_URL", "postgresql+psycopg://x/y")
    with pytest.raises(ConfigError, match="CAUCE_DATABSE_URL: unknown setting"):
        load_settings()


def test_kubernetes_service_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubernetes names variables after a namespace's Services: those of a Service
    `cauce-api` start with CAUCE_ and must not stop Cauce from starting (found when the
    manifests in deploy/kubernetes/ were written). A mistyped setting that only looks like
    one is still refused."""
    service = {
        "CAUCE_API_SERVICE_HOST": "10.0.0.7",
        "CAUCE_API_SERVICE_PORT": "8000",
        "CAUCE_API_SERVICE_PORT_HTTP": "8000",
        "CAUCE_API_PORT": "tcp://10.0.0.7:8000",
        "CAUCE_API_PORT_8000_TCP": "tcp://10.0.0.7:8000",
        "CAUCE_API_PORT_8000_TCP_PROTO": "tcp",
        "CAUCE_API_PORT_8000_TCP_PORT": "8000",
        "CAUCE_API_PORT_8000_TCP_ADDR": "10.0.0.7",
    }
    for name, value in service.items():
        monkeypatch.setenv(name, value)
    assert load_settings().http.port == 8000
    monkeypatch.setenv("CAUCE_HTTP_PORT", "9000")  # meant CAUCE_HTTP__PORT
    with pytest.raises(ConfigError, match="CAUCE_HTTP_PORT: unknown setting"):
        load_settings()


def test_default_secret_refused_outside_development() -> None:
    """Production with the built-in secret refuses to start."""
    with pytest.raises(ConfigError, match="CAUCE_SECRET_KEY"):
        load_settings(env="production")
    with pytest.raises(ConfigError, match="CAUCE_SECRET_KEY must be at least 32"):
        load_settings(env="production", secret_key="short")
    assert load_settings(env="production", secret_key=SECRET).env == "production"
    assert load_settings().secret_key.get_secret_value() == DEV_SECRET_KEY


def test_secret_never_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret's value does not appear in a validation message."""
    monkeypatch.setenv("CAUCE_ENV", "production")
    monkeypatch.setenv("CAUCE_SECRET_KEY", "tiny-secret-value")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "tiny-secret-value" not in str(info.value)


def test_database_url_scheme_checked() -> None:
    """Only the two supported drivers are accepted."""
    with pytest.raises(ConfigError, match="postgresql\\+psycopg"):
        load_settings(database_url="mysql://x/y")
    assert not load_settings(database_url="postgresql+psycopg://u:p@h/db").is_sqlite


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file:cauce?mode=memory&cache=shared&uri=true",
    ],
)
def test_an_in_memory_sqlite_database_is_refused(url: str) -> None:
    """It would be gone when the process ends: `cauce apikey create` printed a key no
    process could ever verify (helper-129's CLI audit)."""
    with pytest.raises(ConfigError, match="CAUCE_DATABASE_URL names no database file"):
        load_settings(database_url=url)


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:////var/lib/cauce.db", "sqlite+aiosqlite:///c.db"]
)
def test_a_sqlite_file_is_accepted(url: str) -> None:
    assert load_settings(database_url=url).is_sqlite


def test_toml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """cauce.toml supplies values; environment variables override it."""
    (tmp_path / "cauce.toml").write_text(
        '[http]\nport = 9100\nmax_body_bytes = 4096\n[log]\nlevel = "debug"\n'
    )
    monkeypatch.setenv("CAUCE_HTTP__PORT", "9200")
    settings = load_settings()
    assert settings.http.port == 9200
    assert settings.http.max_body_bytes == 4096
    assert settings.log.level == "debug"


def test_toml_path_from_cauce_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CAUCE_CONFIG points at another file."""
    other = tmp_path / "elsewhere.toml"
    other.write_text("[auth]\ncache_ttl_seconds = 1.5\n")
    monkeypatch.setenv("CAUCE_CONFIG", str(other))
    assert load_settings().auth.cache_ttl_seconds == 1.5


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"[leads\n", "Expected ']' at the end of a table declaration (at line 1, column 7)"),
        (b"\xff\xfe[leads]\n", "not UTF-8 text"),
    ],
)
def test_a_broken_config_file_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes, said: str
) -> None:
    """Before: a traceback (`TOMLDecodeError`, `UnicodeDecodeError`) and exit 1 (found by
    a black-box audit of the configuration)."""
    broken = tmp_path / "cauce.toml"
    broken.write_bytes(content)
    monkeypatch.setenv("CAUCE_CONFIG", str(broken))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(broken) in str(info.value)
    assert said in str(info.value)


def test_a_config_file_named_on_purpose_must_be_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only the default `./cauce.toml` is optional: a missing CAUCE_CONFIG file started
    Cauce on its defaults, its routing and scoring rules lost without a word."""
    monkeypatch.setenv("CAUCE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"CAUCE_CONFIG: .*missing\.toml does not exist"):
        load_settings()
    monkeypatch.setenv("CAUCE_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match=r"CAUCE_CONFIG: .* is a directory"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ('[{"team": "t",}]', "CAUCE_LEADS__ROUTING_RULES: not valid JSON"),
        ("mexico", "CAUCE_LEADS__ROUTING_RULES: a structured setting takes a JSON value"),
    ],
)
def test_a_structured_setting_that_is_no_json_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    """Before: a traceback ending in pydantic-settings' SettingsError, naming no variable."""
    monkeypatch.setenv("CAUCE_LEADS__ROUTING_RULES", value)
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_settings()


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start-up."""
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.env = "production"  # type: ignore[misc]


def test_cli_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    """`cauce serve` with a bad variable exits non-zero with a one-line message, no traceback."""
    assert "CAUCE_HTTP__PORT" in serve_refusal(tmp_path, CAUCE_HTTP__PORT="eighty")
