"""Durations as people write them: `30d`, `12h`, `90m`, `3600s`, or plain seconds.

Used by the retention setting (`task_retention = "7d"`) and `tasklab data cleanup
--older-than 30d`, so a config file and the command line read a duration the same way.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


class DurationError(ValueError):
    """Not a duration. Its message is one line, fit for a terminal."""


def parse_duration(text: str | float | int) -> float:
    """Seconds in `text`: a number with an optional unit s, m, h or d (no unit = seconds)."""
    if isinstance(text, bool):
        raise DurationError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"{text} is not a duration: it must not be negative")
        return float(text)
    match = _DURATION.match(text.lower())
    if not match:
        raise DurationError(
            f"{text!r} is not a duration: use a number and a unit s, m, h or d "
            "(30d, 12h, 90m, 3600s)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]
