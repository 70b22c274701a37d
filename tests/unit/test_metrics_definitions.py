"""The metric definitions follow Prometheus's conventions, bounded label sets included, and the
operator port answers /metrics, /health and /ready as probes and Prometheus expect."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from common.messaging.metrics import ConsumerLag
from common.observability import metrics
from common.observability.health import ReadinessChecks
from common.observability.http import OperatorServer, split_host_port

NAME = re.compile(r"^tasklab_[a-z][a-z0-9_]*$")
# Labels that could carry a task id or an error text would make one series per task.
UNBOUNDED = {"task_id", "taskId", "id", "error", "message", "reason_text", "path", "url"}


def test_every_family_is_named_by_the_prometheus_conventions():
    names = [f.name for f in metrics.FAMILIES]
    assert len(names) == len(set(names)), "a family is defined twice"
    for family in metrics.FAMILIES:
        assert NAME.match(family.name), family.name
        assert family.help.strip(), family.name
        assert family.served_by and family.section, family.name
        assert (family.kind == "counter") == family.name.endswith("_total"), family.name
        if family.kind == "histogram":
            assert family.name.endswith("_seconds"), "histograms here measure time, in seconds"
            assert list(family.buckets) == sorted(family.buckets), family.name
        assert not UNBOUNDED & set(family.labels), family.name
        for unit in ("_milliseconds", "_ms", "_minutes", "_hours", "_bytes_total_bytes"):
            assert unit not in family.name, f"{family.name}: base units only"


def test_a_family_breaking_the_conventions_is_refused_where_it_is_defined():
    with pytest.raises(ValueError, match="_total"):
        metrics.Family("tasklab_things", "counter", "x")
    with pytest.raises(ValueError, match="_total"):
        metrics.Family("tasklab_things_total", "gauge", "x")
    with pytest.raises(ValueError, match="tasklab_"):
        metrics.Family("things_total", "counter", "x")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("message: not valid JSON (Expecting value: line 1 column 1 (char 0))", "not_json"),
        ("not JSON: Expecting value", "not_json"),
        ("task: payload: 70000 bytes is over the 65536-byte limit", "too_large"),
        ("idempotency conflict: requestId r1 is task abc", "conflict"),
        ("dispatch entry of a task that does not exist", "unknown_task"),
        ("no task 0b0c", "unknown_task"),
        ("taskType: must be one of SHELL, PYTHON_SCRIPT", "invalid"),
        ("cannot apply RUNNING to a SUCCESS task", "not_applicable"),
        ("KeyboardInterrupt", "other"),
    ],
)
def test_a_dead_letter_reason_text_is_counted_under_a_bounded_category(text, reason):
    assert metrics.dead_letter_reason(text) == reason
    assert reason in metrics.DEAD_LETTER_REASONS


def test_an_outcome_is_counted_only_once_its_write_went_through():
    def count(status: str) -> float:
        return metrics.TASKS_FINISHED.labels("UNIT_TEST", status)._value.get()

    before = count("SUCCESS"), metrics.TASK_RETRIES.labels("UNIT_TEST")._value.get()
    metrics.record_outcome("UNIT_TEST", "SUCCESS", accepted=False)
    metrics.record_outcome("UNIT_TEST", "SUPERSEDED", accepted=True)
    assert (count("SUCCESS"), metrics.TASK_RETRIES.labels("UNIT_TEST")._value.get()) == before
    metrics.record_outcome("UNIT_TEST", "SUCCESS", accepted=True)
    metrics.record_outcome("UNIT_TEST", "RETRY", accepted=True)
    assert count("SUCCESS") == before[0] + 1
    assert metrics.TASK_RETRIES.labels("UNIT_TEST")._value.get() == before[1] + 1


def test_readiness_needs_a_check_and_every_check_to_pass_within_its_time_limit():
    checks = ReadinessChecks(timeout=0.3)
    assert checks.run() == (False, {}), "no check registered yet: still starting"
    checks.add("fine", lambda: (True, "ok"))
    checks.add("detail", lambda: "PING answered")
    assert checks.run()[0] is True
    release = threading.Event()
    checks.add("hung", lambda: release.wait(5))
    started = time.monotonic()
    ok, results = checks.run()
    release.set()
    assert ok is False and time.monotonic() - started < 2, "a hung check fails, bounded"
    assert results["hung"].detail.startswith("no answer within")

    def broken() -> bool:
        raise ConnectionError("refused")

    checks.add("hung", broken)
    ok, results = checks.run()
    assert not ok and results["hung"].detail == "ConnectionError: refused"
    assert results["detail"].as_dict()["detail"] == "PING answered"


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_the_operator_port_serves_metrics_health_and_readiness():
    registry = CollectorRegistry()
    Counter("tasklab_unit_things", "Things.", registry=registry).inc(3)
    checks = ReadinessChecks()
    server = OperatorServer("127.0.0.1:0", registry, checks).start()
    try:
        status, kind, body = _get(server.url + "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        assert "tasklab_unit_things_total 3.0" in body
        assert _get(server.url + "/health")[::2] == (200, '{"status": "ok"}')
        status, _, body = _get(server.url + "/ready")
        assert status == 503 and json.loads(body)["status"] == "not ready"
        checks.add("redis", lambda: (True, "PING answered"))
        status, _, body = _get(server.url + "/ready")
        assert status == 200
        assert json.loads(body)["checks"]["redis"]["detail"] == "PING answered"
        checks.add("zookeeper", lambda: (False, "session SUSPENDED"))
        status, kind, body = _get(server.url + "/ready")
        assert (status, kind) == (503, "application/json")
        assert json.loads(body)["checks"]["zookeeper"] == {
            "ok": False,
            "detail": "session SUSPENDED",
            "latencyMs": json.loads(body)["checks"]["zookeeper"]["latencyMs"],
        }
        assert _get(server.url + "/elsewhere")[0] == 404
    finally:
        server.stop()


def test_an_operator_address_must_say_host_and_port():
    assert split_host_port("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert split_host_port(":9100") == ("0.0.0.0", 9100)
    assert split_host_port("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError):
        split_host_port("localhost")


def test_consumer_lag_is_read_from_librdkafka_statistics_for_the_partitions_this_consumer_reads():
    lag = ConsumerLag()
    stats = {
        "topics": {
            "status": {
                "partitions": {
                    "0": {"fetch_state": "active", "hi_offset": 120, "committed_offset": 100},
                    "1": {"fetch_state": "active", "hi_offset": 7, "committed_offset": -1001},
                    "2": {"fetch_state": "none", "hi_offset": 50, "committed_offset": 0},
                    "-1": {"fetch_state": "none", "hi_offset": -1, "committed_offset": -1},
                }
            }
        }
    }
    lag.callback("g1")(json.dumps(stats))
    lag.callback("g1")("not json")  # ignored: the previous reading stands
    [family] = list(lag.collect())
    got = {
        (s.labels["group"], s.labels["topic"], s.labels["partition"]): s.value
        for s in family.samples
    }
    # Partition 1 has nothing committed yet: everything up to the watermark waits.
    assert got == {("g1", "status", "0"): 20, ("g1", "status", "1"): 7}
    lag.update("g1", {"topics": {}})  # its partitions were revoked
    assert list(lag.collect())[0].samples == []


def scraped(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of `name` in this process's registry: its labels -> value."""
    from prometheus_client import REGISTRY

    return {
        tuple(sorted(s.labels.items())): s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name
    }


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("tasklab_tasks_finished_total", {"type": "HANDLER", "status": "CANCELLED"}),
        ("tasklab_tasks_submitted_total", {"type": "PYTHON_SCRIPT"}),
        ("tasklab_tasks_started_total", {"type": "SHELL"}),
        ("tasklab_task_retries_total", {"type": "SHELL"}),
        ("tasklab_dead_letters_total", {"channel": "kafka", "reason": "too_large"}),
        ("tasklab_failovers_total", {"by": "heartbeat"}),
        ("tasklab_failover_requeued_tasks_total", {"by": "reaper"}),
        ("tasklab_schedule_skipped_total", {"reason": "forbid_active"}),
    ],
)
def test_a_labelled_counter_serves_each_known_label_value_before_its_first_increment(name, labels):
    # Given a process that imported the definitions and counted nothing of this kind
    samples = scraped(name)
    key = tuple(sorted(labels.items()))
    # Then the series is there already, at 0 or at what this test process counted, so that
    # rate() sees its first increment as 0 -> 1
    assert key in samples, f"{name}{labels} is not served before its first increment"


def test_every_combination_of_the_known_values_is_served_and_nothing_else():
    finished = scraped("tasklab_tasks_finished_total")
    expected = {
        (("status", status), ("type", task_type))
        for task_type in metrics.TASK_TYPES
        for status in metrics.FINAL_STATUSES
    }
    assert expected <= set(finished)
    dead = {dict(k)["reason"] for k in scraped("tasklab_dead_letters_total")}
    assert dead >= set(metrics.DEAD_LETTER_REASONS)
    assert set(metrics.TASK_TYPES) == {"SHELL", "PYTHON_SCRIPT", "HANDLER", "COMPOSITE"}


def test_a_zero_series_counts_its_first_increment_from_zero():
    registry = CollectorRegistry()
    spec = metrics.Family("tasklab_things_total", "counter", "Things.", ("kind",))
    counter = metrics._counter(spec, {"kind": ("a", "b")}, registry=registry)
    before = {s.labels["kind"]: s.value for s in next(iter(registry.collect())).samples}
    counter.labels("a").inc()
    after = {s.labels["kind"]: s.value for s in next(iter(registry.collect())).samples}
    assert before == {"a": 0.0, "b": 0.0}
    assert after == {"a": 1.0, "b": 0.0}


def test_known_values_for_labels_the_family_does_not_have_are_refused():
    spec = metrics.Family("tasklab_things_total", "counter", "Things.", ("kind",))
    with pytest.raises(ValueError, match="known values"):
        metrics._counter(spec, {"colour": ("red",)}, registry=CollectorRegistry())


def test_a_scraper_that_hung_up_before_the_answer_leaves_no_traceback_behind(capsys):
    # Given the operator port of a process that was frozen while Prometheus waited
    server = OperatorServer("127.0.0.1:0", registry=CollectorRegistry(), checks=ReadinessChecks())
    try:
        # When the answer's write finds the scraper's socket closed
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            server.handle_error(None, ("127.0.0.1", 50000))
        quiet = capsys.readouterr().err
        # Then nothing is printed, while a real error still is, with its traceback
        try:
            raise ValueError("a bug in a collector")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 50000))
        loud = capsys.readouterr().err
    finally:
        server.server_close()
    assert quiet == ""
    assert "ValueError: a bug in a collector" in loud
