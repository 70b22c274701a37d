"""Many light stage 2 agents in one command: `python -m bench.scaling_agents --count 50`.

Each agent is the real stage 2 agent, built by stage 2's own composition root
(`stage2_coordination.bootstrap.run_agent`), in a process of its own, with its own ZooKeeper
session and `/live-agents/{agentId}` node, its own Redis inbox, claim and reports. One thing
differs: its executor runs no process. A task's payload is `sleep <seconds>` and the agent
waits that long in its worker thread, so fifty agents fit on two cores, and what is measured
is the scheduler, the registry and the queues, not fifty process spawns.

Light, too, in how they start: this parent imports everything once and forks one child per
agent (copy-on-write shares the imported code), instead of fifty interpreters importing the
same modules. Nothing that opens a connection or a thread runs before the fork: each child
builds its own clients.

The agents read the usual settings from the environment (TASKLAB_REDIS_URL, TASKLAB_ZK_HOSTS,
TASKLAB_ZK_CHROOT, TASKLAB_AGENT_CAPACITY, ...); agent i is `<prefix><i>`. SIGTERM or SIGINT
stops every child by its PID (each drains and deregisters as a real agent does) and then this
parent; a child still alive after `--stop-timeout` is killed by its PID.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable

from common.config import Settings
from common.domain.task import Task, TaskType
from common.executors.base import ExecutorLimits, TaskExecutor
from common.executors.factory import ExecutorFactory
from common.executors.process import LineListener, ProcessOutcome


class SleepExecutor(TaskExecutor):
    """SHELL tasks whose payload is `sleep <seconds>`, run as a wait in the worker thread.

    The cancel and the timeout keep their meaning (checked every 50 ms, as a real child's
    would be killed); any other payload fails with the reason, as a bad command would."""

    task_type = TaskType.SHELL

    def prepare(self, task: Task) -> list[str]:
        return shlex.split(task.payload)

    def execute(
        self,
        task: Task,
        argv: list[str],
        on_line: LineListener | None,
        should_cancel: Callable[[], bool] | None,
    ) -> ProcessOutcome:
        began = time.monotonic()
        try:
            if len(argv) != 2 or argv[0] != "sleep":
                raise ValueError
            seconds = float(argv[1])
        except ValueError:
            return ProcessOutcome(127, stderr=f"the simulated agent only sleeps: {task.payload!r}")
        deadline = began + min(seconds, task.execution_timeout)
        while (left := deadline - time.monotonic()) > 0:
            if should_cancel is not None and should_cancel():
                return ProcessOutcome(None, cancelled=True, duration=time.monotonic() - began)
            time.sleep(min(0.05, left))
        timed_out = seconds > task.execution_timeout
        return ProcessOutcome(
            None if timed_out else 0, timed_out=timed_out, duration=time.monotonic() - began
        )


def sleep_executors(settings: Settings) -> ExecutorFactory:
    """What stage 2's bootstrap gets instead of `executors_for(settings)`: no zygote pool."""
    limits = ExecutorLimits(
        output_cap_bytes=settings.output_cap_bytes, max_log_lines=settings.max_log_lines
    )
    return ExecutorFactory(limits, warm_fork=False).register(TaskType.SHELL, SleepExecutor)


def run_one(agent_id: str) -> None:
    """A forked child's life: the stage 2 agent, until SIGTERM."""
    from common.observability import configure_logging
    from stage2_coordination import bootstrap

    # The one seam: the executors the composition root builds. Fail loudly if the bootstrap
    # no longer has it, rather than run the real executors and measure process spawns.
    if not hasattr(bootstrap, "executors_for"):
        raise SystemExit("stage 2's bootstrap no longer builds executors with executors_for")
    bootstrap.executors_for = sleep_executors
    os.environ["TASKLAB_AGENT_ID"] = agent_id
    os.environ["TASKLAB_PROCESS_NAME"] = agent_id
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, role="agent", process=agent_id)
    bootstrap.run_agent(settings)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling_agents", description=__doc__)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--prefix", default="sim-")
    p.add_argument("--stop-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    # Imported here, in the parent, so that every child shares these pages.
    import stage2_coordination.bootstrap  # noqa: F401

    children: list[int] = []
    for i in range(args.count):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run_one(f"{args.prefix}{i + 1:03d}")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - a child must never return into the loop
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        children.append(pid)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    alive = set(children)
    while alive and not stop.wait(0.2):
        alive -= _reaped(alive)
    for pid in sorted(alive):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.stop_timeout
    while alive and time.monotonic() < deadline:
        alive -= _reaped(alive)
        time.sleep(0.05)
    for pid in sorted(alive):
        _signal(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0 if not alive else 1


def _reaped(pids: set[int]) -> set[int]:
    gone = set()
    for pid in pids:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            gone.add(pid)
    return gone


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
