"""Configuration layers, ${VAR:-default} substitution, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from common.config import ConfigError, load_settings
from common.config.settings import substitute


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    (tmp_path / "base.toml").write_text(
        'redis_url = "${MY_REDIS:-redis://base:6379/0}"\nagent_capacity = 3\n'
    )
    (tmp_path / "staging.toml").write_text("agent_capacity = 5\n")
    monkeypatch.setenv("TASKLAB_CONFIG_DIR", str(tmp_path))
    for var in ("TASKLAB_ENV", "TASKLAB_AGENT_CAPACITY", "TASKLAB_REDIS_URL", "MY_REDIS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_substitution_uses_the_environment_then_the_default():
    assert substitute("${A:-x}", {"A": "set"}) == "set"
    assert substitute("${A:-x}", {}) == "x"
    assert substitute("a-${A}-b", {"A": "1"}) == "a-1-b"
    with pytest.raises(ConfigError, match=r"\$\{A\}"):
        substitute("${A}", {})


def test_files_are_layered_and_environment_variables_win(config_dir, monkeypatch):
    assert load_settings().agent_capacity == 3
    assert load_settings().redis_url == "redis://base:6379/0"
    monkeypatch.setenv("TASKLAB_ENV", "staging")
    assert load_settings().agent_capacity == 5
    monkeypatch.setenv("TASKLAB_AGENT_CAPACITY", "7")
    monkeypatch.setenv("MY_REDIS", "redis://fromenv:1/0")
    s = load_settings()
    assert (s.agent_capacity, s.redis_url) == (7, "redis://fromenv:1/0")


def test_an_unknown_environment_is_a_clear_error(config_dir, monkeypatch):
    monkeypatch.setenv("TASKLAB_ENV", "prod")
    with pytest.raises(ConfigError, match="no config file for environment 'prod'"):
        load_settings()


def test_invalid_values_are_one_line_naming_the_variable(config_dir, monkeypatch):
    monkeypatch.setenv("TASKLAB_AGENT_CAPACITY", "0")
    monkeypatch.setenv("TASKLAB_AGENT_CLAIM", "sometimes")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "\n" not in message
    assert "TASKLAB_AGENT_CAPACITY" in message and "TASKLAB_AGENT_CLAIM" in message


def test_the_cli_reports_invalid_config_in_one_line_and_exits_2(config_dir):
    env = {"TASKLAB_CONFIG_DIR": str(config_dir), "TASKLAB_AGENT_CAPACITY": "zero", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: invalid configuration: agent_capacity")
    assert "Traceback" not in proc.stderr
