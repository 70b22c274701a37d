"""The front-door bench's arithmetic: the open-loop schedule, latency figures, medians over
repetitions, ratios to the direct client of the same run, and the issue's targets."""

import math

import pytest

from bench.front_door import fixed_rate, throughput
from bench.front_door_report import cpu_per_submit, latency_figures, schedule, summarize, table


def trial(path, rep, per_s, p99, rate_p99, errors=0):
    return {
        "path": path,
        "rep": rep,
        "throughput": {"per_s": per_s, "p50_ms": p99 / 2, "p99_ms": p99},
        "fixed_rate": {"rate": 100.0, "p50_ms": 1.0, "p99_ms": rate_p99, "max_ms": rate_p99},
        "errors": errors,
    }


META = {"threads": 8, "rate": 100.0, "seconds": 5.0, "reps": 3}


def test_a_fixed_rate_schedule_is_evenly_spaced_and_open_loop():
    due = schedule(100, 2)
    assert len(due) == 200 and due[0] == 0.0
    assert due[1] == pytest.approx(0.01) and due[-1] == pytest.approx(1.99)
    with pytest.raises(ValueError):
        schedule(0, 1)


def test_latency_figures_are_milliseconds_of_seconds_by_nearest_rank():
    figures = latency_figures([i / 1000 for i in range(1, 101)])
    assert figures == {"p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert all(math.isnan(v) for v in latency_figures([]).values())


def test_figures_are_medians_and_ratios_are_to_the_direct_client_of_the_same_run():
    trials = [
        trial("direct", 0, 1000, 2.0, 1.0),
        trial("direct", 1, 1200, 4.0, 3.0),
        trial("direct", 2, 800, 3.0, 2.0),
        trial("grpc", 0, 500, 6.0, 4.0),
        trial("grpc", 1, 700, 9.0, 5.0, errors=1),
        trial("grpc", 2, 600, 12.0, 6.0),
    ]
    summary = summarize(trials)
    direct, grpc = summary["paths"]["direct"], summary["paths"]["grpc"]
    assert (direct["submit_per_s"], direct["p99_ms"], direct["rate_p99_ms"]) == (1000, 3.0, 2.0)
    assert (grpc["submit_per_s"], grpc["p99_ms"], grpc["errors"], grpc["reps"]) == (600, 9, 1, 3)
    ratios = summary["ratios"]["grpc"]
    assert ratios["submit_per_s"] == pytest.approx(0.6)
    assert ratios["p99_ms"] == pytest.approx(3.0) and ratios["rate_p99_ms"] == pytest.approx(2.5)
    assert "direct" not in summary["ratios"]


def test_targets_say_met_missed_or_not_measured():
    trials = [
        trial("direct", 0, 900, 2.0, 1.0),
        trial("grpc", 0, 450, 5.0, 9.9),  # exactly half: met
        trial("rest", 0, 290, 8.0, 12.0),  # under a third, and slow at the rate
    ]
    targets = summarize(trials)["targets"]
    assert targets["grpc"] == {"throughput_ratio": True, "rate_p99": True}
    assert targets["rest"] == {"throughput_ratio": False, "rate_p99": False}
    assert targets["direct"] == {"rate_p99": True}
    alone = summarize([trial("grpc", 0, 450, 5.0, float("nan"))])["targets"]["grpc"]
    assert alone == {"throughput_ratio": None, "rate_p99": None}


def test_the_table_shows_each_path_its_ratio_the_targets_and_why_a_path_was_skipped():
    summary = summarize([trial("direct", 0, 1000, 2.0, 1.0), trial("grpc", 0, 400, 6.0, 4.0)])
    text = table(summary, {**META, "skipped": {"rest": "stage 4 has no `api` role yet"}})
    assert "direct (TaskClient -> Redis)" in text and "gRPC (proxy -> provider)" in text
    assert "0.40" in text  # gRPC's throughput ratio
    assert "MISSED" in text  # 0.40 < 1/2
    assert "REST (API -> proxy -> provider): skipped (stage 4 has no `api` role yet)" in text


def test_the_phases_count_every_call_and_report_errors_without_stopping():
    calls = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) % 10 == 0:
            raise RuntimeError("refused")

    result = throughput(flaky, 50, 4)
    assert len(calls) == 50 and result["errors"] == 5 and result["n"] == 50
    assert result["first_error"] == "RuntimeError: refused"
    paced = fixed_rate(lambda: None, 200.0, 0.1, workers=2)
    assert paced["n"] == 20 and paced["errors"] == 0 and paced["p99_ms"] >= 0


def test_cpu_per_submit_is_milliseconds_per_submit_of_each_side_and_their_sum():
    cpu = cpu_per_submit(1000, client_s=0.5, server_s=1.0, redis_s=0.25)
    assert cpu == {"client_ms": 0.5, "server_ms": 1.0, "redis_ms": 0.25, "total_ms": 1.75}
    with pytest.raises(ValueError):
        cpu_per_submit(0, 1.0, 1.0, 1.0)
