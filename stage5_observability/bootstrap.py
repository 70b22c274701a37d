"""Stage 5 composition root: the stage 4 platform, watched.

Roles:
- scheduler, agent, manager, rpc, api: stage 4's, unchanged (stage 4 reuses stage 3's the same
  way). Stage 5 does not change how a task runs; it makes every step of it visible: each role
  serves /metrics, /health and /ready on `TASKLAB_METRICS_ADDRESS`, logs one JSON line per event
  with the task's context, and the dev stack runs a real Prometheus and Alertmanager that
  discover the roles from a targets file the stack keeps current.
- checker (runnable since stage 1, in the topology from here on): measures, continuously, what
  must never happen (a RUNNING task with no live owner, two live attempts of one task, a task
  past its timeout, a waiting state past its deadline, dead letters nobody looked at) and
  exports each as a gauge that an alert rule watches. One leads, elected on /checker-leader.

Why reach stage 4 through `load_stage(4)`: the same reason stage 4 reaches stage 3 that way (see
stage4_rpc/bootstrap.py). Stages never import each other; the entry point is the checked seam.
"""

from __future__ import annotations

from common.archive.role import run_archiver
from common.stages import StageSpec, load_stage

PLATFORM = load_stage(4)


STAGE = StageSpec(
    number=5,
    title="Observability: metrics, alerts, dashboards, logs and traces on the stage 4 platform",
    roles={**PLATFORM.roles, "archiver": run_archiver},
    services=(*PLATFORM.services, "alertmanager", "prometheus", "victorialogs", "postgresql"),
    topology=(*PLATFORM.topology, ("checker", 1), ("archiver", 1)),
)
