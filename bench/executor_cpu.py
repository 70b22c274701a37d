"""CPU per task of the executor alone: `python -m bench.executor_cpu [--n N] [--reps R]`.

No Redis, no agent loop: a default executor factory (warm zygotes, as an agent has) runs N
tasks of each case in this thread, one after the other. Reported per task: the CPU of this
process (the agent's side: pipes, the capture loop, the zygote protocol), of the zygote (its
own, and its reaped task processes' through the zygote's children times), and their sum;
and the wall time per task. The cases are interleaved repetition by repetition, so a change
in the machine's load touches each alike. `--source DIR` runs the executors from another
checkout as well (e.g. `git archive BASE | tar -x -C DIR`), interleaved with this one's: a
before/after in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "noop": ("PYTHON_SCRIPT", "pass"),
    "shell": ("SHELL", "true"),
}
WARM_UP = 50


def _proc_cpu(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of `pid`, in seconds (/proc/PID/stat): a zygote's own
    CPU, and its reaped task processes'."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = [int(f) for f in fh.read().rsplit(")", 1)[1].split()[11:15]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1]) / ticks, (fields[2] + fields[3]) / ticks


def _pool_cpu(pids: list[int]) -> tuple[float, float]:
    own, children = zip(*(_proc_cpu(pid) for pid in pids), strict=True)
    return sum(own), sum(children)


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure(task_type: str, payload: str, n: int) -> dict[str, float]:
    """Run in a child interpreter (one per case and repetition): a clean process to count."""
    from common.domain.task import Task, TaskSpec, TaskType
    from common.executors.factory import default_factory

    factory = default_factory()
    factory.warm(1)
    executor = factory.create(TaskType(task_type))
    spec = TaskSpec(task_name="cpu", task_type=TaskType(task_type), payload=payload)
    tasks = [Task.new(spec) for _ in range(n + WARM_UP)]
    for task in tasks[:WARM_UP]:
        assert executor.run(task).success
    zygotes = [z.proc.pid for z in factory.pool._idle]
    me0, z0, w0 = _self_cpu(), _pool_cpu(zygotes), time.monotonic()
    for task in tasks[WARM_UP:]:
        result = executor.run(task)
        assert result.success, result.error
    wall = time.monotonic() - w0
    me = _self_cpu() - me0
    z1 = _pool_cpu(zygotes)
    factory.close()
    zygote, tasks = z1[0] - z0[0], z1[1] - z0[1]
    return {
        "agent_ms": me / n * 1e3,
        "zygote_ms": zygote / n * 1e3,
        "task_ms": tasks / n * 1e3,
        "pool_ms": (zygote + tasks) / n * 1e3,
        "wall_ms": wall / n * 1e3,
    }


def _run_case(source: Path, case: str, n: int) -> dict[str, float]:
    task_type, payload = CASES[case]
    # This file's `measure`, with `common` imported from `source`.
    code = (
        f"import json, runpy; measure = runpy.run_path({str(Path(__file__).resolve())!r})"
        f"['measure']; print(json.dumps(measure({task_type!r}, {payload!r}, {n})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.executor_cpu")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cases", default="noop,shell")
    p.add_argument("--source", type=Path, help="another checkout to run beside this one")
    args = p.parse_args(argv)

    here = Path(__file__).resolve().parent.parent
    sources = {"this": here}
    if args.source:
        sources = {"base": args.source.resolve(), **sources}
    cases = args.cases.split(",")
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    print(f"load average at start: {os.getloadavg()}")
    for _ in range(args.reps):
        for case in cases:
            for label, source in sources.items():
                runs.setdefault((label, case), []).append(_run_case(source, case, args.n))
    print(f"load average at end:   {os.getloadavg()}")
    print(
        f"{'source':6} {'case':6} {'agent ms':>9} {'zygote ms':>9} {'tasks ms':>9} "
        f"{'sum ms':>9} {'wall ms':>9}"
    )
    for (label, case), reps in runs.items():
        med = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
        total = statistics.median(r["agent_ms"] + r["pool_ms"] for r in reps)
        spread = [round(r["agent_ms"] + r["pool_ms"], 3) for r in reps]
        print(
            f"{label:6} {case:6} {med['agent_ms']:9.3f} {med['zygote_ms']:9.3f} "
            f"{med['task_ms']:9.3f} "
            f"{total:9.3f} {med['wall_ms']:9.3f}   sums {spread}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
