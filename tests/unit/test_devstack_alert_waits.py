"""TASKLAB_DEVSTACK_ALERT_WAITS: the dev stack's Prometheus with some alerts' `for:` waits
changed (the runbook test's, so that Break it does not wait out AgentDown's minute), and
nothing else of the deployed rules."""

from __future__ import annotations

import pytest
import yaml

from common.devstack import DevStack
from common.devstack.monitoring import (
    ALERT_WAITS_ENV,
    RULES_DIR,
    parse_alert_waits,
    rule_files,
    rules_with_waits,
)


def rules_by_name(path) -> dict[str, dict]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_the_named_alerts_get_their_waits_and_every_other_line_is_the_deployed_one(tmp_path):
    [copy] = rules_with_waits(tmp_path, {"AgentDown": "15s", "QueueBacklog": "10s"})
    [deployed] = rule_files()
    changed, original = rules_by_name(copy), rules_by_name(deployed)
    assert (changed["AgentDown"]["for"], changed["QueueBacklog"]["for"]) == ("15s", "10s")
    # NoSchedulerLeader's minute stays: Break it 2's failover must not outrun it
    assert changed["NoSchedulerLeader"]["for"] == original["NoSchedulerLeader"]["for"] == "1m"
    for name in original:
        waits = {"AgentDown", "QueueBacklog"}
        expected = {k: v for k, v in original[name].items() if not (name in waits and k == "for")}
        assert {k: v for k, v in changed[name].items() if not (name in waits and k == "for")} == (
            expected
        )
    # ...and the text differs in those two lines only (comments included)
    differing = [
        (a, b)
        for a, b in zip(
            deployed.read_text().splitlines(), copy.read_text().splitlines(), strict=True
        )
        if a != b
    ]
    assert differing == [
        ("        for: 1m", "        for: 15s"),
        ("        for: 2m", "        for: 10s"),
    ]


def test_an_alert_the_rules_do_not_have_or_that_has_no_wait_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="AgentGone, DuplicateRun"):
        rules_with_waits(tmp_path, {"AgentGone": "5s", "DuplicateRun": "5s", "AgentDown": "5s"})


@pytest.mark.parametrize("text", ["AgentDown", "AgentDown=soon", "=5s", "AgentDown=5"])
def test_a_setting_that_is_not_name_equals_duration_is_an_error(text):
    with pytest.raises(ValueError, match=ALERT_WAITS_ENV):
        parse_alert_waits(text)


def test_the_setting_reads_as_name_equals_duration_pairs():
    assert parse_alert_waits(" AgentDown=15s, QueueBacklog = 2m ,") == {
        "AgentDown": "15s",
        "QueueBacklog": "2m",
    }
    assert parse_alert_waits("") == {}


def test_the_dev_stack_gives_its_prometheus_the_changed_rules_only_when_asked(
    tmp_path, monkeypatch
):
    stack = DevStack(tmp_path / "devstack")
    monkeypatch.delenv(ALERT_WAITS_ENV, raising=False)
    assert "rules" not in stack._service_options("prometheus", [])  # the deployed rules
    monkeypatch.setenv(ALERT_WAITS_ENV, "AgentDown=15s")
    [rules] = stack._service_options("prometheus", [])["rules"]
    assert rules.parent == tmp_path / "devstack/prometheus-rules"
    assert rules_by_name(rules)["AgentDown"]["for"] == "15s"
    # A restart without the setting keeps the waits its `up` was given
    monkeypatch.delenv(ALERT_WAITS_ENV)
    assert stack._service_options("prometheus", [])["rules"] == [rules]
    assert RULES_DIR not in rules.parents
