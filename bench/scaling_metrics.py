"""What `python -m bench.scaling` computes from the tasks' histories: pure functions, no services.

Every figure comes from each task's own timeline (`task:{id}:history`, written by the fenced
transitions anyway), read once after the replay: nothing is sampled while the scheduler runs,
so measuring adds no load to what is measured.

- Queueing delay: submit (PENDING) to start (RUNNING), split at DISPATCHED into the time the
  task waited for the leader and the time it waited in the chosen agent's inbox.
- Decisions per second: DISPATCHED transitions per second of the leader's CPU (from the
  harness) and per wall second, overall and in the busiest one-second window (the rate the
  leader reaches when the queue does not run dry).
- Placement quality: at every `step` of the run, how far the busiest agent is above an even
  spread of the tasks assigned at that moment (dispatched and not finished): 0 when no agent
  holds more than `ceil(assigned / agents)`. Time-averaged, and its maximum. An even spread
  is the best any strategy can do with the same tasks, whatever the load.
- The most tasks waiting on one agent at any instant: dispatched and not yet started (in its
  inbox, or taken from it and being claimed; the leader bounds the inbox itself to
  `scheduler_agent_backlog`, 2 by default).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.measure import percentile

FINAL = ("SUCCESS", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class Timeline:
    """One task's life as its history tells it (Unix times; None = never happened)."""

    task_id: str
    agent: str | None
    created: float | None
    dispatched: float | None  # the first DISPATCHED
    started: float | None  # the first RUNNING
    ended: float | None  # the last final state
    succeeded: bool
    runs: int  # RUNNING transitions: more than 1 is a task run twice
    dispatches: int  # DISPATCHED transitions (more than 1 after a failover)


def timeline(task_id: str, entries: Iterable[bytes | str | dict], agent: str | None) -> Timeline:
    created = dispatched = started = ended = None
    succeeded = False
    runs = dispatches = 0
    for raw in entries:
        e = raw if isinstance(raw, dict) else json.loads(raw)
        state, at = e.get("state"), float(e["at"])
        if state == "PENDING" and created is None:
            created = at
        elif state == "DISPATCHED":
            dispatches += 1
            dispatched = at if dispatched is None else dispatched
        elif state == "RUNNING":
            runs += 1
            started = at if started is None else started
        elif state in FINAL:
            ended = at
            succeeded = state == "SUCCESS"
    return Timeline(
        task_id, agent, created, dispatched, started, ended, succeeded, runs, dispatches
    )


def peak_rate(times: Sequence[float], window: float = 1.0) -> float:
    """The most events in any `window` seconds, per second."""
    ordered = sorted(times)
    best = lo = 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window


def max_depth(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at one instant (an end before a start at a tie)."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda e: (e[0], e[1]),
    )
    depth = best = 0
    for _, delta in events:
        depth += delta
        best = max(best, depth)
    return best


@dataclass(frozen=True)
class Spread:
    mean_excess: float  # tasks above an even spread held by the busiest agent, time-averaged
    max_excess: int
    busy_samples: int  # samples at which any task was assigned (the average is over these)


def spread(
    assigned: dict[str, list[tuple[float, float]]],
    agents: Sequence[str],
    start: float,
    end: float,
    step: float = 0.01,
) -> Spread:
    """How evenly the tasks assigned at each moment sit on `agents` (see the module's doc).

    `assigned[agent]` holds each task's [dispatched, ended) on that agent; agents that never
    got a task count as holding none."""
    if not agents:
        raise ValueError("no agents to spread tasks over")
    events = sorted(
        [(s, 1, a) for a, spans in assigned.items() for s, _ in spans]
        + [(e, -1, a) for a, spans in assigned.items() for _, e in spans],
        key=lambda ev: (ev[0], ev[1]),
    )
    load = dict.fromkeys(agents, 0)
    load.update(dict.fromkeys(assigned, 0))
    n = len(load)
    total = i = 0
    excess_sum = 0.0
    max_excess = busy = 0
    for k in range(int((end - start) / step) + 1):
        t = start + k * step
        while i < len(events) and events[i][0] <= t:
            _, delta, agent = events[i]
            load[agent] += delta
            total += delta
            i += 1
        if total <= 0:
            continue
        busy += 1
        excess = max(load.values()) - math.ceil(total / n)
        excess_sum += excess
        max_excess = max(max_excess, excess)
    return Spread(excess_sum / busy if busy else 0.0, max_excess, busy)


def summarize(timelines: Sequence[Timeline], agents: Sequence[str], leader_cpu: float) -> dict:
    """The row of one strategy's trial: decisions, delays, spread, lost and duplicated."""
    placed = [t for t in timelines if t.dispatched is not None]
    dispatch_times = [t.dispatched for t in placed if t.dispatched is not None]
    started = [t for t in timelines if t.started is not None and t.created is not None]
    wait = [1e3 * (t.started - t.created) for t in started]  # type: ignore[operator]
    to_leader = [
        1e3 * (t.dispatched - t.created)  # type: ignore[operator]
        for t in started
        if t.dispatched is not None
    ]
    in_inbox = [
        1e3 * (t.started - t.dispatched)  # type: ignore[operator]
        for t in started
        if t.dispatched is not None
    ]
    by_agent: dict[str, list[tuple[float, float]]] = {}
    inbox: dict[str, list[tuple[float, float]]] = {}
    for t in placed:
        if t.agent is None or t.dispatched is None:
            continue
        end = t.ended if t.ended is not None else t.dispatched
        by_agent.setdefault(t.agent, []).append((t.dispatched, end))
        if t.started is not None:
            inbox.setdefault(t.agent, []).append((t.dispatched, t.started))
    first = min((t.created for t in timelines if t.created is not None), default=0.0)
    last = max((t.ended for t in timelines if t.ended is not None), default=first)
    even = spread(by_agent, agents, first, last)
    per_agent = [len(by_agent.get(a, [])) for a in agents]
    span = (max(dispatch_times) - min(dispatch_times)) if len(dispatch_times) > 1 else 0.0
    return {
        "tasks": len(timelines),
        "placements": len(dispatch_times),
        "decisions_per_cpu_s": len(dispatch_times) / leader_cpu if leader_cpu > 0 else math.nan,
        "decisions_per_s": len(dispatch_times) / span if span > 0 else math.nan,
        "peak_decisions_per_s": peak_rate(dispatch_times) if dispatch_times else 0.0,
        "leader_cpu_ms_per_task": (
            1e3 * leader_cpu / len(dispatch_times) if dispatch_times else math.nan
        ),
        "wait_p50_ms": percentile(wait, 50),
        "wait_p99_ms": percentile(wait, 99),
        "to_leader_p99_ms": percentile(to_leader, 99),
        "in_inbox_p99_ms": percentile(in_inbox, 99),
        "mean_excess": even.mean_excess,
        "max_excess": even.max_excess,
        "max_waiting_on_agent": max((max_depth(spans) for spans in inbox.values()), default=0),
        "tasks_per_agent_min": min(per_agent) if per_agent else 0,
        "tasks_per_agent_max": max(per_agent) if per_agent else 0,
        "tasks_per_agent_cv": (
            statistics.pstdev(per_agent) / statistics.mean(per_agent)
            if per_agent and statistics.mean(per_agent) > 0
            else math.nan
        ),
        "lost": sum(1 for t in timelines if not (t.ended is not None and t.succeeded)),
        "duplicated": sum(1 for t in timelines if t.runs > 1),
    }
