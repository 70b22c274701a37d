"""What every `tasklab` sub-command shares: one-line errors and the settings.

Its own module so that sub-command modules (`bus`, ...) can use these without importing
`common.cli.main`, which imports them to register their apps: that would be an import cycle.
"""

from __future__ import annotations

import typer

from common.config import ConfigError, Settings, get_settings


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
        raise  # unreachable; keeps type checkers calm
