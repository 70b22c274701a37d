"""Stage 4 composition root: the stage 3 platform, plus the gRPC TaskService provider.

Roles:
- scheduler, agent, manager: stage 3's, unchanged. The platform under the front door is the
  Kafka platform of stage 3; stage 4 adds a way in, not a new way to run tasks.
- rpc (born in this stage): `common.rpc.server.run_provider`, a TaskService provider over the
  same TaskClient/RedisTaskStore as the CLI, registered in ZooKeeper as
  `/services/TaskService/{host:port}`. Two or more run; clients (the REST API, the Java client,
  tests) reach them through `common.rpc.proxy.TaskServiceProxy`.
- api (born in this stage): `common.api.server.run_api`, the REST API on `api_address`, itself
  a TaskService client through that proxy (API = consumer, core = provider).

How stage 3's roles are reused, and why this way. Stages never import each other (checked by
tests/unit/test_layering.py), and stage 3's role functions live in its own bootstrap. Two ways
to reuse them: move every stage 3 builder into `common` (a `common/platform/` both bootstraps
call), or reach stage 3's roles through the seam every stage already plugs into, the
`tasklab.stages` entry points (`load_stage(3)`), which is what this file does. The second keeps
stage 3's composition root whole and readable top to bottom, moves no code, and makes the
dependency explicit and checked at start-up: stage 4 is "stage 3's roles, plus rpc", and
installing stage 4 without stage 3 fails with one line saying so. Its cost: stage 4's
scheduler/agent/manager are stage 3's by reference, so a change of stage 3's wiring changes
stage 4 too, which is the intent here (one platform, a new front door). If stage 4 ever needs
a *different* agent or scheduler, that is the time to move the shared builders into `common`.
"""

from __future__ import annotations

from common.config import Settings
from common.stages import StageSpec, load_stage

PLATFORM = load_stage(3)


def run_rpc(settings: Settings) -> None:
    # Imported when the role runs: grpcio is the stage4 extra, and `tasklab run agent --stage 4`
    # has no use for it.
    from common.rpc.server import run_provider

    run_provider(settings)


def run_api(settings: Settings) -> None:
    from common.api.server import run_api as serve

    serve(settings)


STAGE = StageSpec(
    number=4,
    title="The front door: a REST API over the gRPC TaskService, discovered through ZooKeeper",
    roles={**PLATFORM.roles, "rpc": run_rpc, "api": run_api},
    services=PLATFORM.services,
    topology=(*PLATFORM.topology, ("rpc", 2), ("api", 1)),
)
