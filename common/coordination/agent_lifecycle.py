"""How a registered agent (stage 2 on) starts and stops, in the one order that is safe.

Used by every stage whose agents live in `/live-agents`, whatever carries their tasks (Redis
inboxes in stage 2, Kafka in stage 3).
"""

from __future__ import annotations

import signal
import sys

from common.config import Settings
from common.coordination.load_reports import ThrottledLoad
from common.coordination.registry import AgentAlreadyRegistered, AgentRegistry
from common.coordination.zk import close_zk


# --8<-- [start:run-agent]
def run_registered_agent(agent, registry: AgentRegistry, settings: Settings) -> None:
    def shut_down(*_: object) -> None:
        # Draining first: the scheduler stops sending work while running tasks finish. The
        # node is deleted only after that, or the leader would re-queue tasks still running.
        registry.drain()
        agent.stopping.set()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    # 1. Take no work until registered. 2. Wait out a previous incarnation's node, so the
    # leader sees that agent die. 3. Re-queue what it left (agent.start). 4. Register: from
    # now on the scheduler may place work here.
    agent.paused.set()
    try:
        registry.wait_until_free(timeout=2 * settings.zk_session_timeout + 1)
        agent.start()
        registry.start()
    except AgentAlreadyRegistered as exc:
        close_zk(settings)
        sys.exit(f"error: {exc}")
    try:
        while not agent.stopping.wait(0.5):
            pass
    finally:
        agent.stop()
        # The load no longer changes: end the throttle's reporting thread before the registry
        # it reports to.
        if isinstance(agent.on_load_change, ThrottledLoad):
            agent.on_load_change.stop()
        registry.stop()
        close_zk(settings)


# --8<-- [end:run-agent]
