"""Stage 5 fixtures: roles started as real processes, each with its own operator port."""

from __future__ import annotations

import pytest
from observability_support import free_address


@pytest.fixture
def observed_role(start_role):
    """observed_role(role, stage, env, name) starts a role serving /metrics, /health and /ready
    on a free loopback port; returns (process, address)."""

    def start(role: str, stage: int, env: dict[str, str], name: str):
        address = free_address()
        proc = start_role(
            role,
            stage,
            {
                **env,
                "TASKLAB_METRICS_ADDRESS": address,
                "TASKLAB_AGENT_ID": name,
                "TASKLAB_SCHEDULER_ID": name,
                "TASKLAB_MANAGER_ID": name,
            },
            name=name,
        )
        return proc, address

    return start
