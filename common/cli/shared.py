"""What every `tasklab` sub-command shares: one-line errors and the settings.

Its own module so that sub-command modules (`bus`, ...) can use these without importing
`common.cli.main`, which imports them to register their apps: that would be an import cycle.
"""

from __future__ import annotations

from common.cli.errors import fail
from common.config import ConfigError, Settings, get_settings

__all__ = ["fail", "settings"]


def settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
        raise  # unreachable; keeps type checkers calm
