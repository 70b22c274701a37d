"""Warm workers for HANDLER tasks: one process calls registered function after function.

Pattern: Object Pool (introduced in stage 1, zygote.py). A HANDLER task calls a function the
agent's operator registered (`agent_handlers`), and by default (`agent_handler_mode = "warm"`)
it runs in a warm worker: a process of the agent's pool that has already imported the
handlers' modules and serves one call after another, as a Celery prefork pool process does.
A call costs two pipes and two messages, not a fork (~1 ms of fork and copy-on-write faults
per task, the cost that kept stage 1 level with Celery on no-ops; docs/performance.md).

Each worker is a child of a zygote (zygote_server.py, op "serve"), which is what keeps the
guarantees the forked children have, without writing them again:

- it runs in a session of its own, so its pid is its process group: `run_process` keeps the
  deadline, the cancel and the capped capture, and on a timeout or a cancel kills that group,
  the worker with it. The worker is then replaced by a fork of the same zygote (~2 ms, no
  interpreter start); a killed call takes only its own task;
- the zygote watches the agent: if the agent dies, even by kill -9, the zygote kills the
  worker's group and sweeps what is left, so no pool process outlives its agent;
- the worker is a subreaper and kills what each call started before it answers, and the zygote
  sweeps what a killed worker leaves: a call holds no processes once its attempt is over;
- a call is sent to one worker, once, and never resent: a worker that dies during a call (an
  `os._exit`, a signal, a crash in C) fails that task with the reason, and is replaced. A
  worker found dead while idle is replaced before a call is sent to it.

Output: for each call the agent sends the task's stdout and stderr pipes with the call
(`socket.send_fds`); the worker points fds 1 and 2 at the stderr pipe (prints are log lines),
writes the JSON result to the stdout pipe, and points them back at /dev/null before the next
call, so the agent's capture loop sees both pipes end with the call.

The trade-off, and why warm is the default. A warm worker shares what a call leaves behind
with the next calls: module globals and caches, threads still running, open files, the working
directory, signal handlers, os.environ changes (the task's own TASKLAB_* variables are set for
every call); and what a forked call does as it exits (running atexit functions, joining its
threads) is not done after each call. A forked call (`agent_handler_mode = "fork"`) shares
nothing, for ~1.5 ms more CPU per task. Warm is the default because a handler is not a
submitter's code: it is a function the agent's operator registered and deployed with it,
written to be called again, as a Celery task is; the task types that run code a submitter
sends (PYTHON_SCRIPT, SHELL) stay a process per task. Whatever leaks, leaks for a bounded
time: a worker is recycled after `agent_handler_max_calls` calls (Celery's
max-tasks-per-child), which costs one fork per that many calls. Choose "fork" for handlers
that keep state they should not (a global that grows, a thread per call, a file never closed)
or that must not see each other's.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading

from common.executors.process import kill_group
from common.executors.zygote import (
    Env,
    Zygote,
    ZygoteError,
    ZygotePool,
    _Reader,
    _send,
    send_reap,
)

# How long the agent waits for a call's answer once its pipes have ended: the worker answers
# right before it lets go of them, so this is only ever reached by a call that closed its own
# stdout and stderr and ran on (it is killed, as a forked child would be).
ANSWER_WAIT = 1.0
# How long a retired or killed worker may take to be reported gone by its zygote.
END_WAIT = 5.0


def _pending(reader: _Reader) -> bool:
    """A whole message is buffered: select would not see it, it was already read."""
    buf = reader.buf
    return len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big")


class HandlerWorker:
    """One warm worker: a child of `zygote`, and the socket the agent sends it calls on."""

    def __init__(self, zygote: Zygote, start_timeout: float = 30.0) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        stdin = os.open(os.devnull, os.O_RDONLY)
        idle_out = os.open(os.devnull, os.O_WRONLY)
        try:
            _send(zygote.sock, {"op": "serve"}, [stdin, idle_out, idle_out, theirs.fileno()])
            reply = zygote.reader.read(start_timeout)
        except (OSError, TimeoutError) as exc:
            ours.close()
            raise ZygoteError(f"zygote did not start a handler worker: {exc}") from None
        finally:
            # The worker has its own copies now; ours would hide its end from us.
            theirs.close()
            os.close(stdin)
            os.close(idle_out)
        if reply is None or "pid" not in reply:
            ours.close()
            raise ZygoteError(f"zygote did not start a handler worker: {reply}")
        self.zygote = zygote
        self.pid = int(reply["pid"])
        self.sock = ours
        self.reader = _Reader(ours)
        self.calls = 0
        # The worker's exit status once its zygote reported it (None: it has not ended).
        self.ended: int | None = None
        self.zygote_lost = False  # the zygote died too: the status is a guess, the zygote dead

    def idle_and_alive(self) -> bool:
        """True unless the worker (or its zygote) ended while it waited for a call."""
        if self.ended is not None or not self.zygote.alive():
            return False
        if _pending(self.reader) or _pending(self.zygote.reader):
            return False
        readable, _, _ = select.select([self.sock, self.zygote.sock], [], [], 0)
        return not readable

    def take_end(self, timeout: float | None) -> int:
        """The worker's exit status, from its zygote; raises TimeoutError after `timeout`."""
        if self.ended is None:
            msg = self.zygote.reader.read(timeout)
            if msg is None or not isinstance(msg.get("exit"), int):
                # The zygote itself is gone: the status went with it (it is closed at burial).
                self.ended = -signal.SIGKILL
                self.zygote_lost = True
            else:
                self.ended = msg["exit"]
        return self.ended


class WarmCall:
    """A call running in a warm worker, shaped like the parts of Popen run_process uses.

    `pid` is the worker's: run_process's group kill on a timeout or a cancel kills the worker.
    `returncode` is the call's (0, 1 after a traceback, a SystemExit's code), or the worker's
    exit status if it ended during the call.
    """

    def __init__(self, worker: HandlerWorker, out_r: int, err_r: int, pool: HandlerWorkerPool):
        self.worker = worker
        self.pid = worker.pid
        self.stdout = os.fdopen(out_r, "rb", buffering=0)
        self.stderr = os.fdopen(err_r, "rb", buffering=0)
        self.returncode: int | None = None
        self.pool = pool
        self._answered = False  # the worker said this call ended
        self._lost = False  # the worker's socket ended during the call: it died
        self._kept = False
        self._released = False

    @property
    def error(self) -> str | None:
        """Why the attempt failed when the exit code cannot say (read by run_process)."""
        if not self._lost:
            return None
        status = self.worker.ended
        if status is None or self.worker.zygote_lost:
            how = "its exit status is lost"
        elif status < 0:
            how = f"killed by signal {-status}"
        else:
            how = f"exit code {status}"
        return f"the warm worker running the handler died during the call ({how}); replaced"

    def _answer(self, timeout: float | None) -> None:
        msg = self.worker.reader.read(timeout)
        if msg is not None and isinstance(msg.get("exit"), int):
            self.returncode = msg["exit"]
            self._answered = True
        else:
            self._lost = True

    def poll(self) -> int | None:
        if self.returncode is None:
            if not self._lost and self.worker.reader.ready():
                self._answer(None)
            if self._lost and self.worker.zygote.reader.ready():
                self.returncode = self.worker.take_end(None)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        # run_process waits only once it has signalled the worker's group (a timeout, a
        # cancel, a call that did not answer): what it waits for is the worker's end.
        try:
            status = self.worker.take_end(timeout)
        except TimeoutError:
            raise subprocess.TimeoutExpired("handler worker", timeout or 0) from None
        if self.returncode is None:
            self.returncode = status
        return self.returncode

    def keep(self) -> bool:
        """Asked by run_process when the call ended on its own: does the worker live on?

        Only if it answered this call. Its pipes end just after its answer, so the wait here
        is for a call that closed its own stdout and stderr and ran on: it is killed.
        """
        if self.returncode is None and not self._lost:
            try:
                self._answer(ANSWER_WAIT)
            except TimeoutError:
                pass
        self._kept = self._answered and self.worker.ended is None
        return self._kept

    def release(self) -> None:
        """run_process is done with the call: the worker serves the next, or is replaced."""
        if not self._released:
            self._released = True
            self.pool.done(self.worker, kept=self._kept)


# --8<-- [start:pool]
class HandlerWorkerPool:
    """Idle warm workers, one per HANDLER call this agent runs at once; grows on demand.

    Each worker lives in a zygote taken from `zygotes` (the agent's pool, whose zygotes have
    imported the handlers' modules) and gives it back when it ends: killed with its call,
    dead of its own, or retired after `max_calls` calls (0 = never).
    """

    def __init__(self, zygotes: ZygotePool, max_calls: int = 1000) -> None:
        self.zygotes = zygotes
        self.max_calls = max_calls
        self._idle: list[HandlerWorker] = []
        self._lock = threading.Lock()

    def call(self, handler: str, args: dict, env: Env | None = None) -> WarmCall:
        """Send one call to an idle worker; its output comes back on fresh pipes."""
        for attempt in range(2):
            worker = self._get()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            request = {"op": "call", "handler": handler, "args": args, "env": dict(env or {})}
            try:
                _send(worker.sock, request, [out_w, err_w])
            except OSError as exc:
                # The worker's end is closed: it read nothing, so another may take the call.
                os.close(out_r)
                os.close(err_r)
                self._bury(worker)
                if attempt:
                    raise ZygoteError(f"no handler worker took the call: {exc}") from None
                continue
            finally:
                os.close(out_w)
                os.close(err_w)
            return WarmCall(worker, out_r, err_r, self)
        raise AssertionError("unreachable")

    def done(self, worker: HandlerWorker, kept: bool) -> None:
        """A call is over: keep the worker for the next, recycle it, or bury it."""
        if kept:
            worker.calls += 1
            if not self.max_calls or worker.calls < self.max_calls:
                with self._lock:
                    self._idle.append(worker)
                return
        self._bury(worker)

    def warm(self, count: int = 1) -> None:
        """Start workers ahead of the first call (agent start-up), not during it."""
        with self._lock:
            missing = count - len(self._idle)
        # Every zygote first, so that their interpreters start side by side.
        zygotes = [self.zygotes.get() for _ in range(missing)]
        started = [self._start(zygote) for zygote in zygotes]
        with self._lock:
            self._idle.extend(started)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            # The zygote first: it sees the agent's end and kills the worker's group, then
            # exits. (Closing the worker's socket first would race the two ends.)
            worker.zygote.close()
            worker.sock.close()

    def _get(self) -> HandlerWorker:
        stale = []
        try:
            with self._lock:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.idle_and_alive():
                        return worker
                    stale.append(worker)
        finally:
            for worker in stale:
                self._bury(worker)
        return self._start(self.zygotes.get())

    def _start(self, zygote: Zygote) -> HandlerWorker:
        # One retry with a fresh zygote covers one that died while idle.
        for attempt in range(2):
            try:
                return HandlerWorker(zygote, self.zygotes.start_timeout)
            except ZygoteError:
                zygote.close()
                if attempt:
                    raise
                zygote = self.zygotes.get()
        raise AssertionError("unreachable")

    def _bury(self, worker: HandlerWorker) -> None:
        """The worker ends (or has ended): let its zygote reap it, and give the zygote back.

        Closing its socket retires a live worker (it exits when it reads the end); one that
        does not end within END_WAIT is killed. Its pid is still unreaped while this runs, so
        the kill cannot reach a process that reused it.
        """
        worker.sock.close()
        zygote = worker.zygote
        try:
            try:
                worker.take_end(END_WAIT)
            except TimeoutError:
                kill_group(worker.pid)
                worker.take_end(END_WAIT)
            healthy = zygote.alive() and not worker.zygote_lost
            if healthy:
                send_reap(zygote.sock)
        except (OSError, TimeoutError):
            healthy = False
        self.zygotes.put(zygote, healthy)


# --8<-- [end:pool]
