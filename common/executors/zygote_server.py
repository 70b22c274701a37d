"""The zygote: a small, already started Python process that forks one child per script task.

Run by `common.executors.zygote` as `python -I <this file> <socket fd>`, never imported: it
uses the standard library only, so a forked child starts from an interpreter that holds no
agent state, just as `python -I -c SOURCE` would. Why: starting an interpreter costs ~30 ms
here, a fork of this warm one ~1 ms, and the child keeps everything the fresh interpreter
gave: its own process, its own session (so the agent can kill its whole process group), the
agent's pipes as stdout and stderr, and an exit code that means what Python's means.

Protocol (one task at a time per zygote, over a Unix stream socket): each message is a 4-byte
big-endian length and a JSON object; file descriptors travel with a message (SCM_RIGHTS).
  agent -> zygote  {"op": "run", "source": ..., "filename": ...} + fds [stdin, stdout, stderr]
             or  {"op": "exec", "argv": [...]} + the same fds (a SHELL task: fork, then exec)
             or  {"op": "call", "handler": "module:function", "args": {...}} + the same fds
                 (a HANDLER task: fork, call the function; its return value, as JSON, is all
                 the child writes to stdout, and whatever the function prints goes to stderr)
             each may carry "env": {NAME: value or null}: variables set (or, null, removed)
             in that child's environment only (the task's TASKLAB_* variables); the
             zygote's own environment never changes, so nothing reaches the next task
  zygote -> agent  {"pid": N}                 the child exists (its session may not, yet)
  zygote -> agent  {"exit": code}             the child ended; code as Popen.returncode
  agent -> zygote  {"op": "reap"}             the agent is done signalling the child's group
The child is observed with waitid(WNOWAIT) and reaped only on "reap": until then its pid, and
so its process group id, cannot be reused by an unrelated process the agent might signal.

  zygote -> agent  {"error": text}            instead of a pid: the child could not start
                                               (a NUL byte or lone surrogate in argv, E2BIG,
                                               exec failed, fork refused); the zygote lives on

A HANDLER worker is a child like the others, that lives for many calls (warm_worker.py):
  agent -> zygote  {"op": "serve"} + fds [stdin, stdout, stderr, calls socket]
             the child is a warm worker: in a session of its own, it calls handler after
             handler as the agent asks on the calls socket (`serve_calls`); the zygote treats
             it as any child: {"pid"}, then {"exit"} when it ends, the kill of its group if the
             agent goes, "reap" and the sweep
  agent -> worker  {"op": "call", "handler": ..., "args": {...}, "env": {...}}
                   + fds [stdout, stderr]      the task's pipes, for this call only
  worker -> agent  {"exit": code}             the call ended (0, 1 after a traceback, a
                                               SystemExit's code); the worker waits for the next

A task dies with its agent. While a child runs, the zygote also watches the socket: if the
agent's end closes (the agent exited, even by kill -9), the zygote kills the child's whole
process group before it goes. Without this, a task of a killed agent ran on as an orphan while
its re-queued attempt ran elsewhere: two attempts at once instead of one after the other.

A task cannot outlive its attempt by leaving its process group. The zygote is a child
subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux): a process the task leaves behind, even one
that called setsid and whose parent exited (the classic daemon double fork), is reparented to
the zygote rather than to init. The zygote runs one task at a time, so every process below it
other than the current child belongs to a task; `sweep` kills them all when the attempt ends:
at "reap" (after a timeout, a cancel, and also after a normal exit: a task's daemonized
leftovers are killed, so a finished attempt holds no processes, ports or files and a re-run
never meets its predecessor) and when the agent goes away. What still escapes: a process
started on the task's behalf by another service (systemd-run, at, a container daemon, ssh to
this host), one the zygote may not signal (a setuid program while the agent is not root), and
everything the task started if the zygote itself is killed -9 (its orphans go to init; the
agent still kills the task's process group).
"""

# Everything a child needs is imported here, once: an import in the child would be paid by
# every task (importing `types` there cost ~0.7 ms of child CPU per task).
import _socket
import atexit
import builtins
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
import types

# socket.socket.detach without the Python subclass's bookkeeping (see _enter_task_session).
_detach_socket = _socket.socket.detach

# The fds a message may carry: a task's stdin, stdout and stderr, and a worker's calls socket.
MAX_FDS = 4
FDS_PER_OP = {"run": 3, "exec": 3, "call": 3, "serve": 4}
# A handler's result as strict JSON (no NaN): built once here, not in every child.
RESULT_ENCODER = json.JSONEncoder(allow_nan=False)
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
# How often a zygote with a running task reaps the task's exited orphans (reparented to it as
# the subreaper): often enough that zombies cannot pile up, rare enough to cost nothing.
ORPHAN_REAP_INTERVAL = 1.0
# A sweep kills level by level (a killed parent's children are reparented to the zygote); a
# fork bomb could outpace it forever, so it gives up after this long and says so.
SWEEP_SECONDS = 5.0


def become_subreaper():
    """Make this process the reaper of its descendants' orphans; False where Linux says no."""
    try:
        import ctypes  # noqa: PLC0415 - once per zygote, only on the platform that has prctl

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def child_pids(pid):
    """The children of `pid` (of all its threads, zombies too) from /proc; [] without a list."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    pids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                pids.extend(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            pass  # the thread ended meanwhile, or no CONFIG_PROC_CHILDREN
    return pids


def descendants(pids, limit=100_000):
    """`pids` and every process below them, parents first (a bounded walk of /proc)."""
    seen = []
    todo = list(pids)
    while todo and len(seen) < limit:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(child_pids(pid))
    return seen


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def has_children():
    """Whether this process has a child, alive or not: one syscall, where reading /proc costs
    ~30 us, paid after every task when (as almost always) the task left nothing behind. An
    ended child it finds is reaped, as sweep would."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def sweep():
    """Kill and reap every descendant of this zygote (its task child is already reaped).

    Killing a process reparents its own children here (the zygote is their subreaper), so the
    loop goes on until no child is left. A direct child's pid cannot be reused before this
    process reaps it; a deeper one is signalled within microseconds of being listed.
    """
    me = os.getpid()
    deadline = time.monotonic() + SWEEP_SECONDS
    while True:
        if not has_children():
            return True
        kids = child_pids(me)
        if not kids:
            return True
        _signal_all(descendants(kids), signal.SIGKILL)
        reaped = False
        for pid in kids:
            try:
                reaped |= os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                reaped = True
        if time.monotonic() > deadline:
            # Inherited from the agent: the line lands in its log, next to the task it follows.
            print(
                f"zygote: {len(kids)} task processes outlived a {SWEEP_SECONDS}s sweep",
                file=sys.stderr,
            )
            return False
        if not reaped:
            time.sleep(0.002)  # SIGKILL is asynchronous: give the kernel a moment to finish


def _reap_orphans(keep):
    """Reap descendants that ended and were reparented here, while the task `keep` runs."""
    for pid in child_pids(os.getpid()):
        if pid != keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


REAP_BODY = b'{"op": "reap"}'


def _send(sock, obj):
    _send_body(sock, json.dumps(obj).encode())


def _send_body(sock, body):
    """A message already encoded: how the pid and the exit status go, right after a fork.

    Until the child exits, every page the zygote writes is a copy-on-write copy; json.dumps'
    Python frames touched ~50 pages where formatting the few bytes by hand touches a handful.
    """
    sock.sendall(len(body).to_bytes(4, "big") + body)


# The ancillary room for MAX_FDS descriptors (what socket.recv_fds asks for, computed once).
_FDS_ROOM = socket.CMSG_LEN(MAX_FDS * 4)


class _Reader:
    """Messages and the fds that came with them, one recvmsg per read where possible."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.fds = []

    def read(self):
        """The next message, or None once the agent has gone."""
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack_from(">I", self.buf)
                if len(self.buf) >= 4 + size:
                    body = bytes(self.buf[4 : 4 + size])
                    del self.buf[: 4 + size]
                    if body == REAP_BODY:
                        return {"op": "reap"}
                    return json.loads(body)
            # recvmsg itself, not socket.recv_fds: its array and its Python frame are work
            # (and pages written) for every message, where only a request carries fds.
            data, ancdata, _flags, _addr = self.sock.recvmsg(1 << 16, _FDS_ROOM)
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    self.fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
            if not data:
                return None
            self.buf += data

    def take_fds(self, n):
        fds, self.fds = self.fds[:n], self.fds[n:]
        return fds


def _ended_by(exc):
    """The status `python -c` ends with when `exc` escapes the program, its traceback printed
    as the interpreter prints it (call it in the `except` clause): SystemExit's code, -SIGINT
    for a KeyboardInterrupt (the caller dies of the signal), 1 for anything else."""
    if isinstance(exc, SystemExit):
        return _exit_code(exc)
    traceback.print_exc()
    return -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1


def _exit_code(exc):
    """What the interpreter does with an uncaught SystemExit (Python/pythonrun.c)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:  # noqa: BLE001 - nothing left to report to
        pass
    return 1


def _enter_task_session(sock, fds):
    """In a just-forked child: a session of its own, the agent's pipes as fds 0-2, no socket."""
    os.setsid()
    stdin, stdout, stderr = fds
    os.dup2(stdin, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    # The C socket's own detach, then a plain close: the child is done with the socket, and
    # socket.close's Python layers cost ~13 copy-on-write faults here. Detached, the object
    # no longer owns the fd, so nothing can close that number again later in the child.
    os.close(_detach_socket(sock))


def apply_env(env):
    """Set (or, for None, remove) the task's variables in this process: a forked child's.

    `env` is a dict of names and values, or what `env_changes` made of one before the fork:
    (name, value) as bytes, applied with the least work the child can do (putenv, and the
    mapping os.environ reads from), for the copy-on-write reason given there.
    """
    if isinstance(env, list):
        data = getattr(os.environ, "_data", None)
        if isinstance(data, dict):
            for key, value in env:
                if value is None:
                    os.unsetenv(key)
                    data.pop(key, None)
                else:
                    os.putenv(key, value)
                    data[key] = value
            return
        env = {os.fsdecode(key): None if v is None else os.fsdecode(v) for key, v in env}
    for name, value in (env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# The zygote's own environment, which never changes after its start (a task's variables are
# set in its child only): a plain dict to compare with, where os.environ.get of a name that is
# not set costs a KeyError raised and caught inside the mapping.
_OWN_ENV = None
_FS_ENCODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def env_changes(env):
    """What of `env` would change this process's environment, encoded; None if nothing would.

    Computed in the zygote before the fork, so that the child applies only what differs,
    already encoded as os.environ stores it: for a plain task its id and attempt, not the five
    other TASKLAB_* it removes and never had. Done in the child through os.environ, the seven
    cost ~60 copy-on-write faults there (each absent name a KeyError inside os.environ.pop);
    this way, two sets, ~25. (Work before the fork faults too, on the pages the last child
    shared, but a child that has exited shares nothing: those faults copy no page.)
    """
    global _OWN_ENV
    if not env:
        return None
    if _OWN_ENV is None:
        _OWN_ENV = dict(os.environ)
    own = _OWN_ENV
    encoding, errors = _FS_ENCODING
    changes = [
        (name.encode(encoding, errors), None if value is None else value.encode(encoding, errors))
        for name, value in env.items()
        if own.get(name) != value
    ]
    return changes or None


def spawn_env(env):
    """The environment of an exec'd child: the zygote's, changed by `env`, as a new dict."""
    if not env:
        return os.environ
    out = dict(os.environ)
    for name, value in env.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def _child(sock, fds, main, code, error, call=None, env=None):
    # Every object this touches is a copy-on-write page fault (~3 us each here), so the child
    # does only what must happen after the fork; the rest was prepared before it.
    status = 1
    try:
        _enter_task_session(sock, fds)
        apply_env(env)
        try:
            if error is not None:
                raise error
            if call is not None:
                call_handler(*call)  # a HANDLER task: (function, args)
            else:
                exec(code, main)
            status = 0
        except BaseException as exc:  # noqa: BLE001 - ended as `python -c` ends
            status = _ended_by(exc)
        # What the interpreter does on its way out: wait for non-daemon threads, run atexit.
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed pipe: the output has nowhere to go
                pass
        if status < 0:
            # Died of SIGINT like `python -c` does, so the agent sees the same returncode.
            signal.signal(-status, signal.SIG_DFL)
            os.kill(os.getpid(), -status)
        os._exit(status)


def _exec_child(sock, fds, argv, env):
    try:
        _enter_task_session(sock, fds)
        # What subprocess's restore_signals does: Python ignores SIGPIPE and SIGXFSZ, and an
        # ignored signal stays ignored across exec, so `yes | head` would never end.
        for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        os.execve(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - exec failed: say why, exit as a shell would
        try:
            os.write(2, f"cannot run {argv[0]!r}: {exc}\n".encode(errors="replace"))
        except BaseException:  # noqa: BLE001 - no stderr to tell: the exit code must do
            pass
    os._exit(127)


def _spawn(sock, fds, argv, env=None):
    """Start a SHELL task's process: posix_spawn where it can, else fork and exec.

    posix_spawn is a vfork underneath: the child borrows this process's memory until it execs,
    so nothing is copied. A fork of this interpreter copies its page tables and then takes a
    copy-on-write fault for every page the child writes before exec; for `sh -c true` that
    doubled the CPU a task costs. The child is the same either way: its own session, the
    agent's pipes as 0/1/2, nothing else inherited, SIGPIPE and SIGXFSZ back to default.
    """
    stdin, stdout, stderr = fds
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    # The received fds and the agent's socket must not outlive the exec: a background child
    # holding the socket would hide the agent's death from _await_child.
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in (*fds, sock.fileno()) if fd > 2]
    environ = spawn_env(env)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            environ,
            file_actions=actions,
            setsid=True,
            setsigdef=[s for s in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)) if s],
        )
    except (NotImplementedError, AttributeError):
        # No posix_spawn here: fork and exec (an exec failure then exits 127 with the reason
        # on the task's stderr). An OSError (E2BIG, ENOENT, ...) or a ValueError (a NUL byte)
        # from posix_spawn goes up to serve, which tells the agent why the task did not start.
        pid = os.fork()
        if pid == 0:
            _exec_child(sock, fds, argv, environ)
        return pid


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # The child has not called setsid yet, so its group does not exist: kill it alone.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _await_child(sock, pid):
    """Wait for the child to end; kill its group first if the agent goes away meanwhile.

    Returns (waitid info, whether the agent has gone).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): wait without watching
        pidfd = None
    gone = False
    if pidfd is not None:
        watched = [pidfd, sock]
        try:
            while True:
                readable = select.select(watched, [], [], ORPHAN_REAP_INTERVAL)[0]
                if pidfd in readable:
                    break
                if not readable:
                    _reap_orphans(pid)
                    continue
                # Readable socket while the child runs: only EOF is expected (the agent sends
                # nothing until the exit status). Data would be a protocol error: stop watching.
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    gone = True
                    _kill_group(pid)
                watched = [pidfd]
        finally:
            os.close(pidfd)
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT), gone


# Compiled scripts by (source, filename): the same short script run again and again (a job's
# many runs, a benchmark's `pass`) is compiled once per zygote. A code object is immutable to
# the program that runs it, and a child's run (3.11 specialises bytecode in place) writes to
# its own copy-on-write copy, never to the zygote's. Long sources are not kept: at most
# CODE_CACHE_SIZE x CODE_CACHE_CHARS characters.
CODE_CACHE_SIZE = 64
CODE_CACHE_CHARS = 4096
_code_cache = {}


def _compiled(source, filename):
    key = (source, filename)
    code = _code_cache.get(key)
    if code is None:
        code = compile(source, filename, "exec")
        if len(source) <= CODE_CACHE_CHARS:
            if len(_code_cache) >= CODE_CACHE_SIZE:
                _code_cache.clear()
            _code_cache[key] = code
    return code


def _new_main():
    """The script's globals: a __main__ as `python -c` gives one, nothing else in it."""
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    return main


# One __main__ for every child, built once: the zygote never runs a script, so its copy stays
# empty, and each child writes its globals into its own copy-on-write copy. (Building one per
# task, and freeing the last, was work and dirtied pages in the zygote after every fork.)
_MAIN = None


def _fork_script(sock, fds, msg):
    # Compiled here, before the fork: compiling in the child would dirty hundreds of
    # copy-on-write pages there (measured: 1.9 ms of child CPU against 0.3 ms).
    code = error = None
    try:
        code = _compiled(msg["source"], msg.get("filename", "<string>"))
    except BaseException as exc:  # noqa: BLE001 - the child reports it, as python -c would
        error = exc
    global _MAIN
    if _MAIN is None:
        _MAIN = _new_main()
        sys.modules["__main__"] = _MAIN
    env = env_changes(msg.get("env"))
    pid = os.fork()
    if pid == 0:
        _child(sock, fds, _MAIN.__dict__, code, error, env=env)
    return pid


def resolve_handler(name):
    """The function `module:function` names, imported (once per zygote: then from sys.modules)."""
    module_name, _, attr = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        import importlib  # noqa: PLC0415 - only a handler the zygote did not preload needs it

        module = importlib.import_module(module_name)
    function = getattr(module, attr)
    if not callable(function):
        raise TypeError(f"{name} is not callable")
    return function


def call_handler(function, args):
    """Call `function(**args)`, its prints going to stderr; then its result, as JSON, to stdout.

    The task's result is the return value, not whatever the function printed: fd 1 is pointed
    at stderr for the call (prints become log lines) and the JSON is written to the real one.
    """
    result_fd = os.dup(1)
    os.dup2(2, 1)
    value = function(**args)
    sys.stdout.flush()
    data = memoryview(RESULT_ENCODER.encode(value).encode())
    while data:
        data = data[os.write(result_fd, data) :]
    os.close(result_fd)


def _fork_call(sock, fds, msg):
    # Resolved before the fork, as a script is compiled: a preloaded handler costs a dict
    # lookup, and one imported here stays imported for this zygote's next tasks.
    function = error = None
    args = msg.get("args") or {}
    try:
        function = resolve_handler(msg["handler"])
    except BaseException as exc:  # noqa: BLE001 - the child reports it as a traceback
        error = exc
    env = env_changes(msg.get("env"))
    pid = os.fork()
    if pid == 0:
        _child(sock, fds, None, None, error, (function, args), env)
    return pid


# -- the warm worker of HANDLER tasks (warm_worker.py is the agent's side) --------------------
def _fork_worker(sock, fds):
    """Fork a warm worker: a child that calls registered handlers one after the other."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            calls = socket.socket(fileno=fds[3])
            _enter_task_session(sock, fds[:3])
            # What a call starts and leaves (a daemon's double fork included) is reparented
            # here, not to the zygote: the worker sweeps it after every call.
            become_subreaper()
            serve_calls(calls)
            status = 0
        except BaseException:  # noqa: BLE001 - the worker's end is all the agent needs to see
            status = 1
        finally:
            os._exit(status)
    return pid


def serve_calls(calls):
    """The worker's loop: a call per message, until the agent closes the socket.

    Between calls fds 1 and 2 are /dev/null: what a thread a handler left behind prints then
    goes nowhere, rather than into the next task's log.
    """
    idle = os.dup(1)
    me = os.getpid()
    reader = _Reader(calls)
    while True:
        msg = reader.read()
        if msg is None:
            return  # retired (the agent closed its end), or the agent is gone
        fds = reader.take_fds(2)
        if not isinstance(msg, dict) or msg.get("op") != "call" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return  # a broken protocol: the worker ends, the agent starts another
        status = serve_call(msg, *fds, worker=me)
        # Before the answer: what the call started dies now, as a forked call's leftovers do
        # at "reap". It also lets go of the task's pipes, so the agent sees their end at once.
        sweep()
        _send(calls, {"exit": status})
        os.dup2(idle, 1)
        os.dup2(idle, 2)
        os.close(fds[0])
        os.close(fds[1])


def serve_call(msg, out, err, worker=None):
    """One call, in this warm worker: prints to `err`, the result as JSON to `out`.

    What a forked call gets by construction is done by hand here: every call sets each of the
    task's variables or removes it (the agent sends all of them, a missing one as null), so no
    task's reach the next; a handler that swapped sys.stdout for its own object does not take
    the next task's output with it. Everything else a call changes stays (module globals,
    threads, open files, the working directory): the price of a warm worker, warm_worker.py.
    """
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    _flush_std()  # what a leftover thread printed since the last call: to /dev/null
    os.dup2(err, 1)
    os.dup2(err, 2)
    # Only what differs from the last call: each os.environ change is a putenv or unsetenv
    # (setting and restoring all seven cost ~50 us a call; the task id alone changes).
    for name, value in (msg.get("env") or {}).items():
        if os.environ.get(name) != value:
            apply_env({name: value})
    status = 1
    try:
        function = resolve_handler(msg["handler"])
        try:
            value = function(**(msg.get("args") or {}))
        finally:
            if worker is not None and os.getpid() != worker:
                # A child the handler forked, returning here instead of exiting: it must not
                # answer the agent too, nor serve calls of its own.
                _flush_std()
                os._exit(0)
        data = memoryview(RESULT_ENCODER.encode(value).encode())
        while data:
            data = data[os.write(out, data) :]
        status = 0
    except BaseException as exc:  # noqa: BLE001 - ended as `python -c` ends
        status = _ended_by(exc)
    finally:
        _flush_std()
    return status


def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: the output has nowhere to go
            pass


def _start(sock, fds, msg):
    """The child's pid, or the reason it could not start (the zygote itself carries on)."""
    try:
        if msg["op"] == "exec":
            return _spawn(sock, fds, msg["argv"], msg.get("env")), None
        if msg["op"] == "call":
            return _fork_call(sock, fds, msg), None
        if msg["op"] == "serve":
            return _fork_worker(sock, fds), None
        return _fork_script(sock, fds, msg), None
    except Exception as exc:  # noqa: BLE001 - any refusal ends this task only, not the zygote
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        for fd in fds:
            os.close(fd)


def serve(sock):
    reader = _Reader(sock)
    while True:
        msg = reader.read()
        if msg is None:
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        if op not in FDS_PER_OP:
            continue
        fds = reader.take_fds(FDS_PER_OP[op])
        if len(fds) != FDS_PER_OP[op]:
            for fd in fds:
                os.close(fd)
            continue
        pid, error = _start(sock, fds, msg)
        if pid is None:
            _send(sock, {"error": error})
            continue
        _send_body(sock, b'{"pid": %d}' % pid)
        info, gone = _await_child(sock, pid)
        if gone:
            os.waitpid(pid, 0)
            return
        status = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        try:
            _send_body(sock, b'{"exit": %d}' % status)
        except OSError:
            # The agent went as the child ended (a warm worker ends when the agent's socket
            # closes, and may be seen to end first): nobody is left to tell, main sweeps.
            os.waitpid(pid, 0)
            return
        # Reaped only once the agent says it will signal the group no more ("reap"), or has
        # gone: until then the zombie keeps its pid, and its group id, from being reused.
        msg = reader.read()
        os.waitpid(pid, 0)
        # The attempt is over: whatever it left running dies now (see the module docstring).
        sweep()
        if msg is None:
            return


def preload(modules):
    """Import the registered handlers' modules now, once, so no task pays for an import.

    A module that fails here is left out: the agent checked it at start-up, and a task that
    calls it imports it again in its own child and fails there with the traceback.
    """
    import importlib  # noqa: PLC0415 - only a zygote with handlers to preload needs it

    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - a bad module must not stop the zygote
            print(f"zygote: cannot preload {name}: {exc!r}", file=sys.stderr)


def run_one_call():
    """`python -I zygote_server.py --call HANDLER ARGS_JSON`: one handler call, no zygote.

    The fallback when no warm zygote can be had (and with warm forks off): the same call, the
    same output, in a fresh interpreter.
    """
    try:
        function = resolve_handler(sys.argv[2])
        call_handler(function, json.loads(sys.argv[3]))
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - reported as the interpreter would
        traceback.print_exc()
        sys.exit(1)


def check_handlers(names):
    """`python -I zygote_server.py --check NAME...`: import each; one line about the first bad.

    Run by the agent at start-up in an interpreter of its own, so the agent refuses a bad
    registration without importing (running) a handler's module in its own process.
    """
    for name in names:
        try:
            resolve_handler(name)
        except BaseException as exc:  # noqa: BLE001 - any failure is the registration's fault
            print(f"{name}: {type(exc).__name__}: {exc}".replace("\n", " "))
            sys.exit(1)


def main():
    if sys.argv[1] == "--call":
        run_one_call()
        return
    if sys.argv[1] == "--check":
        check_handlers(sys.argv[2:])
        return
    sock = socket.socket(fileno=int(sys.argv[1]))
    preload(sys.argv[2:])
    # What a child sees of `python -I -c SOURCE`: argv, and the signal dispositions of a fresh
    # interpreter (the zygote runs in a session of its own, so a Ctrl-C in the agent's
    # terminal never reaches it and it needs no handler of its own).
    sys.argv = ["-c"]
    # Built before the freeze below, with everything else the zygote keeps.
    global _MAIN
    _MAIN = _new_main()
    sys.modules["__main__"] = _MAIN
    # The zygote's own objects are never collected: no collection can dirty their pages
    # while a child shares them.
    gc.freeze()
    become_subreaper()
    try:
        serve(sock)
    finally:
        # The agent has gone (or the protocol broke): no task process outlives this zygote.
        sweep()


if __name__ == "__main__":
    main()
