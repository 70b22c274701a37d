"""Profile the stage 2 leader's placement loop: `python -m stage2_coordination.profile_scheduler`.

Starts a throw-away Redis and ZooKeeper, registers two agents in ZooKeeper (nodes only: no
agent process runs), submits N tasks, and lets one scheduler lead and dispatch them all with
its lead loop running in this thread under pyinstrument. The inboxes are bounded as in
production (`--backlog`, default 2): a thread stands in for the two agents and empties their
inboxes as fast as Redis lets it, so the leader is never the one waiting. Prints the call tree,
the dispatch rate and the scheduler's CPU per task; `--html PATH` writes pyinstrument's HTML
view as well. The stage 1 counterpart is `python -m bench.profile_agent`.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stage2_coordination.profile_scheduler")
    p.add_argument("n", type=int, nargs="?", default=2000)
    p.add_argument("--backlog", type=int, default=2, help="inbox bound per agent")
    p.add_argument("--html", type=Path)
    p.add_argument("--no-profile", action="store_true", help="only time it (no profiler)")
    args = p.parse_args(argv)

    from common.config import Settings
    from common.coordination.zk import close_zk
    from common.devstack.redis import RedisService
    from common.devstack.zookeeper import ZooKeeperService

    redis_service, zk_service = RedisService(), ZooKeeperService()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "redis").mkdir()
        (Path(tmp) / "zk").mkdir()
        redis_running = redis_service.start(Path(tmp) / "redis")
        try:
            zk_running = zk_service.start(Path(tmp) / "zk")
            try:
                url = redis_running.env["TASKLAB_REDIS_URL"]
                settings = Settings(
                    redis_url=url,
                    zk_hosts=zk_running.env["TASKLAB_ZK_HOSTS"],
                    scheduler_id="profiled",
                    scheduler_agent_backlog=args.backlog,
                )
                return _profile(args, settings, url, tmp)
            finally:
                close_zk(settings)
                zk_service.stop(zk_running)
        finally:
            redis_service.stop(redis_running)
    return 0  # pragma: no cover


def _profile(args, settings, url, tmp) -> int:
    from pyinstrument import Profiler

    from common import keys
    from common.adapters.redis_client import redis_client
    from common.adapters.redis_store import RedisTaskStore
    from common.client import TaskClient
    from common.coordination.agent_info import AgentInfo
    from common.coordination.registry import AgentRegistry
    from common.coordination.zk import get_zk
    from common.observability import configure_logging
    from stage2_coordination.bootstrap import build_scheduler

    redis = redis_client(url)
    client = TaskClient(RedisTaskStore(redis))
    for _ in range(args.n):
        client.submit({"taskType": "PYTHON_SCRIPT", "payload": "pass", "taskName": "profile"})
    agents = ["agent-1", "agent-2"]
    registries = []
    for agent_id in agents:
        info = AgentInfo(agent_id=agent_id, capacity=1, task_types=["PYTHON_SCRIPT", "SHELL"])
        registry = AgentRegistry(get_zk(settings), info, threading.Event())
        registry.start()
        registries.append(registry)

    log_file = Path(tmp) / "scheduler.log"
    with open(log_file, "w") as fh:
        import sys

        saved, sys.stderr = sys.stderr, fh
        configure_logging("INFO", "json")
        sys.stderr = saved
        scheduler = build_scheduler(settings)
        drained = [0]

        def agents_stand_in() -> None:
            # Empties the inboxes (what two very fast agents would do) until all N came through.
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and drained[0] < args.n:
                got = redis.blmpop(0.2, len(agents), *map(keys.agent_tasks, agents),
                                   direction="RIGHT", count=100)  # fmt: skip
                if got:
                    drained[0] += len(got[1])
            scheduler.stop()

        threading.Thread(target=agents_stand_in, daemon=True).start()
        profiler = None if args.no_profile else Profiler(interval=0.0005)
        cpu, started = time.process_time(), time.perf_counter()
        if profiler:
            profiler.start()
        scheduler.run_forever()
        if profiler:
            profiler.stop()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        for registry in registries:
            registry.stop()
    if profiler:
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        if args.html:
            args.html.write_text(profiler.output_html())
    n = max(1, drained[0])
    print(
        f"{drained[0]} tasks dispatched in {elapsed:.2f}s: {drained[0] / elapsed:.0f}/s; "
        f"process CPU {cpu / n * 1e3:.3f} ms per task (leader, ZooKeeper client and the "
        f"stand-in's threads; profiler {'off' if profiler is None else 'on'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
