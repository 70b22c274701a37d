"""Run one child process in its own process group, with capped capture and a hard deadline.

Why a process group: `sh -c 'sleep 100 & sleep 100'` leaves children behind. Killing only the
shell's PID would orphan them and they would run on, holding the output pipes open. The child is
started with `start_new_session=True`, so its PID is also its group id, and `os.killpg` reaches
every process it spawned that did not deliberately escape into a session of its own.

Why more than a group: a task can leave it (`setsid sleep 300 &`, a daemon's double fork). On
a timeout or a cancel the leader's descendants are found in /proc and killed too, and a task
forked by a zygote (the default spawner) has a subreaper above it that kills whatever the task
left, even after a normal exit (see zygote_server.py, and the limits written there).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Protocol

from common.executors.zygote_server import descendants

LineListener = Callable[[str, str], None]  # (stream name, line)


class SpawnError(Exception):
    """The child could not be started for a reason of the task's own (the OS refused it)."""


@dataclass
class ProcessOutcome:
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    cancelled: bool = False
    truncated: bool = False
    duration: float = 0.0
    lines: list[str] = field(default_factory=list)
    # Why the attempt failed when no exit code can say it: the child never started, or the
    # process that ran it died and took the exit status with it.
    error: str | None = None


LINE_CUT_MARK = " [line truncated]"


class _Log:
    """The lines kept for the task's log, and how many a listener was given.

    The log keeps at most `max_lines` lines and `max_bytes` bytes. A listener is given the
    first `max_lines` lines and then one marker, and no more: a `yes` flood must not cost the
    agent a Python call per line (CPU, and the GIL its heartbeat thread needs) nor a store
    write per line.
    """

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.lines: list[str] = []
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.used = 0
        self.streamed = 0

    @property
    def full(self) -> bool:
        return len(self.lines) >= self.max_lines or self.used >= self.max_bytes

    @property
    def streaming(self) -> bool:
        return self.streamed <= self.max_lines

    def add(self, line: str, size: int) -> None:
        if not self.full:
            self.lines.append(line)
            self.used += size

    def stream(self, listener: LineListener, name: str, line: str) -> None:
        self.streamed += 1
        if self.streamed > self.max_lines:
            line = f"[log truncated after {self.max_lines} lines]"
        listener(name, line)


class _Capture:
    """Keeps the first `cap` bytes of a stream, and hands its lines to a listener.

    Memory stays bounded whatever the task prints: the stream is read in chunks, the text kept
    for the result stops at `cap`, and a line longer than `max_line` bytes is cut there and
    marked; the rest of it is discarded as it arrives, never accumulated (a task printing
    200 MB without a newline costs `max_line` bytes here, not 200 MB). The listener gets the
    same cut lines, up to the log's line limit (see _Log).
    """

    def __init__(
        self, name: str, cap: int, listener: LineListener | None, log: _Log, max_line: int
    ) -> None:
        self.name = name
        self.cap = cap
        self.kept = bytearray()
        self.truncated = False
        self.partial = bytearray()  # the current line so far, at most max_line bytes
        self.cut = False  # the current line went past max_line: the rest is being discarded
        self.listener = listener
        self.log = log
        self.max_line = max_line

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        if len(chunk) > room:
            self.truncated = True
        if self.log.full and (self.listener is None or not self.log.streaming):
            return  # nobody will see another line: a `yes` flood costs no splitting
        *complete, tail = chunk.split(b"\n")
        for i, raw in enumerate(complete):
            if i == 0 and (self.partial or self.cut):
                self._grow(raw)
                raw, cut = bytes(self.partial), self.cut
                self.partial.clear()
                self.cut = False
            else:
                cut = len(raw) > self.max_line
                raw = raw[: self.max_line] if cut else raw
            self._line(raw, cut)
        self._grow(tail)

    def _grow(self, piece: bytes) -> None:
        room = self.max_line - len(self.partial)
        if room > 0:
            self.partial += piece[:room]
        if len(piece) > room:
            self.cut = True

    def close(self) -> None:
        if self.partial or self.cut:
            self._line(bytes(self.partial), self.cut)
            self.partial.clear()
            self.cut = False

    def _line(self, raw: bytes, cut: bool) -> None:
        line = _bounded_text(raw, self.max_line)
        if cut or len(line) < len(raw):
            line += LINE_CUT_MARK
        self.log.add(line if self.name == "stdout" else f"[stderr] {line}", len(raw))
        if self.listener is not None and self.log.streaming:
            self.log.stream(self.listener, self.name, line)

    def text(self) -> str:
        text = _bounded_text(self.kept, self.cap)
        if len(text) < len(self.kept):
            self.truncated = True
        return text


def _bounded_text(raw: bytes | bytearray, limit: int) -> str:
    """`raw` as text of at most `limit` UTF-8 bytes.

    Each byte that is not UTF-8 becomes U+FFFD, three bytes long: binary output would triple
    in size on its way to a store. Text already within the limit is returned as decoded (the
    check costs nothing for a line shorter than a third of the limit).
    """
    text = raw.decode(errors="replace")
    if len(text) * 3 > limit and len(encoded := text.encode()) > limit:
        text = encoded[:limit].decode(errors="ignore")
    return text


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    if pgid <= 1:
        # 0 would be our own group, and kill(-1) everything we may signal: never a task's.
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        # No such group yet: a forked child (see zygote.py) is killed before its setsid ran.
        # It has started nothing of its own by then, so the process itself is the whole task.
        # Its pid cannot have been reused: nothing reaps it before the caller is done.
        try:
            os.kill(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    except PermissionError:
        pass


class Child(Protocol):
    """What run_process needs of a started child: `subprocess.Popen` is one.

    Optional: `release()`, called once run_process will signal the group no more (a zygote's
    child is reaped only then), and `keep()`, asked when the child ended on its own: True
    spares its group the final kill (a warm worker's call, see `_end`).
    """

    pid: int
    stdout: IO[bytes]
    stderr: IO[bytes]
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


# Starts the child in a new session with stdout/stderr piped; None = a fresh exec of argv.
Spawner = Callable[[], Child]


def popen_child(
    argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen:
    """A fresh exec of `argv` in a new session (its pid is its group id), output piped."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
        cwd=cwd,
        close_fds=True,
    )


# --8<-- [start:run-process]
def run_process(
    argv: list[str],
    *,
    timeout: float,
    output_cap: int = 64 * 1024,
    max_lines: int = 1000,
    on_line: LineListener | None = None,
    should_cancel: Callable[[], bool] | None = None,
    cancel_poll: float = 0.25,
    kill_grace: float = 1.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    spawn: Spawner | None = None,
    max_line_bytes: int = 8 * 1024,
    max_log_bytes: int = 256 * 1024,
) -> ProcessOutcome:
    started = time.monotonic()
    deadline = started + timeout
    try:
        proc: Child = spawn() if spawn is not None else popen_child(argv, env=env, cwd=cwd)
    except Exception as exc:  # noqa: BLE001 - whatever refused it, no child exists to clean up
        # A NUL byte or a lone surrogate in argv, an argument list too long, an exec that
        # failed: the attempt fails with the reason; the caller (an agent) carries on.
        return ProcessOutcome(
            exit_code=None,
            error=f"could not start the task: {exc}",
            duration=time.monotonic() - started,
        )
    pgid = proc.pid
    log = _Log(max_lines, max_log_bytes)
    captures = {
        proc.stdout: _Capture("stdout", output_cap, on_line, log, max_line_bytes),
        proc.stderr: _Capture("stderr", output_cap, on_line, log, max_line_bytes),
    }
    # poll(2), not a selectors.DefaultSelector: for two pipes an epoll instance cost four more
    # system calls per task (create, two registrations, close) and the selectors layers'
    # Python, ~30 us of the agent's CPU per task, for nothing epoll is better at.
    poller = select.poll()
    open_streams = {stream.fileno(): capture for stream, capture in captures.items()}
    timed_out = cancelled = False
    finished = False
    try:
        for fd in open_streams:
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        next_cancel_check = started + cancel_poll
        exited_at: float | None = None
        while open_streams:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if should_cancel is not None and now >= next_cancel_check:
                next_cancel_check = now + cancel_poll
                if should_cancel():
                    cancelled = True
                    break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            # The leader exited but a background child still holds the pipes open: give it a
            # moment to flush, then stop waiting for it (it is killed with the group below).
            if exited_at is not None and now - exited_at > 0.2:
                break
            wait = min(deadline - now, cancel_poll, 0.05 if exited_at is not None else cancel_poll)
            # POLLHUP (the writer closed) comes with POLLIN or alone: either way a read says
            # which, data or the end of the stream.
            for fd, _ in poller.poll(max(wait, 0.001) * 1000):
                chunk = os.read(fd, 65536)
                if chunk:
                    open_streams[fd].feed(chunk)
                else:
                    poller.unregister(fd)
                    del open_streams[fd]
        finished = not (timed_out or cancelled)
    finally:
        # Also on an exception (a listener that raised): no child outlives this call.
        _end(proc, pgid, polite=not finished, kill_grace=kill_grace)
        for stream, cap in captures.items():
            cap.close()
            stream.close()
        # A forked child is reaped by its zygote only now that the group was killed, so that
        # no signal above could reach a process that reused its id (Popen has no such step).
        release = getattr(proc, "release", None)
        if release is not None:
            release()
    out, err = captures[proc.stdout], captures[proc.stderr]
    return ProcessOutcome(
        exit_code=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        cancelled=cancelled,
        truncated=out.truncated or err.truncated,
        duration=time.monotonic() - started,
        lines=log.lines,
        error=getattr(proc, "error", None),
    )


def _end(proc: Child, pgid: int, *, polite: bool, kill_grace: float) -> None:
    """Kill what is left of the task: its process group, and on a kill every descendant.

    A descendant that called setsid is in no group of ours, so a timeout or a cancel also
    walks /proc for the leader's descendants (only then: never per task that just ended).
    A zygote's child has more: the zygote is its subreaper and kills whatever the task left,
    even below a parent that already exited, once released (zygote_server.py).

    A warm worker's call (warm_worker.py) that ended on its own is the one child whose group
    is not killed: the process serves the next call, and the call's own leftovers were killed
    by the worker before it answered. `keep()` says whether it answered; one that did not (it
    died, or closed its pipes and ran on) is killed here like any other child, and replaced.
    """
    keep = getattr(proc, "keep", None)
    if not polite and keep is not None and keep():
        return
    strays = descendants([pgid])[1:] if polite and proc.poll() is None else []
    if polite:
        # Polite first (lets a task clean up), then certain.
        kill_group(pgid, signal.SIGTERM)
        _signal_each(strays, signal.SIGTERM)
        try:
            proc.wait(timeout=kill_grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of the group (background children, a TERM-ignoring leader) dies now.
    kill_group(pgid, signal.SIGKILL)
    _signal_each(strays, signal.SIGKILL)
    proc.wait()


def _signal_each(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# --8<-- [end:run-process]
