"""A settings error names the value where the user wrote it: the settings file and its key
(`cauce.toml: leads.routing_rules[0].team`) for a value from the file, the environment
variable (`CAUCE_HTTP__PORT`) for one from the environment or a keyword argument (before:
always a variable, one nobody had set for a value written in cauce.toml)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cauce.core.config import Settings, load_settings
from cauce.core.errors import ConfigError
from cauce.leads.wiring import check_settings

SUR = {"team": "sur", "regions": ["Andalucía"]}
SEVILLA = {"team": "sevilla", "countries": ["ES"], "regions": ["Sevilla"]}
TEAMS = '[leads.teams]\nsur = [{ name = "Ana" }]\nsevilla = [{ name = "Luis" }]\n'


def test_a_bad_value_in_the_settings_file_names_the_file_and_its_key(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value from cauce.toml was reported as an environment variable nobody had set."""
    text = '[http]\nport = "abc"\nprot = 1\n[[leads.routing_rules]]\nteam = "x"\n'
    with pytest.raises(ConfigError) as refusal:
        toml(text)
    assert str(refusal.value) == (
        "invalid configuration: cauce.toml: http.port: Input should be a valid integer, "
        "unable to parse string as an integer (got 'abc'); cauce.toml: http.prot: unknown "
        "setting (got 1); cauce.toml: leads.routing_rules[0].team: names a team not in "
        "leads.teams (teams: none) (got 'x')"
    )
    monkeypatch.setenv("CAUCE_HTTP__PORT", "y")  # a variable wins over the file: named
    with pytest.raises(ConfigError, match=r"^invalid configuration: CAUCE_HTTP__PORT: "):
        toml(text)


def test_a_keyword_argument_wins_over_the_file_and_is_named_as_a_variable(
    clean_env: None, tmp_path: Path
) -> None:
    """Keyword arguments (tests, the CLI) win over the file: the file is not blamed."""
    (tmp_path / "cauce.toml").write_text('[http]\nport = "abc"\n')
    with pytest.raises(ConfigError, match=r"^invalid configuration: CAUCE_HTTP__PORT: .*'z'"):
        load_settings(http={"port": "z"})


def test_a_value_missing_from_a_table_in_the_file_names_the_files_key(
    toml: Callable[[str], Settings],
) -> None:
    """A scoring rule written without a required key, or without the value its test
    needs, is the file's rule: the file's key is named."""
    text = '[[leads.scoring_rules]]\nname = "big"\npoints = 5\nfield = "custom.empleados"\n'
    with pytest.raises(ConfigError) as refusal:
        toml(text)
    assert str(refusal.value) == (
        "invalid configuration: cauce.toml: leads.scoring_rules[0].reason: Field required"
    )
    with pytest.raises(ConfigError) as refusal:
        toml(f'{text}reason = "size"\ntest = "gte"\n')
    assert str(refusal.value).startswith(
        "invalid configuration: cauce.toml: leads.scoring_rules[0].value: test 'gte' needs"
    )


def test_a_key_toml_would_quote_is_quoted_and_the_file_is_the_one_named(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team named with a space is a quoted key; `CAUCE_CONFIG` names the file read."""
    path = tmp_path / "etc" / "ventas.toml"
    path.parent.mkdir()
    path.write_text('[leads]\ndefault_team = "zona sur"\n[leads.teams]\n"zona sur" = []\n')
    monkeypatch.setenv("CAUCE_CONFIG", str(path))
    with pytest.raises(ConfigError) as refusal:
        load_settings()
    assert str(refusal.value).startswith(
        f'invalid configuration: {path}: leads.teams."zona sur": no member with a capacity '
        "above 0, yet default_team sends leads to it"
    )


def test_a_structured_variable_is_named_though_the_file_has_the_setting_too(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable holding the whole list replaces the file's: its name is given."""
    monkeypatch.setenv("CAUCE_LEADS__ROUTING_RULES", '[{"team": "nope"}]')
    with pytest.raises(ConfigError) as refusal:
        toml(f'[[leads.routing_rules]]\nteam = "sur"\n{TEAMS}')
    assert str(refusal.value).startswith(
        "invalid configuration: CAUCE_LEADS__ROUTING_RULES: [0].team: names a team not in "
        "leads.teams (teams: sevilla, sur) (got 'nope')"
    )


def test_the_leads_start_up_check_names_the_rule_where_it_was_written(
    toml: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A province's rule after its community's (`wiring.check_settings`) is named as the
    settings' own checks name it: the file's key, or the variable that gave the rules."""
    rules = "".join(
        "[[leads.routing_rules]]\n"
        + "".join(
            f"{key} = {json.dumps(value, ensure_ascii=False)}\n" for key, value in rule.items()
        )
        for rule in (SUR, SEVILLA)
    )
    with pytest.raises(ConfigError) as refusal:
        check_settings(toml(rules + TEAMS))
    assert str(refusal.value).startswith(
        "invalid configuration: cauce.toml: leads.routing_rules[1]: can never match: "
        "routing rule 0 before it (team sur)"
    )
    monkeypatch.setenv("CAUCE_LEADS__ROUTING_RULES", json.dumps([SUR, SEVILLA]))
    with pytest.raises(ConfigError) as refusal:
        check_settings(toml(TEAMS))
    assert str(refusal.value).startswith(
        "invalid configuration: CAUCE_LEADS__ROUTING_RULES: [1]: can never match: "
        "routing rule 0 before it (team sur)"
    )


def test_a_map_key_is_named_as_the_file_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad key of a table (a blank team's name) is named by the file's key, without the
    `[key]` pydantic adds to its location (before: `CAUCE_LEADS__TEAMS__ __[KEY]`; review,
    helper-138)."""
    for name in [n for n in os.environ if n.startswith("CAUCE_")]:
        monkeypatch.delenv(name)
    (tmp_path / "cauce.toml").write_text('[leads.teams]\n" " = [{ name = "Ana" }]\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert 'cauce.toml: leads.teams." ": is blank' in str(refused.value)
