"""Warm fork server for task processes: the agent's side of `zygote_server.py`.

Pattern: Object Pool (introduced in stage 1). Starting a Python interpreter per task costs
~30 ms; a zygote (a small interpreter started once) forks a child per task in ~1 ms. One
zygote runs one task at a time, so the pool holds as many as the agent runs tasks at once and
grows on demand. A child it forks looks to `run_process` like any other child process: it has
a pid that is also its process group id, stdout and stderr pipes, `poll` and `wait`; the
deadline, the cancel, the capped capture and the group kill stay in one place.

PYTHON_SCRIPT children run the source in the forked interpreter; SHELL children exec
/bin/sh; HANDLER calls run in a warm worker a zygote forks once and which serves call after
call (warm_worker.py), or, with `agent_handler_mode = "fork"`, in a child per call. Every
zygote of the pool imported the handlers' modules once at its start (`preload`), so neither
pays an interpreter start or an import. Either way the zygote kills the child's group if the
agent dies while it runs.

If a zygote cannot be started or dies, the executor falls back to a fresh process, so a task
never fails because of this optimisation. A child the zygote could not start for a reason of
the task's own (a payload the OS refuses) raises `SpawnError`: the zygote goes back to the
pool, and the attempt fails with the reason. A zygote that dies under a running task (killed,
or its socket broken) ends that attempt FAILED with that reason and is replaced: the next task
gets a fresh one.

The zygote is also the subreaper of what its tasks start (zygote_server.py): what a task leaves
behind, even after setsid, is killed when the attempt ends.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path

from common.executors.process import SpawnError
from common.executors.zygote_server import REAP_BODY

SERVER = Path(__file__).with_name("zygote_server.py")

# Environment changes for one child: a variable's value, or None to remove it.
Env = Mapping[str, str | None]


class ZygoteError(RuntimeError):
    """The zygote could not start a child (it died, or never answered)."""


def _send(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(obj).encode()
    data = struct.pack(">I", len(body)) + body
    if fds:
        # The fds ride with the first bytes; a long payload may need more than one send.
        sent = socket.send_fds(sock, [data], fds)
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


# The "reap" message, framed once: the zygote recognises these bytes without json.
REAP = struct.pack(">I", len(REAP_BODY)) + REAP_BODY


def send_reap(sock: socket.socket) -> None:
    sock.sendall(REAP)


class _Reader:
    """Length-prefixed JSON messages from the zygote, read through one buffer.

    One recv usually brings a whole message, often two (a fast child's pid and exit status
    arrive together): every syscall saved is paid once per task.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _pop(self) -> dict | None:
        if len(self.buf) < 4:
            return None
        (size,) = struct.unpack_from(">I", self.buf)
        if len(self.buf) < 4 + size:
            return None
        body = bytes(self.buf[4 : 4 + size])
        del self.buf[: 4 + size]
        return json.loads(body)

    def ready(self) -> bool:
        """Something can be read without blocking: a buffered message, data, or EOF."""
        if len(self.buf) >= 4 and len(self.buf) >= 4 + struct.unpack_from(">I", self.buf)[0]:
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def read(self, timeout: float | None) -> dict | None:
        """The next message; None if the zygote is gone. Raises TimeoutError on `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self._pop()
            if msg is not None:
                return msg
            if deadline is not None:
                left = deadline - time.monotonic()
                readable, _, _ = select.select([self.sock], [], [], max(0.0, left))
                if not readable:
                    raise TimeoutError
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk


class Zygote:
    """One zygote process and the socket to it."""

    def __init__(self, start_timeout: float = 30.0, preload: tuple[str, ...] = ()) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = ours
        self.reader = _Reader(ours)
        self.start_timeout = start_timeout
        try:
            # -I: isolated mode, as the fresh-interpreter executor used: no user site-packages,
            # no PYTHON* variables, no script directory on sys.path. A session of its own keeps
            # a terminal's Ctrl-C (meant for the agent, which stops gently) away from it; when
            # the agent goes, even by kill -9, the socket closes and the zygote exits.
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(SERVER), str(theirs.fileno()), *preload],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
            )
        finally:
            theirs.close()
        # Every child's stdin, opened once (an open and a close per task saved): each child
        # gets its own copy of it with the request.
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._finalizer = weakref.finalize(self, _shutdown, self.sock, self.proc, self.devnull)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._finalizer()

    def start(self, request: dict, pool: ZygotePool | None = None) -> ZygoteChild:
        """Ask for a child (`request` is a "run" or "exec" message) with fresh output pipes."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            _send(self.sock, request, [self.devnull, out_w, err_w])
            reply = self.reader.read(self.start_timeout)
        except (OSError, TimeoutError) as exc:
            os.close(out_r)
            os.close(err_r)
            raise ZygoteError(f"zygote did not start the task: {exc}") from None
        finally:
            # The child has its own copies now; ours would keep the pipes from ever closing.
            for fd in (out_w, err_w):
                os.close(fd)
        if reply is None or "pid" not in reply:
            os.close(out_r)
            os.close(err_r)
            if reply is not None and "error" in reply:
                raise SpawnError(str(reply["error"]))
            raise ZygoteError("zygote exited before starting the task")
        return ZygoteChild(self, int(reply["pid"]), out_r, err_r, pool)


def _shutdown(sock: socket.socket, proc: subprocess.Popen, devnull: int) -> None:
    sock.close()  # EOF: the zygote's loop ends and it exits
    os.close(devnull)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ZygoteChild:
    """A forked child, shaped like the parts of `subprocess.Popen` that run_process uses."""

    def __init__(
        self, zygote: Zygote, pid: int, out_r: int, err_r: int, pool: ZygotePool | None
    ) -> None:
        self.zygote = zygote
        self.pid = pid
        self.stdout = os.fdopen(out_r, "rb", buffering=0)
        self.stderr = os.fdopen(err_r, "rb", buffering=0)
        self.returncode: int | None = None
        # Why the attempt failed when the exit code cannot say (read by run_process).
        self.error: str | None = None
        self.pool = pool
        self._released = False

    def _take_exit(self, timeout: float | None) -> None:
        msg = self.zygote.reader.read(timeout)
        if msg is None or not isinstance(msg.get("exit"), int):
            # The zygote died under the task (killed, its socket broken, or the task killed its
            # parent): the exit status is lost. Report a failure rather than pretend; the pool
            # replaces this zygote (release sees it is not healthy).
            self.returncode = -9
            self.error = "the zygote running the task died; its exit status is lost"
            self.zygote.close()
        else:
            self.returncode = msg["exit"]

    def poll(self) -> int | None:
        if self.returncode is None and self.zygote.reader.ready():
            self._take_exit(None)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self._take_exit(timeout)
            except TimeoutError:
                raise subprocess.TimeoutExpired("python task", timeout or 0) from None
        assert self.returncode is not None
        return self.returncode

    def release(self) -> None:
        """The caller is done signalling the group: let the zygote reap, and reuse it."""
        if self._released:
            return
        self._released = True
        if self.returncode is None:
            self.wait()
        healthy = self.zygote.alive()
        if healthy:
            try:
                send_reap(self.zygote.sock)
            except OSError:
                healthy = False
        if self.pool is not None:
            self.pool.put(self.zygote, healthy)
        elif not healthy:
            self.zygote.close()


# --8<-- [start:pool]
class ZygotePool:
    """Idle zygotes, one per task this process runs at once; grows on demand."""

    def __init__(self, start_timeout: float = 30.0, preload: tuple[str, ...] = ()) -> None:
        self.start_timeout = start_timeout
        # Modules each zygote imports at its start: the registered handlers' (see HANDLER).
        self.preload = tuple(preload)
        self._idle: list[Zygote] = []
        self._lock = threading.Lock()

    def get(self) -> Zygote:
        with self._lock:
            while self._idle:
                zygote = self._idle.pop()
                if zygote.alive():
                    return zygote
                zygote.close()
        return Zygote(self.start_timeout, self.preload)

    def put(self, zygote: Zygote, healthy: bool = True) -> None:
        if not healthy:
            zygote.close()
            return
        with self._lock:
            self._idle.append(zygote)

    def warm(self, count: int = 1) -> None:
        """Start zygotes ahead of the first task (agent start-up), not during it."""
        started = [self.get() for _ in range(count)]
        for zygote in started:
            self.put(zygote)

    # `env`: variables set (a value) or removed (None) in the child's environment only; the
    # zygote's own stays as it started, so one task's variables never reach the next.
    def run(self, source: str, filename: str = "<string>", env: Env | None = None) -> ZygoteChild:
        """A child that runs Python `source` in the warm interpreter."""
        return self._start({"op": "run", "source": source, "filename": filename}, env)

    def exec(self, argv: list[str], env: Env | None = None) -> ZygoteChild:
        """A child that execs `argv` (it pays the exec, not an interpreter start)."""
        return self._start({"op": "exec", "argv": argv}, env)

    def call(self, handler: str, args: dict, env: Env | None = None) -> ZygoteChild:
        """A child that calls the registered `handler` (module:function) with `args`."""
        return self._start({"op": "call", "handler": handler, "args": args}, env)

    def _start(self, request: dict, env: Env | None = None) -> ZygoteChild:
        if env:
            request = {**request, "env": dict(env)}
        # One retry with a fresh zygote covers one that died while idle.
        for attempt in range(2):
            zygote = self.get()
            try:
                return zygote.start(request, self)
            except SpawnError:
                self.put(zygote)  # the task's fault, not the zygote's: it serves the next one
                raise
            except ZygoteError:
                zygote.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for zygote in idle:
            zygote.close()


# --8<-- [end:pool]
