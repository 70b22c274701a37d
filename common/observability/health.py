"""Readiness checks: what a role needs to do its work now, each asked with a time limit.

`/health` (liveness) says only that the process answers: a probe that fails it gets the
process restarted, and restarting every agent because Redis is down would make an outage
worse. `/ready` (readiness) asks each check the role registered (Redis answers, the ZooKeeper
session is connected, a leader is known, heartbeats go through) and answers 503 while any
fails, so a load balancer or an operator sees *which* dependency is missing.

Each check runs in its own thread with a deadline: a hung dependency makes its check fail
after `timeout`, never the probe hang. A process starts with no checks, and is not ready until
its role has registered some (a role still connecting is not ready either).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# A check answers (ok, detail), a bool, or a detail string (= ok), or raises: "not ok", with
# the exception as its detail.
Check = Callable[[], "tuple[bool, str] | bool | str"]

CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency_ms: float

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail, "latencyMs": round(self.latency_ms, 1)}


class ReadinessChecks:
    def __init__(self, timeout: float = CHECK_TIMEOUT) -> None:
        self.timeout = timeout
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()

    def add(self, name: str, check: Check) -> None:
        """Register (or replace) the check called `name`."""
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self._checks.clear()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._checks)

    def run(self) -> tuple[bool, dict[str, CheckResult]]:
        """Run every check side by side; (all ok and at least one check, results by name)."""
        with self._lock:
            checks = dict(self._checks)
        results: dict[str, CheckResult] = {}
        threads = []
        for name, check in checks.items():
            # A daemon thread per check and per probe: one stuck on a dead socket neither
            # holds the probe past its deadline nor keeps the process from exiting.
            thread = threading.Thread(
                target=lambda n=name, c=check: results.__setitem__(n, _timed(c)),
                name=f"ready-check-{name}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        deadline = time.monotonic() + self.timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        answered = dict(results)  # a late answer must not change what this probe says
        for name in checks:
            if name not in answered:
                answered[name] = CheckResult(False, f"no answer within {self.timeout:g}s", 0.0)
        ok = bool(answered) and all(r.ok for r in answered.values())
        return ok, answered


def _timed(check: Check) -> CheckResult:
    t0 = time.monotonic()
    try:
        answer = check()
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is "not ready"
        return CheckResult(False, f"{type(exc).__name__}: {exc}"[:300], _ms(t0))
    if isinstance(answer, str):  # a detail: answering at all is ok
        return CheckResult(True, answer, _ms(t0))
    ok, detail = answer if isinstance(answer, tuple) else (bool(answer), "")
    return CheckResult(bool(ok), detail or ("ok" if ok else "failed"), _ms(t0))


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000


# The process's checks, as prometheus_client.REGISTRY is the process's metrics: one role per
# process registers into it, and the HTTP server reads it.
CHECKS = ReadinessChecks()
