"""Example HANDLER functions; the test profile registers them (config/test.toml).

A handler is a plain function: the task's `args` are its keyword arguments, its return value
(anything `json.dumps` accepts) is the task's result, and what it prints goes to the task's log.
An exception fails the task with the traceback's last line as the error. It runs in a process
forked for the task from a warm zygote, so it may block, crash or be killed: the agent is not
in that process. This module imports only the standard library: every zygote imports it once.
"""

import os
import time


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
