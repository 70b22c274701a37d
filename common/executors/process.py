"""Run one child process in its own process group, with capped capture and a hard deadline.

Why a process group: `sh -c 'sleep 100 & sleep 100'` leaves children behind. Killing only the
shell's PID would orphan them and they would run on, holding the output pipes open. The child is
started with `start_new_session=True`, so its PID is also its group id, and `os.killpg` reaches
every process it spawned that did not deliberately escape into a session of its own.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Protocol

LineListener = Callable[[str, str], None]  # (stream name, line)


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


class _Capture:
    """Keeps the first `cap` bytes of a stream, and hands complete lines to a listener."""

    def __init__(
        self, name: str, cap: int, listener: LineListener | None, lines: list[str], max_lines: int
    ) -> None:
        self.name = name
        self.cap = cap
        self.kept = bytearray()
        self.truncated = False
        self.partial = b""
        self.listener = listener
        self.lines = lines
        self.max_lines = max_lines

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        if len(chunk) > room:
            self.truncated = True
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        for raw in complete:
            self._line(raw)

    def close(self) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = b""

    def _line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace")
        if len(self.lines) < self.max_lines:
            self.lines.append(line if self.name == "stdout" else f"[stderr] {line}")
        if self.listener is not None:
            self.listener(self.name, line)

    def text(self) -> str:
        return self.kept.decode(errors="replace")


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
    """What run_process needs of a started child: `subprocess.Popen` is one."""

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
) -> ProcessOutcome:
    started = time.monotonic()
    deadline = started + timeout
    proc: Child = spawn() if spawn is not None else popen_child(argv, env=env, cwd=cwd)
    pgid = proc.pid
    lines: list[str] = []
    captures = {
        proc.stdout: _Capture("stdout", output_cap, on_line, lines, max_lines),
        proc.stderr: _Capture("stderr", output_cap, on_line, lines, max_lines),
    }
    sel = selectors.DefaultSelector()
    for stream in captures:
        os.set_blocking(stream.fileno(), False)
        sel.register(stream, selectors.EVENT_READ)
    timed_out = cancelled = False
    next_cancel_check = started + cancel_poll
    exited_at: float | None = None
    try:
        while sel.get_map():
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
            for key, _ in sel.select(timeout=max(wait, 0.001)):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    captures[key.fileobj].feed(chunk)
                else:
                    sel.unregister(key.fileobj)
        if timed_out or cancelled:
            # Polite first (lets a task clean up), then certain.
            kill_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=kill_grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (background children, a TERM-ignoring leader) dies now.
        kill_group(pgid, signal.SIGKILL)
        proc.wait()
    finally:
        sel.close()
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
        lines=lines,
    )


# --8<-- [end:run-process]
