"""The scaling simulation's pure parts: the recorded workload and the placement metrics.

`python -m bench.scaling` replays one committed workload against every placement strategy and
reads its figures off the tasks' histories; these tests pin down that the workload is what its
seed says and that each metric computes what docs/scaling.md says it does.
"""

import json
import math

import pytest

from bench.scaling_agents import SleepExecutor
from bench.scaling_metrics import max_depth, peak_rate, spread, summarize, timeline
from bench.scaling_workload import (
    DEFAULT_FILE,
    Phase,
    generate,
    load,
    to_json,
)
from common.domain.task import Task, TaskType


# -- the workload ------------------------------------------------------------------------------
def test_the_same_seed_always_generates_the_same_workload():
    assert generate(7) == generate(7)
    assert generate(7).arrivals != generate(8).arrivals


def test_the_committed_workload_is_what_its_seed_generates():
    committed = load(DEFAULT_FILE)
    assert committed == generate(committed.seed, committed.phases, committed.name)
    assert DEFAULT_FILE.read_text() == to_json(committed)


def test_a_workload_survives_its_file_format(tmp_path):
    workload = generate(3, (Phase(0.0, 2.0, 50.0),))
    path = tmp_path / "w.json"
    path.write_text(to_json(workload))
    assert load(path) == workload


def test_arrivals_follow_the_phases_rates_and_stay_in_order():
    # Given a quiet phase and a burst ten times as dense
    workload = generate(11, (Phase(0.0, 10.0, 20.0), Phase(10.0, 12.0, 200.0)))
    quiet = [a for a in workload.arrivals if a.at < 10.0]
    burst = [a for a in workload.arrivals if a.at >= 10.0]
    # Then each phase holds about rate x length arrivals (Poisson: within a few sigma)
    assert abs(len(quiet) - 200) < 5 * math.sqrt(200)
    assert abs(len(burst) - 400) < 5 * math.sqrt(400)
    assert [a.at for a in workload.arrivals] == sorted(a.at for a in workload.arrivals)
    assert all(0.001 <= a.duration <= 2.0 for a in workload.arrivals)


def test_a_quick_run_replays_only_the_first_seconds():
    workload = generate(5, (Phase(0.0, 10.0, 30.0),))
    assert all(a.at < 4.0 for a in workload.until(4.0).arrivals)
    assert 0 < len(workload.until(4.0).arrivals) < len(workload.arrivals)


def test_a_file_that_is_not_a_workload_is_refused_with_its_name(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "seed": 1, "phases": [[0, 1]], "arrivals": []}))
    with pytest.raises(ValueError, match="bad.json is not a workload file"):
        load(path)


# -- the metrics -------------------------------------------------------------------------------
def entry(state, at):
    return json.dumps({"state": state, "at": at})


def history(created, dispatched, started, ended, final="SUCCESS", runs=1):
    rows = [entry("PENDING", created), entry("SCHEDULED", created), entry("DISPATCHED", dispatched)]
    rows += [entry("RUNNING", started)] * runs
    return rows + [entry(final, ended)]


def test_a_timeline_reads_submit_dispatch_start_and_end_from_the_history():
    t = timeline("t1", history(10.0, 10.5, 11.0, 12.0), "a")
    assert (t.created, t.dispatched, t.started, t.ended) == (10.0, 10.5, 11.0, 12.0)
    assert t.succeeded and t.runs == 1 and t.dispatches == 1 and t.agent == "a"


def test_a_task_started_twice_counts_as_duplicated_and_one_never_finished_as_lost():
    twice = timeline("t1", history(0.0, 0.1, 0.2, 0.3, runs=2), "a")
    unfinished = timeline("t2", [entry("PENDING", 0.0), entry("DISPATCHED", 0.1)], "a")
    row = summarize([twice, unfinished], ["a"], leader_cpu=1.0)
    assert row["duplicated"] == 1
    assert row["lost"] == 1


def test_peak_rate_is_the_most_events_in_any_one_second_window():
    # 3 events in [0, 1), then 5 within 0.4 s
    times = [0.0, 0.5, 0.9, 5.0, 5.1, 5.2, 5.3, 5.4]
    assert peak_rate(times) == 5
    assert peak_rate(times, window=0.25) == 3 / 0.25


def test_max_depth_counts_the_most_intervals_open_at_once():
    assert max_depth([(0, 2), (1, 3), (1.5, 4), (3, 5)]) == 3
    # An interval ending exactly when another starts does not overlap it
    assert max_depth([(0, 1), (1, 2), (2, 3)]) == 1
    assert max_depth([]) == 0


def test_an_even_spread_has_no_excess_and_a_pile_up_on_one_agent_does():
    # Given two agents and two tasks held at the same time
    even = spread({"a": [(0.0, 1.0)], "b": [(0.0, 1.0)]}, ["a", "b"], 0.0, 1.0, step=0.1)
    piled = spread({"a": [(0.0, 1.0), (0.0, 1.0)]}, ["a", "b"], 0.0, 1.0, step=0.1)
    # Then the even one never has an agent above ceil(2 / 2) = 1, the piled one always 1 above
    assert even.mean_excess == 0 and even.max_excess == 0
    assert piled.mean_excess == 1 and piled.max_excess == 1


def test_the_spread_counts_agents_that_got_nothing_and_skips_idle_moments():
    # One task on one of four agents: even (ceil(1/4) = 1), over the tenth of the time it runs
    s = spread({"a": [(0.0, 0.1)]}, ["a", "b", "c", "d"], 0.0, 1.0, step=0.01)
    assert s.mean_excess == 0
    assert 9 <= s.busy_samples <= 11
    # Three tasks on one of four agents: 3 - ceil(3/4) = 2 above an even spread
    s = spread({"a": [(0.0, 0.5)] * 3}, ["a", "b", "c", "d"], 0.0, 1.0, step=0.01)
    assert s.max_excess == 2


def test_summarize_reports_decisions_delays_and_tasks_per_agent():
    # Given four tasks on two agents, the leader having spent 0.02 s of CPU on them
    timelines = [
        timeline("t1", history(0.0, 0.010, 0.020, 0.1), "a"),
        timeline("t2", history(0.0, 0.020, 0.030, 0.1), "b"),
        timeline("t3", history(0.0, 0.030, 0.040, 0.1), "a"),
        timeline("t4", history(1.0, 1.010, 1.100, 1.2), "a"),
    ]
    row = summarize(timelines, ["a", "b", "c"], leader_cpu=0.02)
    assert row["placements"] == 4
    assert row["decisions_per_cpu_s"] == pytest.approx(200)
    assert row["leader_cpu_ms_per_task"] == pytest.approx(5)
    assert row["peak_decisions_per_s"] == 3
    # submit -> start: 20, 30, 40, 100 ms (nearest rank)
    assert row["wait_p50_ms"] == pytest.approx(30)
    assert row["wait_p99_ms"] == pytest.approx(100)
    assert row["in_inbox_p99_ms"] == pytest.approx(90)
    assert (row["tasks_per_agent_min"], row["tasks_per_agent_max"]) == (0, 3)
    assert row["max_waiting_on_agent"] == 1
    assert row["lost"] == row["duplicated"] == 0


# -- the simulated agent's executor --------------------------------------------------------------
def sleep_task(payload, timeout=60):
    return Task(
        task_id="t1",
        task_name="sim",
        task_type=TaskType.SHELL,
        payload=payload,
        execution_timeout=timeout,
    )


def test_the_simulated_agent_sleeps_the_recorded_duration_and_succeeds():
    result = SleepExecutor(warm_fork=False).run(sleep_task("sleep 0.02"))
    assert result.success
    assert result.duration >= 0.02


def test_the_simulated_agent_refuses_anything_but_a_sleep_with_the_reason():
    result = SleepExecutor(warm_fork=False).run(sleep_task("echo hi"))
    assert not result.success
    assert "only sleeps" in result.error


def test_the_simulated_agent_stops_a_sleep_that_is_cancelled():
    result = SleepExecutor(warm_fork=False).run(sleep_task("sleep 5"), should_cancel=lambda: True)
    assert result.cancelled and not result.success
    assert result.duration < 1
