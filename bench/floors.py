"""The floors: the least work any Redis-list task system can do per task, measured here.

- `redis_list_floor`: one task = LPUSH onto a list, BLMOVE it to a processing list, HSET its
  status: the three round trips a reliable list queue cannot do without, in a tight redis-py
  loop with nothing else (no JSON, no validation, no history, no process).
- `spawn_floor`: the bare cost of running a task in a process of its own, `parallel` loops at
  once (as many as the systems have worker processes):
  `sh` = posix_spawn of `/bin/sh -c true` in a new session with stdout/stderr piped, then
  waitpid (what a SHELL task needs at the least); `fork` = os.fork of this warm interpreter,
  the child running `exec(compile("pass"))` and `_exit` (what a PYTHON_SCRIPT task needs at
  the least once an interpreter is warm); `python` = a fresh `python -I -c pass` (what starting
  a new interpreter per task costs).

Run as `python -m bench.floors KIND N` for one loop; the harness starts `parallel` of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the fork floor's process stays as small as a zygote: no redis import
    from redis import Redis

KINDS = ("sh", "fork", "python")


def redis_list_floor(client: Redis, n: int) -> dict[str, float]:
    client.delete("floor:queue", "floor:processing")
    msg = json.dumps({"taskType": "SHELL", "payload": "true", "taskId": "x" * 36})
    started = time.perf_counter()
    for i in range(n):
        client.lpush("floor:queue", msg)
        client.blmove("floor:queue", "floor:processing", 1, "RIGHT", "LEFT")
        client.hset(f"floor:task:{i}", "status", "SUCCESS")
    elapsed = time.perf_counter() - started
    pipe = client.pipeline(transaction=False)
    pipe.delete("floor:queue", "floor:processing")
    for i in range(n):
        pipe.delete(f"floor:task:{i}")
    pipe.execute()
    return {"per_task_us": elapsed / n * 1e6, "tasks_per_s": n / elapsed}


def _one(kind: str) -> None:
    if kind == "sh":
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        pid = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", "true"],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, w_out, 1),
                (os.POSIX_SPAWN_DUP2, w_err, 2),
            ],
            setsid=True,
        )
        os.close(w_out)
        os.close(w_err)
        while os.read(r_out, 65536):
            pass
        while os.read(r_err, 65536):
            pass
        os.close(r_out)
        os.close(r_err)
        os.waitpid(pid, 0)
    elif kind == "fork":
        # Compiled before the fork, as the zygote does: compiling in the child would dirty
        # hundreds of copy-on-write pages and measure that instead of the fork.
        code = compile("pass", "<task>", "exec")
        pid = os.fork()
        if pid == 0:
            os.setsid()
            try:
                exec(code, {"__name__": "__main__"})
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    elif kind == "python":
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
    else:
        raise ValueError(kind)


def loop(kind: str, n: int) -> float:
    """Seconds for `n` tasks of `kind`, one after another."""
    _one(kind)  # warm up: page cache, dynamic loader
    started = time.perf_counter()
    for _ in range(n):
        _one(kind)
    return time.perf_counter() - started


def spawn_floor(kind: str, n: int, parallel: int) -> dict[str, float]:
    """Run `parallel` loops of `n` at once in fresh processes; aggregate throughput."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.floors", kind, str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(parallel)
    ]
    seconds = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        seconds.append(float(out.strip()))
    per_task = sum(seconds) / (n * parallel)
    return {"per_task_us": per_task * 1e6, "tasks_per_s": sum(n / s for s in seconds)}


if __name__ == "__main__":
    print(loop(sys.argv[1], int(sys.argv[2])))
