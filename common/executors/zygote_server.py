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
  zygote -> agent  {"pid": N}                 the child exists (its session may not, yet)
  zygote -> agent  {"exit": code}             the child ended; code as Popen.returncode
  agent -> zygote  {"op": "reap"}             the agent is done signalling the child's group
The child is observed with waitid(WNOWAIT) and reaped only on "reap": until then its pid, and
so its process group id, cannot be reused by an unrelated process the agent might signal.
"""

# Everything a child needs is imported here, once: an import in the child would be paid by
# every task (importing `types` there cost ~0.7 ms of child CPU per task).
import atexit
import builtins
import gc
import json
import os
import signal
import socket
import struct
import sys
import traceback
import types

MAX_FDS = 3


def _send(sock, obj):
    body = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)


def _recv(sock):
    """One message and the fds that came with it; (None, []) when the agent has gone."""
    head, fds, _flags, _addr = socket.recv_fds(sock, 4, MAX_FDS)
    if not head:
        return None, fds
    while len(head) < 4:
        more = sock.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    (size,) = struct.unpack(">I", head)
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


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


def _child(sock, fds, code, error):
    status = 1
    try:
        os.setsid()
        stdin, stdout, stderr = fds
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        sock.close()
        # The task gets the signal dispositions a fresh interpreter has, not the zygote's.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        gc.enable()
        main = types.ModuleType("__main__")
        main.__builtins__ = builtins
        sys.modules["__main__"] = main
        sys.argv = ["-c"]
        try:
            if error is not None:
                raise error
            exec(code, main.__dict__)
            status = 0
        except SystemExit as exc:
            status = _exit_code(exc)
        except KeyboardInterrupt:
            traceback.print_exc()
            status = -signal.SIGINT
        except BaseException:  # noqa: BLE001 - reported like the interpreter: traceback, exit 1
            traceback.print_exc()
            status = 1
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


def serve(sock):
    while True:
        msg, fds = _recv(sock)
        if msg is None:
            return
        if msg.get("op") != "run" or len(fds) != MAX_FDS:
            for fd in fds:
                os.close(fd)
            continue
        # Compiled here, before the fork: compiling in the child would dirty hundreds of
        # copy-on-write pages there (measured: 1.9 ms of child CPU against 0.3 ms).
        code = error = None
        try:
            code = compile(msg["source"], msg.get("filename", "<string>"), "exec")
        except BaseException as exc:  # noqa: BLE001 - the child reports it, as python -c would
            error = exc
        pid = os.fork()
        if pid == 0:
            _child(sock, fds, code, error)
        for fd in fds:
            os.close(fd)
        _send(sock, {"pid": pid})
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        status = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        _send(sock, {"exit": status})
        msg, extra = _recv(sock)
        for fd in extra:
            os.close(fd)
        os.waitpid(pid, 0)
        if msg is None:
            return


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    # A Ctrl-C in the agent's terminal reaches this process group: the agent stops gently and
    # lets running tasks finish, so the zygote must not die under them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing here allocates much; no collection means no pages dirtied behind a child's back.
    gc.disable()
    gc.freeze()
    serve(sock)


if __name__ == "__main__":
    main()
