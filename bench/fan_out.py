"""Fan-out and fan-in of a composite task, next to plain tasks and to a Celery chord.

    python -m bench.fan_out [--quick] [--children 1000]   # make bench-fanout[-quick]

One run starts Redis and ZooKeeper natively and the stage 2 roles (a scheduler, whose leader
coordinates composites, and `--agents` agents), and a Celery worker on the same Redis. Then,
in one shuffled order repeated `--reps` times, three ways of running `--children` registered
no-op functions and one step that reads all their results:

- composite: one SHARDS composite of `--children` HANDLER no-ops and a reduce step that counts
  its input: one submit; the scheduler's leader releases the children, the agents run them,
  the leader gives the reduce their results and finishes the parent.
- plain: the same no-ops submitted one by one as plain tasks, and no reduce (nothing can wait
  for them): the floor the composite's bookkeeping adds to.
- celery-chord: `chord(group(noop.si() x N))(count.s())` on the parity setup (acks late,
  prefetch 1), Celery's own fan-out and fan-in, with its Redis result backend.

Each trial reports: submit (the client's call(s)), fan-out (submit until the last child was
released to the queue; for plain tasks and Celery, until the last was sent), children done
(submit until the last child ended), fan-in (the last child's end until the parent, or the
chord's callback, finished; includes running the reduce step) and total. Figures are medians
over the repetitions; the ratios that matter are composite / plain (the cost of the
bookkeeping) and composite / celery-chord.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.run import Context
from bench.systems import REPO, TASKLAB_WORKLOADS, CelerySystem, TasklabSystem

REDUCE = (
    "import json, os\n"
    "rows = json.loads(os.environ['TASKLAB_INPUT'])\n"
    "print(sum(1 for r in rows if r['status'] == 'SUCCESS'))\n"
)
SYSTEMS = ("composite", "plain", "celery-chord")


@dataclass(frozen=True)
class Mode:
    name: str
    reps: int
    children: int


MODES = {"quick": Mode("quick", 1, 200), "full": Mode("full", 3, 1000)}


def _history_times(redis, task_ids: list[str]) -> dict[str, dict[str, float]]:
    """taskId -> {released, started, ended}: the first time each happened, from the history."""
    pipe = redis.pipeline(transaction=False)
    for tid in task_ids:
        pipe.lrange(f"task:{tid}:history", 0, -1)
    out: dict[str, dict[str, float]] = {}
    for tid, entries in zip(task_ids, pipe.execute(), strict=True):
        times: dict[str, float] = {}
        for raw in entries:
            e = json.loads(raw)
            at = float(e["at"])
            if e["state"] == "PENDING" and e.get("from") == "WAITING":
                times.setdefault("released", at)
            elif e["state"] == "RUNNING":
                times.setdefault("started", at)
            elif e["state"] in ("SUCCESS", "FAILED", "CANCELLED", "SKIPPED"):
                times["ended"] = at
        out[tid] = times
    return out


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.02)


def trial_composite(ctx: Context, n: int) -> dict:
    from common.adapters.redis_composite import RedisCompositeStore
    from common.domain.composite import validate_composite

    store = RedisCompositeStore(ctx.redis)
    spec = validate_composite(
        {
            "kind": "SHARDS",
            "taskName": "bench fan-out",
            "completions": n,
            "template": TASKLAB_WORKLOADS["handler-noop"],
            "reduce": {"taskType": "PYTHON_SCRIPT", "payload": REDUCE},
        }
    )
    t0 = time.time()
    parent, _ = store.submit_composite(spec)
    submitted = time.time()

    def finished() -> bool:
        status = ctx.redis.hget(f"task:{parent.task_id}", "status")
        return status in (b"SUCCESS", b"FAILED", b"CANCELLED")

    _wait(finished, 60 + n * 0.1, "the composite's end")
    tree = store.tree(parent.task_id)
    shards = [c.task_id for c in tree.children if c.role == "shard"]
    reduce = [c for c in tree.children if c.role == "reduce"]
    times = _history_times(ctx.redis, shards)
    parent_end = _history_times(ctx.redis, [parent.task_id])[parent.task_id]["ended"]
    last_end = max(t["ended"] for t in times.values())
    ok = tree.parent.status.value == "SUCCESS" and reduce and reduce[0].result.strip() == str(n)
    return {
        "submit_s": submitted - t0,
        "fan_out_s": max(t["released"] for t in times.values()) - t0,
        "children_done_s": last_end - t0,
        "fan_in_s": parent_end - last_end,
        "total_s": parent_end - t0,
        "ok": bool(ok),
        "runs_over_one": _duplicates(ctx.redis, shards),
    }


def _duplicates(redis, task_ids: list[str]) -> int:
    pipe = redis.pipeline(transaction=False)
    for tid in task_ids:
        pipe.lrange(f"task:{tid}:history", 0, -1)
    return sum(
        1
        for entries in pipe.execute()
        if sum(1 for raw in entries if json.loads(raw)["state"] == "RUNNING") > 1
    )


def trial_plain(ctx: Context, system: TasklabSystem, n: int) -> dict:
    t0 = time.time()
    ids = [system.submit("handler-noop") for _ in range(n)]
    submitted = time.time()
    system.wait_done(ids, 60 + n * 0.1)
    times = _history_times(ctx.redis, ids)
    last_end = max(t.get("ended", 0.0) for t in times.values())
    return {
        "submit_s": submitted - t0,
        "fan_out_s": submitted - t0,
        "children_done_s": last_end - t0,
        "fan_in_s": 0.0,
        "total_s": last_end - t0,
        "ok": all("ended" in t for t in times.values()),
        "runs_over_one": _duplicates(ctx.redis, ids),
    }


def trial_chord(celery: CelerySystem, n: int) -> dict:
    from celery import chord, group

    app = celery._client_app()
    noop, count = app.signature("bench.noop"), app.signature("bench.count")
    # Warm: the worker booted and its pool ready, as tasklab's agents are before their trials.
    noop.clone().delay().get(timeout=60)
    t0 = time.time()
    result = chord(group(noop.clone() for _ in range(n)))(count)
    submitted = time.time()
    value = result.get(timeout=60 + n * 0.1)
    done = time.time()
    ends = [end for rows in celery._records().values() for _, end in rows if end >= t0]
    # The callback is a task too: its record is the last one; the children's end before it.
    children_end = sorted(ends)[-2] if len(ends) >= 2 else done
    return {
        "submit_s": submitted - t0,
        "fan_out_s": submitted - t0,
        "children_done_s": children_end - t0,
        "fan_in_s": done - children_end,
        "total_s": done - t0,
        "ok": value == n,
        "runs_over_one": 0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fan_out", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run (200 children, once)")
    p.add_argument("--reps", type=int, help="repetitions of every trial (full 3, quick 1)")
    p.add_argument("--children", type=int, help="children per composite (full 1000)")
    p.add_argument("--agents", type=int, default=2, help="tasklab agents (2)")
    p.add_argument("--capacity", type=int, default=4, help="slots per agent = Celery's pool (4)")
    p.add_argument("--log-level", default="WARNING", help="log level of the started roles")
    p.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    base = MODES["quick" if args.quick else "full"]
    mode = Mode(base.name, args.reps or base.reps, args.children or base.children)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = REPO / ".tasklab" / "bench" / f"fan-out-{stamp}"
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ctx = Context(workdir)
    tasklab = TasklabSystem(2, ctx, args.agents, args.capacity, args.log_level)
    celery = CelerySystem(True, ctx, args.agents * args.capacity, args.log_level)
    trials: list[dict] = []
    try:
        ctx.start()
        for system in (tasklab, celery):
            reason = system.unavailable()
            if reason:
                raise SystemExit(f"error: {system.name}: {reason}")
        plan = [(rep, name) for rep in range(mode.reps) for name in SYSTEMS]
        random.Random(seed).shuffle(plan)
        print(
            f"-- {mode.name} run: {len(plan)} trials of {mode.children} children, seed {seed}; "
            f"logs in {log_dir}",
            flush=True,
        )
        for i, (rep, name) in enumerate(plan, 1):
            ctx.flush()
            system = celery if name == "celery-chord" else tasklab
            system.start(log_dir)
            try:
                if name == "celery-chord":
                    result = trial_chord(celery, mode.children)
                else:
                    # Warm: every agent registered and a first task run, as Celery's worker
                    # has booted its pool; neither side pays its start-up in the figures.
                    warm = tasklab.submit("handler-noop")
                    tasklab.wait_done([warm], 60)
                    ctx.flush()
                    if name == "composite":
                        result = trial_composite(ctx, mode.children)
                    else:
                        result = trial_plain(ctx, tasklab, mode.children)
            finally:
                system.stop()
                system.close()
            trials.append({"system": name, "rep": rep, **result})
            print(
                f"[{i}/{len(plan)}] {name:<13} total {result['total_s']:.2f}s  "
                f"fan-out {result['fan_out_s']:.2f}s  fan-in {result['fan_in_s']:.3f}s  "
                f"ok {result['ok']}",
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted; stopping what this run started", file=sys.stderr)
        return 130
    finally:
        for system in (tasklab, celery):
            system.stop()
            system.close()
        ctx.stop()

    table = summarize(trials)
    print(render(table, mode))
    path = args.out / f"fan-out-{mode.name}-{stamp}.json"
    path.write_text(
        json.dumps({"mode": mode.__dict__, "seed": seed, "trials": trials, "table": table})
    )
    print(f"results: {path}")
    return 0 if all(t["ok"] and not t["runs_over_one"] for t in trials) else 1


FIELDS = ("submit_s", "fan_out_s", "children_done_s", "fan_in_s", "total_s")


def summarize(trials: list[dict]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name in SYSTEMS:
        rows = [t for t in trials if t["system"] == name]
        if rows:
            table[name] = {f: statistics.median(r[f] for r in rows) for f in FIELDS}
    return table


def render(table: dict[str, dict[str, float]], mode: Mode) -> str:
    head = f"{'':<14}" + "".join(f"{f.removesuffix('_s'):>16}" for f in FIELDS)
    lines = [f"fan-out of {mode.children} no-op children (medians, seconds)", head]
    for name, row in table.items():
        lines.append(f"{name:<14}" + "".join(f"{row[f]:>16.3f}" for f in FIELDS))
    comp = table.get("composite")
    for base in ("plain", "celery-chord"):
        if comp and base in table and table[base]["total_s"] > 0:
            ratio = comp["total_s"] / table[base]["total_s"]
            lines.append(f"composite total / {base} total: {ratio:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
