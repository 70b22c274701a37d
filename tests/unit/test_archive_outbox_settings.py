"""The outbox's two figures (how long before another archiver takes over an entry, how long
before a silent consumer name is forgotten) are settings: durations, checked at start."""

import subprocess
import sys
from pathlib import Path

import pytest

from common.archive.outbox import CLAIM_IDLE, FORGET_AFTER
from common.config import ConfigError, load_settings
from common.config.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_outbox_variables(monkeypatch):
    for var in ("TASKLAB_ARCHIVE_CLAIM_IDLE", "TASKLAB_ARCHIVE_FORGET_AFTER", "TASKLAB_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TASKLAB_CONFIG_DIR", str(ROOT / "config"))


def test_the_defaults_are_a_minute_and_an_hour_in_the_model_the_archiver_and_base_toml():
    settings = load_settings()
    assert (settings.archive_claim_idle, settings.archive_forget_after) == (60.0, 3600.0)
    assert (CLAIM_IDLE, FORGET_AFTER) == (60.0, 3600.0)


def test_both_read_durations_or_seconds_from_the_environment(monkeypatch):
    monkeypatch.setenv("TASKLAB_ARCHIVE_CLAIM_IDLE", "90s")
    monkeypatch.setenv("TASKLAB_ARCHIVE_FORGET_AFTER", "2h")
    settings = load_settings()
    assert (settings.archive_claim_idle, settings.archive_forget_after) == (90.0, 7200.0)
    monkeypatch.setenv("TASKLAB_ARCHIVE_CLAIM_IDLE", "2.5")
    assert load_settings().archive_claim_idle == 2.5


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TASKLAB_ARCHIVE_CLAIM_IDLE", "0", "archive_claim_idle (TASKLAB_ARCHIVE_CLAIM_IDLE): "),
        ("TASKLAB_ARCHIVE_CLAIM_IDLE", "soon", "'soon' is not a duration"),
        ("TASKLAB_ARCHIVE_FORGET_AFTER", "1 week", "archive_forget_after (TASKLAB_ARCHIVE_FORG"),
        ("TASKLAB_ARCHIVE_FORGET_AFTER", "0s", "greater than 0"),
    ],
)
def test_a_bad_value_is_a_one_line_error_naming_the_variable(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "\n" not in str(err.value)
    assert says in str(err.value)


def test_the_archiver_refuses_to_start_on_a_bad_value_in_one_line_and_exits_2():
    env = {
        "TASKLAB_CONFIG_DIR": str(ROOT / "config"),
        "TASKLAB_ARCHIVE_CLAIM_IDLE": "-1m",
        "PATH": "",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "run", "archiver", "--stage", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: invalid configuration: archive_claim_idle"), proc.stderr


def test_config_validate_says_a_bad_duration_in_a_file(tmp_path):
    path = tmp_path / "local.toml"
    path.write_text('archive_claim_idle = "a minute"\narchive_forget_after = "0s"\n')
    found = {p.key: p.message for p in validate_file(path).problems}
    assert "is not a duration" in found["archive_claim_idle"]
    assert "must be longer than 0" in found["archive_forget_after"]


def test_the_archivers_kafka_session_is_a_setting_with_heartbeats_at_a_third_of_it(monkeypatch):
    from common.archive.role import session_config

    # Kafka's own 45 s by default, the shortest a broker accepts in the test profile
    assert load_settings().archive_session_timeout == 45.0
    monkeypatch.setenv("TASKLAB_ENV", "test")
    assert load_settings().archive_session_timeout == 6.0
    assert session_config(load_settings()) == {
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 2000,
    }
    # ...and outside what a broker accepts, a configuration error at start
    monkeypatch.setenv("TASKLAB_ARCHIVE_SESSION_TIMEOUT", "5")
    with pytest.raises(ConfigError, match="archive_session_timeout"):
        load_settings()
