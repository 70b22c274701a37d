"""Assert eventually-true facts with a bounded retry, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    probe: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call `probe` until it returns a truthy value (returned) or `timeout` passes.

    An AssertionError raised by the probe counts as "not yet"; the last one is re-raised with the
    time spent, so a failing test says what it was waiting for.
    """
    deadline = time.monotonic() + timeout
    last_error: AssertionError | None = None
    value: T | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else f" (last value {value!r})"
            raise AssertionError(f"{message} not true after {timeout:.1f}s{detail}")
        time.sleep(interval)
