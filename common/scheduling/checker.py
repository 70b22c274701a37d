"""The guarantee checker: a role that measures, all the time, what must never happen.

Pattern: Invariant checker, leader-elected (introduced in stage 5). The rules are pure
(common/domain/guarantees.py); this role feeds them what Redis and ZooKeeper say, one bounded
pass every `checker_interval` seconds, and serves the counts on its operator port:

1. Read the next window of tasks:index (`checker_window` records) and judge each task:
   RUNNING without a live owner (past `checker_owner_grace`, counted from when this checker
   first saw the owner gone), RUNNING past its timeout, stuck in a waiting state.
2. Read every agent's processing list: a task two live agents hold is a duplicate run.
3. Count the dead letters newer than the looked-at mark.
4. When the window reached the end of tasks:index (a cycle), publish the cycle's findings:
   the gauges, and `checker:findings` for `tasklab explain`.

Why leader-elected (stage 2 on, on `/checker-leader`, the scheduler's election recipe): the
checker writes nothing but its findings, so two running at once would be harmless; but each
would read the whole task index, and two sets of gauges make every alert query pick one. A
standby serves `tasklab_checker_is_leader 0` and no findings. Stage 1 has no ZooKeeper: there
the checker is not elected (run one), and an agent is live while its heartbeat key exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from kazoo.exceptions import KazooException
from redis.exceptions import RedisError

from common.adapters.redis_guarantees import RedisGuaranteeReader
from common.domain.guarantees import (
    Deadlines,
    Finding,
    count_by_check,
    duplicate_findings,
    oldest_by_check,
    task_findings,
)
from common.domain.transitions import TaskStatus
from common.observability import get_logger, metrics
from common.observability.health import CHECKS

log = get_logger("tasklab.checker")

# Which agents are live, given the ones a pass needs to know about.
Liveness = Callable[[set[str]], set[str]]
# A dead-letter channel's (entries not looked at, time of the oldest of them).
DeadLetterSource = Callable[[], "tuple[int, float | None]"]


@dataclass
class CheckerReport:
    """What the last pass (and the last full cycle) found: what /metrics serves."""

    task_findings: list[Finding] = field(default_factory=list)  # as of the last cycle
    duplicates: list[Finding] = field(default_factory=list)  # as of the last pass
    # channel ("redis", "kafka") -> (dead letters not looked at, time of the oldest)
    dead_letters: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    cycle_at: float = 0.0
    pass_seconds: float = 0.0

    @property
    def findings(self) -> list[Finding]:
        return [*self.task_findings, *self.duplicates]


def deadlines_of(settings) -> Deadlines:
    return Deadlines(
        owner_grace=settings.checker_owner_grace,
        timeout_grace=settings.checker_timeout_grace,
        per_state={
            TaskStatus.PENDING: settings.checker_pending_deadline,
            TaskStatus.SCHEDULED: settings.checker_scheduled_deadline,
            TaskStatus.DISPATCHED: settings.checker_dispatched_deadline,
        },
    )


class GuaranteeChecker:
    def __init__(
        self,
        reader: RedisGuaranteeReader,
        liveness: Liveness,
        deadlines: Deadlines,
        interval: float = 5.0,
        election=None,
        dead_letter_sources: Mapping[str, DeadLetterSource] | None = None,
    ) -> None:
        self.reader = reader
        # The Redis list always; the Kafka topic from stage 3 (the bootstrap adds it).
        self.dead_letter_sources = {
            "redis": reader.dead_letters_unseen,
            **(dead_letter_sources or {}),
        }
        self.liveness = liveness
        self.deadlines = deadlines
        self.interval = interval
        # A LeaderElection on /checker-leader, or None: always checking (stage 1).
        self.election = election
        self.stopping = threading.Event()
        self.leading = election is None
        self.passes = 0
        self.errors = 0
        self.last_pass_at = 0.0
        self.report = CheckerReport()
        self._cycle: list[Finding] = []
        # (task id, attempt) -> when this checker first saw its RUNNING owner gone.
        self._ownerless: dict[tuple[str, int], float] = {}
        self._ownerless_this_cycle: set[tuple[str, int]] = set()
        self._last_counts: dict[str, int] = {}

    # -- one pass ------------------------------------------------------------------------------
    def run_pass(self, now: float | None = None) -> CheckerReport:
        t0 = time.monotonic()
        now = time.time() if now is None else now
        window, wrapped = self.reader.next_window()
        seen = self.reader.agents_seen()
        owners = {t.agent_id for t in window if t.status == TaskStatus.RUNNING and t.agent_id}
        holders = self.reader.holders(seen | owners)
        named = seen | owners | {a for agents in holders.values() for a in agents}
        live = self.liveness(named)

        for task in window:
            owner_live = None
            since = None
            if task.status == TaskStatus.RUNNING:
                owner_live = bool(task.agent_id) and task.agent_id in live
                key = (task.task_id, task.attempt)
                if not owner_live:
                    since = self._ownerless.setdefault(key, now)
                    self._ownerless_this_cycle.add(key)
            self._cycle.extend(task_findings(task, now, self.deadlines, owner_live, since))

        held = self.reader.tasks(holders)
        duplicates = duplicate_findings(holders, held, live, now)
        dead_letters = {}
        for channel, source in self.dead_letter_sources.items():
            try:
                dead_letters[channel] = source()
            except Exception as exc:  # noqa: BLE001 - one channel down must not stop the checks
                self.errors += 1
                log.warning("cannot count %s dead letters (%s)", channel, exc)
                dead_letters[channel] = self.report.dead_letters.get(channel, (0, None))

        report = self.report
        if wrapped:
            # Forget the owners of tasks that are no longer ownerless: a failover that gives
            # the task back must clear the finding, and a later loss must start a new grace.
            self._ownerless = {
                k: v for k, v in self._ownerless.items() if k in self._ownerless_this_cycle
            }
            self._ownerless_this_cycle = set()
            report = CheckerReport(task_findings=self._cycle, cycle_at=now)
            self._cycle = []
        report.duplicates = duplicates
        report.dead_letters = dead_letters
        report.pass_seconds = time.monotonic() - t0
        self.report = report
        self.reader.publish_findings(report.findings, now)
        self.passes += 1
        self.last_pass_at = time.monotonic()
        if wrapped:
            counts = {c: n for c, n in count_by_check(report.findings).items() if n}
            if counts != self._last_counts:
                log.warning("guarantees broken now: %s", counts or "none")
            self._last_counts = counts
        return report

    # -- running --------------------------------------------------------------------------------
    def run_forever(self) -> None:
        observe_checker(self)
        if self.election is None:
            log.info("checker started (not elected: run one per installation)")
            self._check_until(lambda: False)
            return
        log.info("checker started: contending for %s", self.election.path)
        self.election.run(self._lead, self.stopping)
        log.info("checker stopped")

    def stop(self) -> None:
        self.stopping.set()
        if self.election is not None:
            self.election.cancel()

    def _lead(self, term) -> None:
        log.info("leading the checks (term of node %s)", term.node)
        self.leading = True
        try:
            self._check_until(lambda: term.lost.is_set(), paused=term.suspended.is_set)
        finally:
            self.leading = False
            log.info("no longer leading the checks")

    def _check_until(self, ended: Callable[[], bool], paused: Callable[[], bool] = bool) -> None:
        while not self.stopping.is_set() and not ended():
            if paused():
                # ZooKeeper cannot say whether this checker still leads: check nothing, so two
                # checkers never publish findings over each other.
                self.stopping.wait(0.1)
                continue
            try:
                self.run_pass()
            except (RedisError, KazooException, OSError) as exc:
                self.errors += 1
                log.warning("checker pass failed (%s); next in %gs", exc, self.interval)
            self.stopping.wait(self.interval)


# -- what it serves ---------------------------------------------------------------------------
class CheckerCollector:
    def __init__(self, checker: GuaranteeChecker) -> None:
        self.checker = checker

    def describe(self):
        return []

    def collect(self):
        checker = self.checker
        yield _gauge(metrics.F_CHECKER_LEADER, 1 if checker.leading else 0)
        for spec, value in (
            (metrics.F_CHECKER_PASSES, checker.passes),
            (metrics.F_CHECKER_PASS_ERRORS, checker.errors),
        ):
            family = spec.counter_family()
            family.add_metric([], value)
            yield family
        if not checker.leading or not checker.passes:
            return  # a standby (or a checker that has not looked yet) knows nothing
        report = checker.report
        now = time.time()
        findings = report.findings
        violations = metrics.F_VIOLATIONS.gauge_family()
        for check, count in count_by_check(findings).items():
            violations.add_metric([check], count)
        yield violations
        ages = metrics.F_VIOLATION_AGE.gauge_family()
        for check, age in oldest_by_check(findings, now).items():
            ages.add_metric([check], round(age, 3))
        yield ages
        unseen = metrics.F_DEAD_LETTERS_UNSEEN.gauge_family()
        unseen_age = metrics.F_DEAD_LETTERS_UNSEEN_AGE.gauge_family()
        for channel, (count, oldest) in sorted(report.dead_letters.items()):
            unseen.add_metric([channel], count)
            unseen_age.add_metric([channel], round(max(0.0, now - oldest), 3) if oldest else 0)
        yield unseen
        yield unseen_age
        yield _gauge(metrics.F_CHECKER_CYCLE, report.cycle_at)
        yield _gauge(metrics.F_CHECKER_PASS_SECONDS, report.pass_seconds)


def _gauge(spec: metrics.Family, value: float):
    family = spec.gauge_family()
    family.add_metric([], value)
    return family


def observe_checker(checker: GuaranteeChecker) -> None:
    metrics.register_collector("checker", CheckerCollector(checker))

    def checking() -> tuple[bool, str]:
        if not checker.leading:
            return True, "standing by (another checker leads)"
        if not checker.passes:
            return False, "no pass yet"
        age = time.monotonic() - checker.last_pass_at
        # A pass per interval; three missed in a row means the checks are not running.
        ok = age < 3 * checker.interval + 5
        return ok, f"last pass {age:.1f}s ago"

    CHECKS.add("checks_running", checking)


# -- composition: one function per way a stage runs it ------------------------------------------
def build_checker(
    settings, zk=None, dead_letter_sources: Mapping[str, DeadLetterSource] | None = None
) -> GuaranteeChecker:
    """The checker of a stage: elected over ZooKeeper `zk` if given, else alone on heartbeats."""
    from common.adapters.redis_client import redis_client

    reader = RedisGuaranteeReader(redis_client(settings.redis_url), settings.checker_window)
    if zk is None:
        return GuaranteeChecker(
            reader,
            reader.heartbeating,
            deadlines_of(settings),
            settings.checker_interval,
            dead_letter_sources=dead_letter_sources,
        )
    from common.coordination.election import LeaderElection
    from common.coordination.paths import CHECKER_LEADER, LIVE_AGENTS

    def registered(_named: Iterable[str]) -> set[str]:
        # One round trip whatever the number of agents: the children of /live-agents.
        return set(zk.get_children(LIVE_AGENTS)) if zk.exists(LIVE_AGENTS) else set()

    return GuaranteeChecker(
        reader,
        registered,
        deadlines_of(settings),
        settings.checker_interval,
        election=LeaderElection(zk, settings.checker_id, path=CHECKER_LEADER),
        dead_letter_sources=dead_letter_sources,
    )


def run_checker(
    settings,
    coordinated: bool,
    dead_letter_sources: Mapping[str, DeadLetterSource] | None = None,
) -> None:
    """Run a checker until SIGTERM: elected through ZooKeeper when `coordinated` (stage 2 on);
    `dead_letter_sources` adds channels to the Redis list's (the Kafka topic, stage 3 on)."""
    import signal
    import sys

    from common.adapters.redis_metrics import observe_redis

    zk = None
    if coordinated:
        from common.coordination.zk import CoordinationUnavailable, close_zk, get_zk

        try:
            zk = get_zk(settings)
        except CoordinationUnavailable as exc:
            sys.exit(f"error: {exc}")
    checker = build_checker(settings, zk, dead_letter_sources)
    observe_checker(checker)
    observe_redis(settings.redis_url)
    signal.signal(signal.SIGTERM, lambda *_: checker.stop())
    signal.signal(signal.SIGINT, lambda *_: checker.stop())
    try:
        checker.run_forever()
    finally:
        if coordinated:
            close_zk(settings)
