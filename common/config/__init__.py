"""Configuration: `config/base.toml` + `config/<env>.toml` + `TASKLAB_*` environment variables."""

from common.config.settings import (
    ConfigError,
    PlacementName,
    Settings,
    get_settings,
    load_settings,
)

__all__ = ["ConfigError", "PlacementName", "Settings", "get_settings", "load_settings"]
