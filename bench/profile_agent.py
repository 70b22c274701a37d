"""Profile the stage 1 agent's hot path: `python -m bench.profile_agent [shell|noop] [N]`.

Starts a throw-away Redis, enqueues N tasks, and drains them with one stage 1 agent whose work
loop runs in this thread under pyinstrument (the agent's other threads only heartbeat). Prints
the call tree and the drain rate; `--html PATH` writes pyinstrument's HTML view as well.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from pyinstrument import Profiler

from bench.measure import scratch_service
from bench.systems import HANDLER_NOOP, TASKLAB_WORKLOADS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_agent")
    p.add_argument("workload", choices=sorted(TASKLAB_WORKLOADS), nargs="?", default="shell")
    p.add_argument("n", type=int, nargs="?", default=2000)
    p.add_argument("--html", type=Path)
    args = p.parse_args(argv)

    from common.adapters.redis_client import redis_client
    from common.adapters.redis_store import RedisTaskStore
    from common.client import TaskClient
    from common.config import Settings
    from common.devstack.redis import RedisService
    from common.observability import configure_logging
    from stage1_mvp.bootstrap import build_agent

    with scratch_service(RedisService()) as running:
        url = running.env["TASKLAB_REDIS_URL"]
        client = TaskClient(RedisTaskStore(redis_client(url)))
        for _ in range(args.n):
            client.submit({**TASKLAB_WORKLOADS[args.workload], "taskName": "profile"})
        # Logs go where an agent's go in production (a file or a pipe), formatted as JSON.
        log_file = Path(running.workdir) / "agent.log"
        with open(log_file, "w") as fh:
            import sys

            saved, sys.stderr = sys.stderr, fh
            configure_logging("INFO", "json")
            sys.stderr = saved
            settings = Settings(
                redis_url=url,
                agent_id="profiled",
                agent_capacity=1,
                # The handler the workload calls (TASKLAB_AGENT_HANDLER_MODE=fork: the
                # child per call, for a before/after).
                agent_handlers=[HANDLER_NOOP] if args.workload == "handler-noop" else [],
            )
            agent = build_agent(settings)
            agent.capacity = 0  # no worker threads: the work loop runs here, profiled
            agent.start()

            def stop_when_drained() -> None:
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline and agent.completed < args.n:
                    time.sleep(0.01)
                agent.stopping.set()

            threading.Thread(target=stop_when_drained, daemon=True).start()
            profiler = Profiler(interval=0.0005)
            started = time.perf_counter()
            profiler.start()
            agent._work_loop()
            profiler.stop()
            elapsed = time.perf_counter() - started
            agent.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        if args.html:
            args.html.write_text(profiler.output_html())
        print(
            f"{agent.completed} {args.workload} tasks in {elapsed:.2f}s: "
            f"{agent.completed / elapsed:.0f}/s, {elapsed / max(1, agent.completed) * 1e3:.3f}"
            " ms per task (one agent, profiler on)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
