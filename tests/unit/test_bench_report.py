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


def test_the_spread_of_the_repetitions_and_the_baseline_before_after_are_reported():
    # Given three repetitions of a stage today and of the same stage as of a baseline commit
    trials = [
        trial("tasklab-stage3", 0, 300, 4.0),
        trial("tasklab-stage3", 1, 500, 2.0),
        trial("tasklab-stage3", 2, 400, 3.0),
        trial("tasklab-stage3@1da7717", 0, 100, 8.0),
        trial("tasklab-stage3@1da7717", 1, 200, 6.0),
        trial("celery-parity", 0, 400, 12.0),
    ]

    # When they are summarized
    summary = summarize(trials, ["noop"])

    # Then each row carries its min-max, and today's stage is set against the baseline's
    assert summary["systems"]["tasklab-stage3"]["noop"]["spread"]["burst_tps"] == [300, 500]
    after = summary["versus_baseline"]["tasklab-stage3@1da7717"]["noop"]
    assert after["burst_tps"] == 400 / 150 and after["start_p99_ms"] == 3.0 / 7.0
    text = table(summary, {})
    assert "300-500" in text and "after / before" in text
    assert "| tasklab-stage3@1da7717 | noop | 2.67 |" in markdown(summary, {})


def test_the_bench_refuses_to_start_without_its_extra_in_one_line(monkeypatch, capsys):
    import bench.run

    # json is always importable, so only the missing one may be named, whatever is installed
    monkeypatch.setattr(bench.run, "BENCH_MODULES", ("json", "no_such_module_here"))
    assert bench.run.main(["--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing no_such_module_here;" in err[0], err


def test_the_broker_and_coordinator_a_stage_runs_on_count_in_its_cpu_per_task():
    # Given stage 3, whose tasks also cost Kafka's and ZooKeeper's JVMs CPU, and Celery,
    # whose only service is Redis
    stage3 = trial("tasklab-stage3", 0, 300, 4.0)
    stage3["burst"].update(
        redis_cpu_us_per_task=500.0,
        services_cpu_ms_total=1.5,
        all_cpu_ms_per_task=1.0 + 0.5 + 1.5,
    )
    celery = trial("celery-parity", 0, 400, 8.0)
    celery["burst"].update(
        redis_cpu_us_per_task=250.0, services_cpu_ms_total=0.0, all_cpu_ms_per_task=1.25
    )

    # When they are summarized
    summary = summarize([stage3, celery], ["noop"])

    # Then the whole machine's CPU per task is a column and a ratio, not the roles' alone
    row = summary["systems"]["tasklab-stage3"]["noop"]
    assert row["services_cpu_ms"] == 1.5 and row["all_cpu_ms"] == 3.0
    assert summary["ratios"]["tasklab-stage3"]["noop"]["all_cpu_ms"]["celery-parity"] == 2.4
    assert "allCPU ms" in table(summary, {})


def test_only_the_stages_that_run_on_a_broker_or_coordinator_are_charged_for_it():
    from bench.systems import CelerySystem, TasklabSystem

    def uses(system):
        return {name for name in ("kafka", "zookeeper", "postgresql") if system.uses(name)}

    assert uses(TasklabSystem(1, None, 2, 1, "INFO")) == set()
    assert uses(TasklabSystem(2, None, 2, 1, "INFO")) == {"zookeeper"}
    assert uses(TasklabSystem(3, None, 2, 1, "INFO")) == {"kafka", "zookeeper"}
    assert uses(CelerySystem.__new__(CelerySystem)) == set()


def test_the_jvms_are_warmed_by_unrecorded_trials_of_the_first_system_on_kafka(monkeypatch):
    from bench import run

    class Fake:
        def __init__(self, name, services):
            self.name, self.services = name, services

        def uses(self, service):
            return service in self.services

    ran = []
    monkeypatch.setattr(
        run,
        "run_trial",
        lambda ctx, system, wl, mode, log, rep: ran.append((system.name, wl, mode.burst_n, rep)),
    )
    stage2, stage3 = Fake("stage2", {"zookeeper"}), Fake("stage3", {"kafka", "zookeeper"})
    mode = run.MODES["quick"]

    # Stage 3 warms Kafka (and ZooKeeper with it), with a burst long enough to matter
    run.warm_up_jvms(None, [Fake("celery", set()), stage2, stage3], "noop", mode, None)
    assert ran == [("stage3", "noop", 1000, -1 - i) for i in range(run.WARM_UP_TRIALS)]

    # Without Kafka, ZooKeeper's stage; with neither, nothing runs
    ran.clear()
    run.warm_up_jvms(None, [stage2], "shell", mode, None)
    assert {name for name, *_ in ran} == {"stage2"}
    ran.clear()
    run.warm_up_jvms(None, [Fake("celery", set())], "noop", mode, None)
    assert ran == []
