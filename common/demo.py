"""`make demo`: bring the platform up natively, push a mix of tasks through it, show the result.

Starts the stage's real backing services (`common.devstack`) in a throw-away directory, runs its
roles as real processes (`tasklab run ROLE --stage N`), submits tasks the way a user would (the
client, and one `LPUSH` by hand), prints each task's state as it changes, then stops everything
it started, by PID. `--serve` keeps the platform up until Ctrl-C instead.

From stage 2 (where the scheduler leader fires cron schedules) it also creates one schedule
firing every minute, and waits for a run of it; from stage 4 it prints the web console's URL.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_schedule import RedisScheduleStore
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack import DevStack
from common.devstack.roles import RoleProcess
from common.domain.schedule import validate_schedule
from common.ports.schedule import ScheduleExists, ScheduleStore
from common.scheduling.schedules import create_schedule, preview
from common.stages import StageSpec, installed_stages, load_stage

DEMO_TASKS = [
    {"taskName": "hello", "taskType": "SHELL", "payload": "echo hello from $(hostname)"},
    {
        "taskName": "python",
        "taskType": "PYTHON_SCRIPT",
        "payload": "import platform; print('python', platform.python_version())",
    },
    {"taskName": "count", "taskType": "SHELL", "payload": "for i in 1 2 3; do echo $i; done"},
    {
        "taskName": "flaky (fails, retried twice)",
        "taskType": "SHELL",
        "payload": "echo trying; exit 7",
        "retryCount": 2,
    },
    {
        "taskName": "too slow (1 s timeout)",
        "taskType": "SHELL",
        "payload": "sleep 30",
        "executionTimeout": 1,
    },
]

# The scheduler leader fires cron schedules from stage 2 on (common/scheduling/schedules.py).
SCHEDULES_FROM_STAGE = 2
DEMO_SCHEDULE = {
    "name": "demo-every-minute",
    "schedule": "* * * * *",
    "concurrencyPolicy": "Forbid",
    "task": {"taskType": "SHELL", "payload": "echo fired by the demo schedule; date -u"},
}


def say(msg: str) -> None:
    print(msg, flush=True)


def run(stage: int, serve: bool, metrics: bool = False) -> int:
    spec = load_stage(stage)
    workdir = Path(tempfile.mkdtemp(prefix=f"tasklab-demo-s{stage}-"))
    stack = DevStack(workdir / "devstack")
    processes: list[RoleProcess] = []
    try:
        say(f"== tasklab stage {stage}: starting real services natively")
        services = stack.up(stage)
        env: dict[str, str] = {}
        for svc in services:
            env.update(svc.env)
            say(f"   {svc.name:<10} pid {svc.pid:<7} {svc.host}:{svc.port}")
        env.update(stack.role_env(stage))
        env.update(
            {"TASKLAB_ENV": "local", "TASKLAB_HEARTBEAT_TTL": "3", "TASKLAB_LOG_FORMAT": "text"}
        )
        # Where the stack runs Prometheus it lists every process at its operator port
        # (DevStack.write_scrape_targets): the roles must serve there, or every target is down
        # and AgentDown fires for agents that are running fine.
        watched = "prometheus" in spec.services
        ports = stack.metrics_addresses(stage) if metrics or watched else {}
        for proc in role_processes(spec, env, workdir, ports):
            processes.append(proc.start())
            address = proc.env.get("TASKLAB_METRICS_ADDRESS")
            where = f"  metrics http://{address}/metrics" if address else ""
            say(f"   {proc.name:<10} pid {proc.pid:<7} log {proc.log_path}{where}")
        if watched:
            monitoring_urls(env)
        if "TASKLAB_API_URL" in env:
            say(f"== web console: {env['TASKLAB_API_URL']}/ui/")
        schedules = stage >= SCHEDULES_FROM_STAGE
        if schedules:
            create_demo_schedule(RedisScheduleStore(redis_client(env["TASKLAB_REDIS_URL"])))
        if serve:
            return serve_forever(env, processes)
        return drive(env, schedules)
    finally:
        for proc in processes:
            proc.stop()
        stopped = stack.down()
        say(f"== stopped {len(processes)} role process(es) and {len(stopped)} service(s)")


def monitoring_urls(env: dict[str, str]) -> None:
    """Where to look: Prometheus's targets and alerts pages, Alertmanager's alerts."""
    prometheus = env.get("TASKLAB_PROMETHEUS_URL")
    alertmanager = env.get("TASKLAB_ALERTMANAGER_URL")
    say("== watched by")
    if prometheus:
        say(f"   Prometheus    {prometheus}/targets  {prometheus}/alerts")
    if alertmanager:
        say(f"   Alertmanager  {alertmanager}/#/alerts")


def role_processes(
    spec: StageSpec,
    env: dict[str, str],
    workdir: Path,
    metrics: dict[str, tuple[str, str]] | None = None,
) -> list[RoleProcess]:
    """One (not yet started) process per entry of the stage's declared topology; each with
    its own operator port (/metrics, /health, /ready) when `metrics` names one."""
    metrics = metrics or {}
    return [
        RoleProcess(
            role,
            spec.number,
            {
                **env,
                # Each role's id is its process name, which is also its `instance` in
                # Prometheus's targets file: alerts and logs say the same "scheduler-2".
                **{
                    f"TASKLAB_{kind}_ID": name
                    for kind in ("AGENT", "SCHEDULER", "MANAGER", "CHECKER")
                },
                **({"TASKLAB_METRICS_ADDRESS": metrics[name][1]} if name in metrics else {}),
            },
            workdir,
            name,
        )
        for role, name in spec.processes()
    ]


def create_demo_schedule(store: ScheduleStore) -> None:
    """The demo's cron schedule, created unless it exists (a second demo on the same Redis
    keeps the one it has): the leader fires it at the next whole minute."""
    spec = validate_schedule(DEMO_SCHEDULE)
    now = time.time()
    try:
        create_schedule(store, spec, now)
        say(f"== created cron schedule {spec.name!r} ({spec.schedule}, Forbid)")
    except ScheduleExists:
        say(f"== cron schedule {spec.name!r} exists already: kept")
    fires = ", ".join(_iso(t) for t in preview(spec.schedule, spec.time_zone, now, 2))
    say(f"   next fire times: {fires}   (`tasklab schedule get {spec.name}`)")


def _iso(ts: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(ts))


def drive(env: dict[str, str], schedules: bool = False) -> int:
    client = TaskClient(RedisTaskStore(redis_client(env["TASKLAB_REDIS_URL"])))
    say("== submitting tasks")
    ids = []
    for spec in DEMO_TASKS:
        task, _ = client.submit(spec, actor="demo")
        ids.append(task.task_id)
        say(f"   {task.task_id}  {spec['taskName']}")
    r = client.store.client
    r.lpush(keys.PENDING_QUEUE, json.dumps({"taskType": "SHELL", "payload": "echo hand-pushed"}))
    say('   LPUSH queue:pending \'{"taskType":"SHELL","payload":"echo hand-pushed"}\'')
    r.lpush(keys.PENDING_QUEUE, "this is not a task")
    say("   LPUSH queue:pending 'this is not a task'   (a poisoned message)")

    say("== watching states (each line is a change)")
    last: dict[str, str] = {}
    # A `* * * * *` schedule fires within a minute: wait for one of its runs to end as well.
    deadline = time.monotonic() + (100 if schedules else 60)
    while time.monotonic() < deadline:
        tasks = client.store.list_tasks(limit=50)
        for t in reversed(tasks):
            state = f"{t.status.value} (attempt {t.attempt})"
            if last.get(t.task_id) != state:
                last[t.task_id] = state
                say(f"   {t.task_id[:8]}  {t.task_name[:32]:<32}  {state}")
        submitted = [t for t in tasks if not t.schedule_id]
        runs = [t for t in tasks if t.schedule_id]
        done = len(submitted) == len(DEMO_TASKS) + 1 and all(t.is_terminal for t in submitted)
        if done and (not schedules or any(t.is_terminal for t in runs)):
            break
        time.sleep(0.1)

    say("== final states")
    outcome = 0
    for t in reversed(client.store.list_tasks(limit=50)):
        detail = (t.result or "").strip().splitlines()[:1] or [t.error or ""]
        say(f"   {t.status.value:<8} {t.task_name[:32]:<32} {detail[0][:60]}")
        # A schedule's next run may have just begun; the tasks the demo submitted must be over.
        if not t.is_terminal and not t.schedule_id:
            outcome = 1
    flaky = client.get(ids[3])
    say(f"== timeline of {flaky.task_name!r} (`tasklab status {flaky.task_id}`)")
    for h in client.store.history(flaky.task_id):
        reason = f"  ({h['reason']})" if h.get("reason") else ""
        say(f"   {h['state']:<8} attempt {h['attempt']}  by {h['actor']}{reason}")
    if schedules:
        outcome = max(outcome, report_schedule(r))
    dead = r.lrange(keys.DEAD_LETTER, 0, -1)
    say(f"== dead-letter list ({keys.DEAD_LETTER}): {len(dead)} message(s)")
    for raw in dead:
        entry = json.loads(raw)
        say(f"   {entry['message']!r}: {entry['reason']}")
    return outcome


def report_schedule(client) -> int:
    """The demo schedule's status, as `tasklab schedule get` shows it; 1 if it never fired."""
    state = RedisScheduleStore(client).get(DEMO_SCHEDULE["name"])
    if state is None or state.last_schedule_time is None:
        say(f"== cron schedule {DEMO_SCHEDULE['name']!r} did not fire")
        return 1
    say(
        f"== cron schedule {state.name!r}: last fired for {_iso(state.last_schedule_time)}, "
        f"run {state.last_run_id}"
    )
    return 0


def serve_forever(env: dict[str, str], processes: list[RoleProcess]) -> int:
    say("== the platform is up. In another shell:")
    for key, value in env.items():
        if key.startswith("TASKLAB_") and key.endswith(("URL", "HOSTS", "BOOTSTRAP")):
            say(f"   export {key}={value}")
    say("   .venv/bin/tasklab submit 'echo hi' --wait")
    if "TASKLAB_API_URL" in env:
        say(f"   open {env['TASKLAB_API_URL']}/ui/ (the web console)")
    say("== Ctrl-C stops everything")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            dead = [p.name for p in processes if not p.alive()]
            if dead:
                say(f"   role process(es) exited: {', '.join(dead)}")
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    stages = installed_stages()
    parser = argparse.ArgumentParser(prog="python -m common.demo", description=__doc__)
    parser.add_argument("--stage", type=int, default=max(stages, default=1))
    parser.add_argument("--serve", action="store_true", help="keep running until Ctrl-C")
    parser.add_argument(
        "--metrics", action="store_true", help="each role serves /metrics on a port of its own"
    )
    args = parser.parse_args(argv)
    if args.stage not in stages:
        print(f"error: stage {args.stage} is not installed (have {stages})", file=sys.stderr)
        return 2
    os.environ.setdefault("TASKLAB_ENV", "local")
    return run(args.stage, args.serve, args.metrics)


if __name__ == "__main__":
    sys.exit(main())
