"""Configuration: `config/base.toml` + `config/<env>.toml` + `TASKLAB_*` environment variables."""

from common.config.settings import (
    PLACEMENT_STRATEGIES,
    ConfigError,
    Settings,
    get_settings,
    load_settings,
)

__all__ = ["ConfigError", "PLACEMENT_STRATEGIES", "Settings", "get_settings", "load_settings"]
