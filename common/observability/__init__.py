"""Observability: structured logging now; metrics and tracing join in stage 5."""

from common.observability.logging import bind, configure_logging, get_logger

__all__ = ["bind", "configure_logging", "get_logger"]
