"""`tasklab dev up` for a stage that declares Prometheus and Alertmanager among its services.

Stage 5's bootstrap is not there yet, so the test declares such a stage itself (stage 1's roles
and topology, plus the two services) in place of the installed ones; the dev stack reads it the
way it reads any StageSpec.
"""

from __future__ import annotations

import pytest
from monitoring_support import PrometheusAPI
from observability_support import wait_ready

from common.devstack import DevStack
from common.devstack import stack as stack_module
from common.devstack.monitoring import read_targets
from common.stages import StageSpec, load_stage
from common.testing import RoleProcess, eventually

pytestmark = pytest.mark.integration

MONITORED = 95


@pytest.fixture
def monitored_stage(monkeypatch) -> StageSpec:
    stage1 = load_stage(1)
    spec = StageSpec(
        number=MONITORED,
        title="stage 1, watched",
        roles=stage1.roles,
        services=("redis", "alertmanager", "prometheus"),
        topology=(("agent", 2),),
    )

    def load(number: int) -> StageSpec:
        return spec if number == MONITORED else load_stage(number)

    monkeypatch.setattr(stack_module, "load_stage", load)
    return spec


def test_the_dev_stack_starts_prometheus_on_the_roles_it_lists_and_alertmanager(
    monitored_stage, tmp_path
):
    stack = DevStack(tmp_path / "devstack")
    try:
        # Given `tasklab dev up` for a stage with Prometheus and Alertmanager
        running = stack.up(MONITORED)
        env = dict(line.split("=", 1) for line in DevStack.env_lines(running))

        # Then it prints where both are, with Redis's address
        assert [s.name for s in running] == ["redis", "alertmanager", "prometheus"]
        assert {"TASKLAB_REDIS_URL", "TASKLAB_PROMETHEUS_URL", "TASKLAB_ALERTMANAGER_URL"} <= set(
            env
        )
        # ...the targets file lists every process of the stage at the operator port it chose
        listed = {t.instance: (t.role, t.address) for t in read_targets(stack.targets_file)}
        assert listed == stack.metrics_addresses(MONITORED)
        # ...Prometheus knows the Alertmanager and loaded the alert rules
        prometheus = PrometheusAPI(env["TASKLAB_PROMETHEUS_URL"])
        # (eventually: Prometheus passes what it discovers on every 5 s)
        eventually(
            lambda: (
                [a["url"] for a in prometheus.get("/api/v1/alertmanagers")["activeAlertmanagers"]]
                == [f"{env['TASKLAB_ALERTMANAGER_URL']}/api/v2/alerts"]
            ),
            15,
            0.5,
            message="Prometheus sends its alerts to the stack's Alertmanager",
        )
        assert "AgentDown" in prometheus.rule_names()

        # When one of the two agents runs at its address
        role, address = listed["agent-1"]
        agent = RoleProcess(
            role,
            1,
            {
                "TASKLAB_REDIS_URL": env["TASKLAB_REDIS_URL"],
                "TASKLAB_METRICS_ADDRESS": address,
                "TASKLAB_AGENT_ID": "agent-1",
            },
            tmp_path,
            name="agent-1",
        ).start()
        try:
            wait_ready(agent, address)

            # Then Prometheus scrapes it, and shows the agent that is not running as down
            def health() -> dict[str, str] | None:
                found = {t["labels"]["instance"]: t["health"] for t in prometheus.targets()}
                return found if found == {"agent-1": "up", "agent-2": "down"} else None

            eventually(health, 30, 0.5, message="agent-1 up and agent-2 down in Prometheus")

            # When Prometheus is restarted (`tasklab dev restart prometheus`)
            stack.restart("prometheus", grace=5)

            # Then it comes back on its address with the same targets and Alertmanager
            eventually(health, 30, 0.5, message="the restarted Prometheus scrapes the same roles")
            eventually(
                lambda: prometheus.get("/api/v1/alertmanagers")["activeAlertmanagers"],
                15,
                0.5,
                message="the restarted Prometheus sends to the same Alertmanager",
            )
        finally:
            agent.stop()
    finally:
        stopped = stack.down()
    assert [s.name for s in stopped] == ["prometheus", "alertmanager", "redis"]
    assert not any(s.alive() for s in stopped)
