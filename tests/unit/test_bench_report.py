"""The benchmark's arithmetic: percentiles, medians over repetitions, ratios to Celery."""

import math

from bench.measure import median, percentile
from bench.report import markdown, summarize, table


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_median_ignores_missing_figures():
    assert median([3.0, float("nan"), 1.0, 2.0]) == 2.0
    assert math.isnan(median([float("nan")]))


def trial(system, rep, burst, p99):
    return {
        "system": system,
        "workload": "noop",
        "rep": rep,
        "burst": {"tasks_per_s": burst, "worker_cpu_ms_per_task": 1.0},
        "steady": {"start_p99_ms": p99, "start_ms": [1.0, 2.0]},
        "lost": 0,
        "duplicated": 0,
        "failed": 0,
    }


def test_figures_are_medians_and_ratios_are_to_celery_from_the_same_run():
    trials = [
        trial("tasklab-stage1", 0, 300, 4.0),
        trial("tasklab-stage1", 1, 500, 2.0),
        trial("tasklab-stage1", 2, 400, 3.0),
        trial("celery-stock", 0, 200, 8.0),
        trial("celery-parity", 0, 100, 12.0),
        {"system": "floor", "rep": 0, "redis_list": {"per_task_us": 300, "tasks_per_s": 3000}},
    ]
    summary = summarize(trials, ["noop"])
    row = summary["systems"]["tasklab-stage1"]["noop"]
    assert row["burst_tps"] == 400 and row["start_p99_ms"] == 3.0 and row["reps"] == 3
    ratios = summary["ratios"]["tasklab-stage1"]["noop"]
    assert ratios["burst_tps"] == {"celery-stock": 2.0, "celery-parity": 4.0}
    assert ratios["start_p99_ms"] == {"celery-stock": 0.375, "celery-parity": 0.25}
    assert "celery-stock" not in summary["ratios"]
    assert summary["floors"]["redis_list"]["tasks_per_s"] == 3000
    meta = {"missing": {"tasklab-stage3": "stage 3 is not installed"}}
    assert "2.00|4.00" in table(summary, meta)
    text = markdown(summary, meta)
    assert "| tasklab-stage1 | noop | 2.00 / 4.00 |" in text
    assert "missing: tasklab-stage3: stage 3 is not installed" in text
