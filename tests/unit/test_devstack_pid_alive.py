"""`pid_alive`, which `tasklab dev down` and `dev restart` poll after each SIGTERM: a service
`dev up` started belongs to init once `dev up` exits, and a service that has exited stays a
zombie until init reaps it, which a container's init may do seconds later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from common.devstack.base import pid_alive
from common.testing import eventually

# A parent that is not the test: it starts one child that exits at once and one that sleeps,
# prints their PIDs, and reaps neither while it sleeps itself.
PARENT = """
import subprocess, sys, time
done = subprocess.Popen([sys.executable, "-c", "pass"])
sleeping = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
print(done.pid, sleeping.pid, flush=True)
time.sleep(30)
"""


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]


def test_a_process_that_exited_and_waits_for_another_parent_to_reap_it_is_not_alive():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        done, sleeping = (int(pid) for pid in parent.stdout.readline().split())
        # Given a process that has exited, unreaped by its parent (which is not us)
        eventually(lambda: state(done) == "Z", 10, 0.05, message="the child a zombie")
        # Then it is not alive, and one that runs under the same parent is
        assert not pid_alive(done)
        assert pid_alive(sleeping)
    finally:
        # The parent's group: the parent and the child that sleeps, both started here.
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)
        parent.stdout.close()
