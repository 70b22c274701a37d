"""`tasklab config validate --file F`: every problem of a file, one line each, exit 2; the
repository's own profiles pass, and the production rules hold for production files only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.cli import main
from common.config.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "config" / "base.toml"


def validate(*args: str):
    return CliRunner().invoke(main.app, ["config", "validate", *args])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, env: str | None = None) -> dict[str, str]:
    """key -> message of every problem (a key named twice keeps both messages)."""
    out: dict[str, str] = {}
    for p in validate_file(path, env, BASE).problems:
        out[p.key] = f"{out[p.key]} | {p.message}" if p.key in out else p.message
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_every_profile_in_the_repository_is_valid(path):
    result = validate("--file", str(path))
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and ": ok (" in result.output


def test_the_production_profile_is_checked_with_the_production_rules():
    result = validate("--file", str(ROOT / "config" / "production.toml"))
    assert "profile production, production rules included" in result.output


def test_each_problem_is_one_line_naming_the_file_and_the_key_and_the_exit_code_is_2(tmp_path):
    path = write(
        tmp_path,
        "local.toml",
        'zk_hostz = "a:1"\nagent_capacity = "many"\nheartbeat_interval = true\n',
    )
    result = validate("--file", str(path), "--base", str(BASE))
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 3, lines
    assert f"{path}: zk_hostz: unknown key; did you mean zk_hosts?" in lines
    assert any(line.startswith(f"{path}: agent_capacity: ") for line in lines)
    assert f"{path}: heartbeat_interval: must be a number, got the boolean true" in lines


def test_unknown_keys_are_found_in_nested_tables_too(tmp_path):
    path = write(tmp_path, "local.toml", "[api.rate_limting]\nburst = 3\n[api.auth]\nenabeld = 1\n")
    found = problems(path)
    assert found["api.rate_limting"] == "unknown key; did you mean api.rate_limiting?"
    assert found["api.auth.enabeld"] == "unknown key; did you mean api.auth.enabled?"


@pytest.mark.parametrize(
    ("line", "key", "says"),
    [
        ("zk_hosts = 2181", "zk_hosts", "must be a string, got the number 2181"),
        ("agent_capacity = 2.5", "agent_capacity", "valid integer"),
        ('log_level = "LOUD"', "log_level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("agent_handlers = 'x:y'", "agent_handlers", "valid list"),
        ('task_retention = "7 weeks"', "task_retention", "is not a duration"),
        ('retention_sweep_interval = "0s"', "retention_sweep_interval", "longer than 0"),
        ('rpc_address = "nohost"', "rpc_address", "is not HOST:PORT"),
        ('api_address = "0.0.0.0:99999"', "api_address", "port 99999 is not in 0-65535"),
        ('metrics_address = "bad host:1"', "metrics_address", "is not a host name"),
        ('kafka_bootstrap = "kafka:9092,broken"', "kafka_bootstrap", "'broken' is not HOST:PORT"),
        ('zk_hosts = "zk1:2181,zk2/chroot"', "zk_hosts", "'zk2' is not HOST:PORT"),
        ('redis_url = "http://redis:6379"', "redis_url", "is not a redis://, rediss://"),
        ("api = 3", "api", "must be a table"),
    ],
)
def test_wrong_types_and_bad_durations_and_addresses_are_problems(tmp_path, line, key, says):
    found = problems(write(tmp_path, "local.toml", line + "\n"))
    assert key in found, found
    assert says in found[key]


def test_a_number_given_as_a_string_is_read_as_the_environment_would_read_it(tmp_path):
    # A ${VAR:-5} is a string: the roles accept "5" for a number, and so does the check.
    path = write(
        tmp_path, "local.toml", 'agent_capacity = "${CAPACITY:-4}"\ntask_retention = "30d"\n'
    )
    assert problems(path) == {}


def test_timers_that_contradict_each_other_are_problems(tmp_path):
    path = write(
        tmp_path,
        "local.toml",
        "heartbeat_interval = 6.0\nheartbeat_ttl = 1.5\nretry_backoff_base = 10\n"
        "retry_backoff_max = 5\n",
    )
    found = problems(path)
    assert "not longer than heartbeat_interval" in found["heartbeat_ttl"]
    assert "not longer than heartbeat_interval" in found["manager_heartbeat_timeout"]
    assert "shorter than retry_backoff_base" in found["retry_backoff_max"]


def test_a_credential_in_any_file_is_a_problem_and_its_value_is_never_printed(tmp_path):
    path = write(
        tmp_path,
        "local.toml",
        'jwt_secret = "changeme"\napi_keys = \'{"sekrit-key": ["Admin"]}\'\n',
    )
    result = validate("--file", str(path), "--base", str(BASE))
    assert result.exit_code == 2
    assert "jwt_secret: a credential in a file" in result.output
    assert "api_keys: a credential in a file" in result.output
    assert "sekrit" not in result.output and "changeme" not in result.output


def test_a_default_for_a_credential_variable_is_a_problem(tmp_path):
    path = write(tmp_path, "local.toml", 'rpc_advertise_host = "${JWT_SECRET:-x}"\n')
    assert "no file can carry a default" in problems(path)["rpc_advertise_host"]


def test_a_variable_without_a_default_is_left_to_the_deployment_and_named(tmp_path):
    path = write(
        tmp_path,
        "production.toml",
        'redis_url = "${REDIS_URL}"\n[api.auth]\nenabled = true\n',
    )
    report = validate_file(path, None, BASE)
    assert report.runtime_vars == ["REDIS_URL"]
    assert "redis_url" not in {p.key for p in report.problems}


def test_production_requires_auth_on_and_no_loopback_service_and_no_text_logs(tmp_path):
    text = (
        'redis_url = "redis://127.0.0.1:6379/0"\nzk_hosts = "zk:2181"\n'
        'kafka_bootstrap = "localhost:9092"\nlog_format = "text"\n'
        '[api.auth]\nenabled = "auto"\n[api.security]\ncors_origins = ["*"]\n'
    )
    found = problems(write(tmp_path, "production.toml", text))
    assert "production requires true" in found["api.auth.enabled"]
    assert "points at 127.0.0.1" in found["redis_url"]
    assert "points at localhost" in found["kafka_bootstrap"]
    assert "zk_hosts" not in found
    assert "is 'text'" in found["log_format"]
    assert "contains '*'" in found["api.security.cors_origins"]


def test_the_same_file_as_another_profile_has_no_production_rules(tmp_path):
    text = '[api.auth]\nenabled = "auto"\n'
    assert "api.auth.enabled" in problems(write(tmp_path, "production.toml", text))
    assert problems(write(tmp_path, "production.toml", text), env="staging") == {}


def test_a_production_rule_broken_by_base_toml_says_so(tmp_path):
    found = problems(write(tmp_path, "production.toml", "[api.auth]\nenabled = true\n"))
    assert found["redis_url"].endswith("(the base.toml value: set it here)")


def test_a_file_that_is_not_toml_or_not_there_is_one_line_and_exit_2(tmp_path):
    broken = write(tmp_path, "local.toml", "a = [\n")
    result = validate("--file", str(broken))
    assert result.exit_code == 2 and result.output.startswith(f"{broken}: (syntax): not valid TOML")
    result = validate("--file", str(tmp_path / "missing.toml"))
    assert result.exit_code == 2 and ": (file): cannot read it" in result.output


def test_the_installed_command_prints_no_traceback_on_a_broken_file(tmp_path):
    broken = write(tmp_path, "production.toml", "[api.auth]\nenabled = 'maybe'\nredis_url = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "config", "validate", "--file", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert all(line.startswith(f"{broken}: ") for line in proc.stdout.splitlines())
    assert "api.auth.enabled: must be auto, true or false" in proc.stdout
