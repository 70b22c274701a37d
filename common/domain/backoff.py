"""Backoff between automatic retries.

Exponential with "equal jitter": retry n waits a random time in [c/2, c], where
c = min(max, base * 2^(n-1)). Half the delay is guaranteed (so retries really back off), half
is random.
Jitter matters when many tasks fail together (a dependency went down): without it they all
retry in the same instant and knock the dependency over again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ExponentialBackoff:
    base: float = 1.0
    maximum: float = 30.0
    jitter: bool = True

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.maximum, self.base * (2 ** max(retry_number - 1, 0)))
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(ceiling / 2, ceiling)
