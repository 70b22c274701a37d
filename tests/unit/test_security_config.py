"""[api.*] settings, API_KEYS and JWT_SECRET from the environment, and the production profile's
refusals: one line each, naming the problem and never the secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError, load_settings
from common.config.settings import ROLE_NAMES, check_auth
from common.security import Role
from common.security.authenticator import Authenticator

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
GOOD_SECRET = "0f4c9a8e7b6d5c4b3a29181706f5e4d3c2b1a09f8e7d6c5b"  # 48 random-looking hex digits

CREDENTIAL_VARS = ("API_KEYS", "JWT_SECRET", "TASKLAB_API_KEYS", "TASKLAB_JWT_SECRET")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in (*CREDENTIAL_VARS, "TASKLAB_ENV", "TASKLAB_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("TASKLAB_API__"):
            monkeypatch.delenv(var)


@pytest.fixture
def production(monkeypatch):
    monkeypatch.setenv("TASKLAB_ENV", "production")
    monkeypatch.setenv("TASKLAB_CONFIG_DIR", str(REPO_CONFIG))


def refusal() -> str:
    """The one-line ConfigError the current environment's settings are refused with."""
    with pytest.raises(ConfigError) as err:
        settings = load_settings()
        check_auth(settings)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_the_role_names_configuration_accepts_are_the_roles_security_checks():
    assert set(ROLE_NAMES) == {role.value for role in Role}


def test_auth_is_off_in_the_local_profile_without_keys_or_a_secret():
    settings = load_settings()
    assert settings.api.auth.enabled == "auto" and not settings.auth_enabled
    assert Authenticator.from_settings(settings).enabled is False


def test_auth_turns_on_in_the_local_profile_as_soon_as_keys_or_a_secret_are_set(monkeypatch):
    monkeypatch.setenv("API_KEYS", '{"k-1": ["TaskRead"]}')
    assert load_settings().auth_enabled
    monkeypatch.delenv("API_KEYS")
    monkeypatch.setenv("JWT_SECRET", GOOD_SECRET)
    assert load_settings().auth_enabled


def test_the_prefixed_variables_are_read_and_win_over_the_guides_names(monkeypatch):
    monkeypatch.setenv("API_KEYS", '{"plain": ["TaskRead"]}')
    assert load_settings().api_keys == {"plain": ("TaskRead",)}
    monkeypatch.setenv("TASKLAB_API_KEYS", '{"prefixed": ["Admin", "TaskRead"]}')
    assert load_settings().api_keys == {"prefixed": ("Admin", "TaskRead")}
    monkeypatch.setenv("TASKLAB_JWT_SECRET", GOOD_SECRET)
    assert load_settings().jwt_secret.get_secret_value() == GOOD_SECRET


def test_nested_sections_are_overridden_by_double_underscore_variables(monkeypatch):
    monkeypatch.setenv("TASKLAB_API__RATE_LIMITING__BURST", "7")
    monkeypatch.setenv("TASKLAB_API__SECURITY__CORS_ORIGINS", '["https://a.example"]')
    settings = load_settings()
    assert settings.api.rate_limiting.burst == 7
    assert settings.api.rate_limiting.requests_per_second == 50.0, "the rest of base.toml stays"
    assert settings.api.security.cors_origins == ["https://a.example"]


def test_an_environment_file_overrides_only_the_keys_of_a_table_it_names(tmp_path, monkeypatch):
    base = "[api.rate_limiting]\nburst = 10\nrequests_per_second = 3\n"
    (tmp_path / "base.toml").write_text(base)
    (tmp_path / "staging.toml").write_text("[api.rate_limiting]\nburst = 20\n")
    monkeypatch.setenv("TASKLAB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("TASKLAB_ENV", "staging")
    limits = load_settings().api.rate_limiting
    assert (limits.burst, limits.requests_per_second) == (20, 3.0)


def test_the_body_limit_by_default_fits_the_largest_legal_task(monkeypatch):
    monkeypatch.setenv("TASKLAB_MAX_PAYLOAD_BYTES", "1000")
    assert load_settings().max_body_bytes == 6 * 1000 + 16 * 1024
    monkeypatch.setenv("TASKLAB_API__SECURITY__MAX_BODY_BYTES", "4096")
    assert load_settings().max_body_bytes == 4096


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{bad", "API_KEYS is not valid JSON"),
        ('["k"]', "must be a JSON object"),
        ('{"sekrit-key-1": ["Admn"]}', "entry 1: unknown role 'Admn'"),
        ('{"sekrit-key-1": []}', "entry 1: roles must be a non-empty list"),
        ('{"ok-key": ["Admin"], " sekrit-key-2": ["Admin"]}', "entry 2: a key must be"),
        ('{"sekrit-k\u00e9y": ["Admin"]}', "entry 1: a key must be printable ASCII"),
    ],
)
def test_bad_api_keys_are_one_line_naming_the_problem_and_never_the_key(monkeypatch, raw, expected):
    monkeypatch.setenv("API_KEYS", raw)
    message = refusal()
    assert expected in message and "TASKLAB_API_KEYS or API_KEYS" in message
    assert "sekrit" not in message


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("short-secret", "is 12 bytes; HS256 needs at least 32"),
        ("please-change-me-before-going-live-0123", "placeholder (it contains 'changeme')"),
        ("your-secret-key-goes-here-9f8e7d6c5b4a", "placeholder"),
        ("a" * 64, "repeats too few characters"),
    ],
)
def test_a_weak_or_placeholder_jwt_secret_is_refused_in_any_profile(monkeypatch, secret, expected):
    monkeypatch.setenv("JWT_SECRET", secret)
    message = refusal()
    assert expected in message and secret not in message


def test_a_bad_auth_switch_is_one_clear_message(monkeypatch):
    monkeypatch.setenv("TASKLAB_API__AUTH__ENABLED", "maybe")
    assert refusal() == (
        "invalid configuration: api.auth.enabled (TASKLAB_API__AUTH__ENABLED): "
        "must be auto, true or false, got 'maybe'"
    )


def test_production_refuses_to_start_without_keys_or_a_secret(production):
    settings = load_settings()
    assert settings.api.auth.enabled is True
    with pytest.raises(ConfigError, match="neither API_KEYS nor JWT_SECRET is set"):
        Authenticator.from_settings(settings)


def test_production_starts_with_keys_or_with_a_strong_secret(production, monkeypatch):
    monkeypatch.setenv("TASKLAB_API_KEYS", '{"k-1": ["Admin"]}')
    assert Authenticator.from_settings(load_settings()).enabled
    monkeypatch.delenv("TASKLAB_API_KEYS")
    monkeypatch.setenv("JWT_SECRET", GOOD_SECRET)
    assert Authenticator.from_settings(load_settings()).accepts_tokens


def test_production_refuses_a_placeholder_secret(production, monkeypatch):
    monkeypatch.setenv("JWT_SECRET", "changeme")
    assert "JWT_SECRET is 8 bytes" in refusal()


def test_the_credentials_stay_out_of_the_settings_repr(monkeypatch):
    monkeypatch.setenv("API_KEYS", '{"sekrit-key-1": ["Admin"]}')
    monkeypatch.setenv("JWT_SECRET", GOOD_SECRET)
    text = repr(load_settings())
    assert "sekrit" not in text and GOOD_SECRET not in text


def test_a_production_provider_without_credentials_exits_2_with_one_line(tmp_path):
    env = {
        "TASKLAB_ENV": "production",
        "TASKLAB_CONFIG_DIR": str(REPO_CONFIG),
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "tasklab"), "run", "rpc", "--stage", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "neither API_KEYS nor JWT_SECRET is set" in proc.stderr


def test_cors_origins_may_be_given_comma_separated_or_as_json(monkeypatch):
    monkeypatch.setenv(
        "TASKLAB_API__SECURITY__CORS_ORIGINS", "https://a.example, https://b.example"
    )
    assert load_settings().api.security.cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("TASKLAB_API__SECURITY__CORS_ORIGINS", '["https://c.example"]')
    assert load_settings().api.security.cors_origins == ["https://c.example"]


def test_a_table_in_the_environment_that_is_not_json_is_one_line(monkeypatch):
    monkeypatch.setenv("TASKLAB_API__AUTH", "{not json")
    assert "a list or table in the environment must be JSON" in refusal()
