"""Durations (`30d`, `12h`, `90m`, `3600s`) for retention, and the settings that use them."""

import pytest

from common.adapters.redis_dead_letter import DEFAULT_DEAD_LETTER_MAX
from common.config import ConfigError, load_settings
from common.config.durations import DurationError, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("90m", 90 * 60),
        ("3600s", 3600),
        ("3600", 3600),
        ("1.5h", 5400),
        (" 7D ", 7 * 86400),
        ("0s", 0),
        (42, 42),
        (2.5, 2.5),
    ],
)
def test_a_duration_with_a_unit_is_read_as_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30x", "-1d", "1d2h", "thirty days", "1e3s", "nan"])
def test_anything_else_is_a_one_line_duration_error(text):
    with pytest.raises(DurationError) as err:
        parse_duration(text)
    assert "is not a duration" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", [-1, True])
def test_a_negative_or_boolean_number_is_not_a_duration(value):
    with pytest.raises(DurationError):
        parse_duration(value)


def test_task_retention_defaults_to_a_week_and_reads_durations(monkeypatch):
    monkeypatch.delenv("TASKLAB_TASK_RETENTION", raising=False)
    assert load_settings().task_retention == 7 * 86400
    monkeypatch.setenv("TASKLAB_TASK_RETENTION", "12h")
    assert load_settings().task_retention == 12 * 3600
    monkeypatch.setenv("TASKLAB_TASK_RETENTION", "3600")
    assert load_settings().task_retention == 3600


def test_a_bad_task_retention_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setenv("TASKLAB_TASK_RETENTION", "7x")
    with pytest.raises(ConfigError, match=r"task_retention \(TASKLAB_TASK_RETENTION\): .*'7x'"):
        load_settings()


def test_the_dead_letter_cap_setting_and_the_adapters_default_agree(monkeypatch):
    monkeypatch.delenv("TASKLAB_DEAD_LETTER_MAX", raising=False)
    assert load_settings().dead_letter_max == DEFAULT_DEAD_LETTER_MAX
