"""The Celery side of the benchmark: one app, three tasks with the same bodies as tasklab's.

Configured from the environment so the harness can start `celery -A bench.celery_app worker`
as a plain process: BENCH_REDIS_URL (broker and result backend, the very Redis tasklab uses),
BENCH_PARITY=1 for the setup that matches tasklab's guarantees, BENCH_RECORD_DIR for the
per-task timestamps.

Timestamps: tasklab writes a task's start and end into its history in Redis as part of its
normal work. Celery keeps no such record, so a `task_prerun` / `task_postrun` pair notes them
in the worker process and appends one line per task to a per-process file with a single
`os.write` (a few microseconds, no Redis traffic, nothing that would flatter or burden Celery).
`task_prerun` fires just before the body (and before `track_started` stores STARTED);
`task_postrun` fires after the result is stored in the backend, i.e. when a client could see it.
"""

from __future__ import annotations

import os
import subprocess
import time

from celery import Celery
from celery.signals import task_postrun, task_prerun

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PARITY = os.environ.get("BENCH_PARITY") == "1"
RECORD_DIR = os.environ.get("BENCH_RECORD_DIR", "")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_redirect_stdouts=False,
)
if PARITY:
    # tasklab's guarantees: a task is acknowledged only once it has finished (a killed worker's
    # task runs again), a worker holds no more than it runs, and RUNNING is visible.
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_track_started=True)


@app.task(name="bench.noop")
def noop() -> None:
    """tasklab's PYTHON_SCRIPT `pass`, the way a Celery user writes it: a registered function."""


@app.task(name="bench.shell")
def shell() -> str:
    # tasklab runs `/bin/sh -c true` with stdout and stderr captured; the same cost here is one
    # fork/exec of a tiny binary with both streams captured.
    done = subprocess.run(["true"], capture_output=True, timeout=60)
    return done.stdout.decode()


@app.task(name="bench.sleep10")
def sleep10() -> None:
    time.sleep(0.01)


@app.task(name="bench.count")
def count(results: list) -> int:
    """A chord's callback (bench/fan_out.py): it reads every child's result, as a reduce does."""
    return len(results)


TASKS = {"noop": noop, "shell": shell, "sleep10ms": sleep10}

_starts: dict[str, float] = {}
_fd: int | None = None


@task_prerun.connect
def _note_start(task_id: str | None = None, **_: object) -> None:
    _starts[task_id or ""] = time.time()


@task_postrun.connect
def _note_end(task_id: str | None = None, **_: object) -> None:
    global _fd
    end = time.time()
    if not RECORD_DIR:
        return
    if _fd is None:
        path = os.path.join(RECORD_DIR, f"{os.getpid()}.rec")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = _starts.pop(task_id or "", 0.0)
    os.write(_fd, f"{task_id} {start:.6f} {end:.6f}\n".encode())
