"""The alert rules and the Alertmanager config, checked with Prometheus's own tools.

`promtool check rules` parses every expression; `promtool test rules` runs each alert's unit
test (deploy/prometheus/tests/<alert>.yml) on synthetic series, in Prometheus's own rule
engine: the alert must fire where the file says it does, with the labels and annotations it
lists, and stay quiet where the file expects nothing. `amtool check-config` checks the
Alertmanager configs, the deployed one and the one the native stack writes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from common.devstack.alertmanager import AlertmanagerService
from common.devstack.monitoring import DEPLOY_DIR, RULES_DIR, rule_files
from common.devstack.prometheus import PrometheusService
from common.observability.metrics import FAMILIES

RULES = RULES_DIR / "tasklab.yml"
TESTS_DIR = DEPLOY_DIR / "prometheus" / "tests"
ALERTMANAGER_CONFIG = DEPLOY_DIR / "alertmanager" / "alertmanager.yml"
# What the issue asks an alert for, by the name the rules give it.
EXPECTED_ALERTS = {
    "HighTaskFailureRate",
    "AgentDown",
    "NoSchedulerLeader",
    "QueueBacklog",
    "StuckTask",
    "DuplicateRun",
    "ConsumerLag",
    "DeadLettersGrowing",
    # The guarantee checker's gauges: a violation of any check, and dead letters nobody
    # looked at.
    "GuaranteeViolated",
    "DeadLettersUnseen",
    # The archive's outbox not drained (stage 5's archiver down or stuck).
    "ArchiveOutboxStalled",
}
# Labels every scraped tasklab series has besides its own: the scrape job and the targets
# file's (common/devstack/monitoring.py).
TARGET_LABELS = {"job", "instance", "role"}


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} not found: `make system-deps` installs it (Debian package)"
    return found


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def served_series() -> dict[str, set[str]]:
    """Every series name the roles serve -> the labels it can carry."""
    series = {}
    for family in FAMILIES:
        names = [family.name]
        if family.kind == "histogram":
            names = [family.name + suffix for suffix in ("_bucket", "_sum", "_count")]
        for name in names:
            series[name] = set(family.labels) | TARGET_LABELS | {"le"}
    return series


def test_the_rules_folder_holds_the_rules_file_the_native_prometheus_loads():
    assert rule_files() == [RULES]


def test_the_alert_rules_pass_promtool_check_rules():
    done = run([tool("promtool"), "check", "rules", str(RULES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_there_is_an_alert_for_each_failure_the_platform_must_report():
    assert set(alerts()) == EXPECTED_ALERTS
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name
    # The deployment guide's name for an agent that is down, kept as a label to route on.
    assert alerts()["AgentDown"]["labels"]["also_known_as"] == "WorkerNodeDown"


def test_the_alert_rules_use_only_metrics_and_labels_the_roles_serve():
    served = served_series()
    for name, rule in alerts().items():
        expr = rule["expr"]
        for metric in re.findall(r"\btasklab_\w+", expr):
            assert metric in served, f"{name} uses {metric}, which no role serves"
        for metric, matchers in re.findall(r"\b(tasklab_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*[=!]~?", matchers):
                assert label in served[metric], f"{name}: {metric} has no label {label}"


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_each_alert_fires_when_it_should_and_stays_quiet_when_it_should_not(alert):
    path = TESTS_DIR / f"{snake(alert)}.yml"
    assert path.exists(), f"no promtool unit test for {alert} at {path}"
    cases = [
        case
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    assert cases and all(case["alertname"] == alert for case in cases), path
    assert any(case["exp_alerts"] for case in cases), f"{path.name} never expects {alert} to fire"
    assert any(not case["exp_alerts"] for case in cases), f"{path.name} never expects quiet"

    done = run([tool("promtool"), "test", "rules", str(path)])

    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_deployed_alertmanager_config_routes_every_alert_to_a_webhook():
    done = run([tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers[config["route"]["receiver"]]["webhook_configs"][0]["url"].startswith("http")


def test_the_native_stacks_alertmanager_config_passes_amtool(tmp_path: Path):
    for webhook in ("http://127.0.0.1:9/alerts", None):
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(AlertmanagerService(webhook_url=webhook).config()))
        done = run([tool("amtool"), "check-config", str(path)])
        assert done.returncode == 0, (webhook, done.stdout + done.stderr)


def test_the_alerts_reference_has_a_row_for_every_alert():
    page = (DEPLOY_DIR.parent / "docs" / "reference" / "alerts.md").read_text()
    for name in alerts():
        assert f"| `{name}`" in page, f"docs/reference/alerts.md has no row for {name}"


def test_the_native_stacks_prometheus_config_passes_promtool(tmp_path: Path):
    for alertmanagers in (["127.0.0.1:9093"], []):
        service = PrometheusService(
            targets_file=tmp_path / "targets.json", alertmanagers=alertmanagers
        )
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(service.config(tmp_path, 9090)))
        done = run([tool("promtool"), "check", "config", str(path)])
        assert done.returncode == 0, (alertmanagers, done.stdout + done.stderr)
        assert f"SUCCESS: {len(alerts())} rules found" in done.stdout
