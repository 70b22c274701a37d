"""Example HANDLER functions; the test profile registers them (config/test.toml).

A handler is a plain function: the task's `args` are its keyword arguments, its return value
(anything `json.dumps` accepts) is the task's result, and what it prints goes to the task's log.
An exception fails the task with the traceback's last line as the error. It runs in a warm
worker of the agent's pool (or, with `agent_handler_mode = "fork"`, in a process forked for the
call), so it may block, crash or be killed: the agent is not in that process. This module
imports only the standard library: every zygote imports it once.
"""

import os
import signal
import time

# How many calls the process running this module has served: the state a warm worker keeps.
_calls = 0


def add(a, b):
    """A handler's whole job: arguments in, a JSON result out."""
    return {"sum": a + b}


def noop():
    """Nothing: what a handler task costs the platform, measured by the `handler-noop` bench."""
    return None


def echo(message):
    """Prints to the log (stdout and stderr), returns the message: the two do not mix."""
    print(f"echo: {message}")
    return message


def fail(message):
    """Raises: the task ends FAILED with `ValueError: <message>` as its error."""
    raise ValueError(message)


def sleep(seconds, pidfile=None):
    """Sleeps: a timeout or a cancel must kill it, and the pool must serve the next task.

    With `pidfile`, writes the pid of the process it runs in there first, so a test can see
    that process killed.
    """
    if pidfile:
        with open(pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    print("sleeping", flush=True)
    time.sleep(seconds)
    return seconds


def task_env():
    """The TASKLAB_* variables the agent set for this call: its task and attempt and, for a
    composite's child, its place in its parent and its input. A shard reads its index the same
    way: `int(os.environ["TASKLAB_SHARD_INDEX"])`."""
    names = ("TASK_ID", "ATTEMPT", "PARENT_ID", "SHARD_INDEX", "SHARD_TOTAL", "INPUT", "NODE")
    return {n: os.environ[f"TASKLAB_{n}"] for n in names if f"TASKLAB_{n}" in os.environ}


def whoami():
    """The pid of the process the call runs in, and how many calls that process has served.

    A module global outlives a call in a warm worker: calls 1, 2, 3 in the same pid. With
    `agent_handler_mode = "fork"` every call is a fresh copy of the zygote: always 1, never the
    same pid. This is the state a warm worker shares between calls, on purpose here.
    """
    global _calls
    _calls += 1
    return {"pid": os.getpid(), "calls": _calls}


def die(how="exit"):
    """Ends its own process mid-call: `os._exit(3)` ("exit") or SIGKILL ("kill"). Only this
    task fails; the agent replaces the worker and serves the next call."""
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


def leave_behind(seconds=300, detach=False):
    """Starts `sleep` in the background and returns its pid without waiting for it (with
    `detach`, in a session of its own). The call's leftovers are killed when it ends."""
    # Imported here: every zygote imports this module, and only this example needs it.
    import subprocess  # noqa: PLC0415

    return subprocess.Popen(["sleep", str(seconds)], start_new_session=detach).pid


def chatter(lines):
    """Prints `lines` numbered lines: more than the log keeps is cut, as for any task."""
    for n in range(lines):
        print(f"line {n}")
    return lines


def fork_and_return():
    """Forks, and both processes return: only the caller's result counts, the child ends.

    A naive `os.fork()` in a handler; the child of a warm worker must not go on serving calls.
    """
    return {"child": os.fork() == 0}
