"""Observability: structured logging; Prometheus metrics (metrics.py), each role's operator
port serving /metrics, /health and /ready (http.py) and its readiness checks (health.py)."""

from common.observability.logging import bind, configure_logging, get_logger

__all__ = ["bind", "configure_logging", "get_logger"]
