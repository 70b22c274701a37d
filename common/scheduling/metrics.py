"""What a scheduler shows on its operator port: its term, its epoch, the agents it sees.

Read when scraped from the scheduler's own state (its current term, its counters, its
live-agents view): a standby shows is_leader 0 and epoch 0, the leader its term's epoch, so a
failover reads as one line dropping to 0 as another rises to a higher epoch. The agents'
gauges come from the view, which a scheduler keeps from its first term on: a standby that has
never led serves none of them. Its readiness:
the ZooKeeper session is connected and some scheduler leads (a standby is ready: it is
standing by, which is its job).
"""

from __future__ import annotations

from common.observability import metrics
from common.observability.health import CHECKS


class SchedulerCollector:
    def __init__(self, scheduler) -> None:
        # The Scheduler, duck-typed: common.scheduling.scheduler imports this module.
        self.scheduler = scheduler

    def describe(self):
        return []

    def collect(self):
        scheduler = self.scheduler
        term = scheduler.election._term
        leading = term is not None and term.active
        yield _gauge(metrics.F_IS_LEADER, 1 if leading else 0)
        yield _gauge(metrics.F_EPOCH, term.epoch if term is not None else 0)
        stats = scheduler.stats
        for spec, value in (
            (metrics.F_TERMS, stats.terms),
            (metrics.F_DISPATCHED, stats.dispatched),
            (metrics.F_RECOVERED, stats.recovered),
            (metrics.F_DEPOSED, stats.rejected_stale),
        ):
            family = spec.counter_family()
            family.add_metric([], value)
            yield family
        if scheduler.view.following:
            # A scheduler that keeps no view (a standby before its first term) exports no
            # sample: absent is "unknown", where a 0 would read as "no agents" to an alert.
            agents = scheduler.view.agents()
            yield _gauge(metrics.F_AGENTS_LIVE, len(agents))
            yield _gauge(metrics.F_AGENTS_CAPACITY, sum(a.capacity for a in agents))
            yield _gauge(metrics.F_AGENTS_USED, sum(a.load for a in agents))


def _gauge(spec: metrics.Family, value: float):
    family = spec.gauge_family()
    family.add_metric([], value)
    return family


def observe_scheduler(scheduler) -> None:
    """Serve this scheduler's state and checks. Idempotent (the same names are replaced): the
    scheduler calls it as it starts, a bootstrap may call it earlier (see observe_agent)."""
    metrics.register_collector("scheduler", SchedulerCollector(scheduler))
    election = scheduler.election

    def zookeeper() -> tuple[bool, str]:
        state = election.zk.raw.state
        return state == "CONNECTED", f"session {state}"

    def leader_known() -> tuple[bool, str]:
        contenders = election.contenders()
        if not contenders:
            return False, "no scheduler holds /scheduler-leader"
        term = election._term
        me = " (this one)" if term is not None and term.active else ""
        return True, f"leader {contenders[0]}{me}"

    CHECKS.add("zookeeper", zookeeper)
    CHECKS.add("leader_known", leader_known)
