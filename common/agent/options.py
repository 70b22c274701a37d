"""What every stage's bootstrap builds the same way for its agent, from the settings."""

from __future__ import annotations

from typing import Any

from common.config import ConfigError, Settings
from common.executors import ExecutorLimits, default_factory
from common.executors.factory import ExecutorFactory
from common.executors.handler import HandlerRegistrationError, check_handlers


def executors_for(settings: Settings) -> ExecutorFactory:
    handlers = tuple(settings.agent_handlers)
    try:
        # A handler that cannot be imported stops the agent at start-up, in one line, rather
        # than failing every task that names it.
        check_handlers(handlers)
    except HandlerRegistrationError as exc:
        raise ConfigError(str(exc)) from None
    return default_factory(
        ExecutorLimits(
            output_cap_bytes=settings.output_cap_bytes, max_log_lines=settings.max_log_lines
        ),
        handlers=handlers,
        handler_mode=settings.agent_handler_mode,
        handler_max_calls=settings.agent_handler_max_calls,
    )


def agent_options(settings: Settings) -> dict[str, Any]:
    """The Agent's keyword arguments that come straight from the settings."""
    return {
        "capacity": settings.agent_capacity,
        "heartbeat_interval": settings.heartbeat_interval,
        "stop_grace": settings.agent_stop_grace,
    }
