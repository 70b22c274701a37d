"""CPU per task of each stage 2 process in a burst: `python -m stage2_coordination.profile_roles`.

Starts the bench's services (Redis, ZooKeeper) and the stage's full topology as the bench does
(two schedulers, one elected; two agents of capacity 1, production timers), warms it with 50
tasks, submits N more as fast as it can, and prints the CPU each process (with its children:
zygotes and task processes) and the ZooKeeper server spent per task, and the rate.
`--source DIR` runs the roles from another checkout (an older commit), as `bench --baseline`
does. Needs the bench's extra (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _cpu(times) -> float:
    # A process's own CPU and that of its children it has reaped (a zygote reaps every task
    # process it forked, so a task's CPU is in its zygote's children times once it ended).
    return times.user + times.system + times.children_user + times.children_system


def _tree_cpu(proc) -> tuple[float, float]:
    """(the process's own CPU, its descendants'), each with the children they reaped."""
    import psutil

    below = 0.0
    for child in proc.children(recursive=True):
        try:
            below += _cpu(child.cpu_times())
        except psutil.Error:
            continue  # exited between the listing and the read: its parent counts it
    return _cpu(proc.cpu_times()), below


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stage2_coordination.profile_roles")
    p.add_argument("n", type=int, nargs="?", default=1000)
    p.add_argument("--workload", default="noop", choices=("noop", "shell", "sleep10ms"))
    p.add_argument("--source", type=Path, help="run the roles from this checkout")
    args = p.parse_args(argv)

    import psutil

    from bench.run import Context
    from bench.systems import TasklabSystem

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        ctx = Context(work)
        ctx.start()
        try:
            err = ctx.ensure_services(2)
            if err:
                raise SystemExit(f"error: {err}")
            system = TasklabSystem(2, ctx, 2, 1, "INFO", source=args.source)
            system.start(work / "logs")
            try:
                system.wait_done([system.submit(args.workload) for _ in range(50)], 60)
                procs = {p.name: psutil.Process(p.pid) for p in system.procs}
                zk = [
                    z
                    for z in psutil.process_iter(["cmdline"])
                    if "zookeeper" in " ".join(z.info["cmdline"] or []).lower()
                    and str(work) in " ".join(z.info["cmdline"] or [])
                ]
                before = {name: _tree_cpu(proc) for name, proc in procs.items()}
                zk_before = sum(sum(_tree_cpu(z)) for z in zk)
                started = time.time()
                ids = [system.submit(args.workload) for _ in range(args.n)]
                system.wait_done(ids, 60 + args.n * 0.1)
                elapsed = time.time() - started
                for name, proc in procs.items():
                    own, below = (
                        (a - b) / args.n * 1e3
                        for a, b in zip(_tree_cpu(proc), before[name], strict=True)
                    )
                    print(
                        f"{name:28s} {own + below:6.3f} ms CPU per task"
                        + (f" (itself {own:.3f}, zygotes and tasks {below:.3f})" if below else "")
                    )
                zk_ms = (sum(sum(_tree_cpu(z)) for z in zk) - zk_before) / args.n * 1e3
                print(f"{'zookeeper server':28s} {zk_ms:6.3f} ms CPU per task")
                print(f"{args.n} {args.workload} tasks: {args.n / elapsed:.0f}/s, submit included")
            finally:
                system.stop()
        finally:
            ctx.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
