"""Failover on Redis: give a lost agent's (or a lost leader's) work back, one entry at a time.

Who gives work back, and what stops each of them from giving back work that is live:

- The agent itself, at start-up (`mode="own"`): what its previous run left on its processing
  list and (stage 2, 3) its inbox. First it bumps `agent:{id}:incarnation` and marks itself
  alive (its heartbeat key), in one MULTI, before it registers anywhere or takes any work.
- The stage 1 reaper, any live agent (`mode="heartbeat"`), and the stage 3 manager for an
  agent silent on the heartbeat topic (also `"heartbeat"`): neither is a leader, so there is no
  epoch to fence with. Each entry's script checks that the agent's heartbeat key is still
  absent, in the same atomic step that moves the entry. A restarted agent sets that key
  (the start-up marker above) before it takes any work, so whatever such a reaper moves was
  taken by a run that was dead when the move happened: an unfenced reap is safe here.
- The stage 2 leader (`mode="leader"`), when ZooKeeper says an agent is gone: every entry's
  script compares the leader's epoch with `fence:scheduler` (a deposed leader changes
  nothing) and the agent's incarnation with the one the leader read *before* it asked
  ZooKeeper (an agent that restarted in between is left alone; see reap.lua for why that
  ordering closes the race).

Pattern: idempotent consumer, per entry (introduced in stage 1, the reaper). Python reads the
list (LRANGE, bounded) and hands each entry, byte for byte, to a script that first removes
exactly that entry: 0 removed means someone else got there first and the script does nothing.
So every key a script touches is declared in KEYS, two reapers racing on one list move each
entry once, and a crash between two entries leaves the rest for the next sweep.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_scripts import script_source
from common.domain.dispatch import entry_ref
from common.observability import get_logger

log = get_logger("tasklab.failover")

Mode = Literal["own", "heartbeat", "leader"]

DEFAULT_MAX_LOST_ATTEMPTS = 3
BATCH = 200  # entries read per LRANGE: an inbox or processing list is a handful
MAX_ROUNDS = 50  # LRANGEs per list per call: bounded even if the list keeps changing
# Refused calls: the whole reap stops there, nothing more is tried.
_REFUSED = {"stale_epoch", "reincarnated", "alive", "not_fresh"}


@dataclass
class GivenBack:
    """What one reap or sweep did."""

    requeued: int = 0
    dropped: int = 0  # stale copies removed, their tasks untouched
    failed: int = 0  # lost too often with their agent: FAILED, not re-queued
    refused: str = ""  # why the caller was refused ('' if it was not)

    def add(self, other: GivenBack) -> None:
        self.requeued += other.requeued
        self.dropped += other.dropped
        self.failed += other.failed
        self.refused = self.refused or other.refused


class RedisFailover:
    """The reap and recover scripts for one Redis client."""

    def __init__(self, client: Redis, max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS) -> None:
        self.client = client
        self.max_lost_attempts = max_lost_attempts
        self._reap = client.register_script(script_source("reap", "archive_outbox"))
        self._recover = client.register_script(script_source("recover"))

    # -- the agent's own start-up ------------------------------------------------------------
    def begin_incarnation(self, agent_id: str, alive_ttl: float = 5.0) -> int:
        """Bump the agent's incarnation and mark it alive; returns the new incarnation.

        Called by the agent before it gives back its previous run's work and before it
        registers or takes anything, which is what makes both fences above hold.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(keys.incarnation(agent_id))
        pipe.set(keys.heartbeat(agent_id), repr(time.time()), px=int(alive_ttl * 1000))
        incarnation, _ = pipe.execute()
        return int(incarnation)

    def incarnation(self, agent_id: str) -> int:
        return int(_s(self.client.get(keys.incarnation(agent_id)) or b"0"))

    # -- reap: a lost agent's lists ------------------------------------------------------------
    def reap(
        self,
        agent_id: str,
        work_lists: list[str],
        requeue_to: str,
        actor: str,
        mode: Mode,
        epoch: int = 0,
        incarnation: int | None = None,
        reaper: str | None = None,
    ) -> GivenBack:
        """Give back every entry of `work_lists` that `agent_id` held; the first list's
        entries run first again. `reaper`: the reaping agent (stage 1, mode "heartbeat"),
        whose own heartbeat key must be live when each entry is moved."""
        if mode == "own":
            self.begin_incarnation(agent_id)
        options = {
            "mode": mode,
            "agent": agent_id,
            "actor": actor,
            "epoch": epoch,
            "maxLost": self.max_lost_attempts,
        }
        if incarnation is not None:
            options["incarnation"] = str(incarnation)
        done = GivenBack()
        # Each list's entries land at the consuming end of `requeue_to`, so the list to run
        # first is given back last.
        for work_list in reversed(work_lists):
            fixed = _agent_list(agent_id, work_list, requeue_to)
            if reaper is not None:
                fixed["reaper"] = keys.heartbeat(reaper)
            done.add(self._each_entry(self._reap, fixed, options))
            if done.refused:
                break
        return done

    # -- give back: entries a live agent holds on its list but does not run --------------------
    def give_back_unheld(
        self, agent_id: str, work_list: str, held: Counter[str], requeue_to: str, reason: str
    ) -> GivenBack:
        """Give back the entries of `agent_id`'s `work_list` beyond those in `held` (the
        entries its workers run now, counted): what its own calls put there while it had
        stopped waiting for their answers. Only the agent may call it, with none of its calls
        to that list in flight (common/agent/agent.py, the reconcile). Such an attempt never
        started, so its loss is not counted against the task."""
        options = {
            "mode": "own",
            "agent": agent_id,
            "actor": agent_id,
            "epoch": 0,
            "maxLost": self.max_lost_attempts,
            "notRun": True,
            "reason": reason,
        }
        fixed = _agent_list(agent_id, work_list, requeue_to)
        # A bounded read: a processing list holds what the agent's capacity runs, and a handful
        # of strays. Past BATCH, the next reconcile sees the rest.
        entries = [_s(e) for e in self.client.lrange(work_list, 0, BATCH - 1)]
        unheld = Counter(entries) - held
        done = GivenBack()
        for entry in entries:
            if unheld[entry] > 0:
                unheld[entry] -= 1
                self._one(self._reap, fixed, options, entry, done)
        return done

    # -- recover: a lost leader's queue:scheduling ---------------------------------------------
    def recover(self, scheduling: str, requeue_to: str, epoch: int, actor: str) -> GivenBack:
        fixed = {
            "list": scheduling,
            "target": requeue_to,
            "stats": keys.TRANSITION_STATS,
            "fence": keys.SCHEDULER_FENCE,
        }
        if self._fence() > epoch:
            # Refused without reading the list (each entry's script checks it again).
            self.client.hincrby(keys.TRANSITION_STATS, "rejected_stale_epoch", 1)
            return GivenBack(refused="stale_epoch")
        return self._each_entry(self._recover, fixed, {"actor": actor, "epoch": epoch})

    # -- one entry at a time -------------------------------------------------------------------
    def _each_entry(self, script, fixed: dict[str, str], options: dict) -> GivenBack:
        done = GivenBack()
        for _ in range(MAX_ROUNDS):
            # The oldest end of the list (lists are LPUSHed), newest of those first: each entry
            # is pushed at the consuming end of the target, so the oldest, pushed last, runs
            # first again.
            entries = self.client.lrange(fixed["list"], -BATCH, -1)
            if not entries:
                break
            for entry in entries:
                self._one(script, fixed, options, entry, done)
                if done.refused:
                    return done
        return done

    def _one(self, script, fixed: dict[str, str], options: dict, entry, done: GivenBack) -> None:
        """One entry through `script`, counted into `done`."""
        task_id, attempt = entry_ref(entry)
        one = dict(options, now=repr(time.time()))
        if task_id is not None:
            one["taskId"] = task_id
        if attempt is not None:
            one["attempt"] = attempt
        reply = script(keys=_keys(fixed, task_id), args=[entry, json.dumps(one)])
        reason = _s(reply[1])
        if reason in _REFUSED:
            done.refused = reason
        elif reason == "requeued":
            done.requeued += 1
        elif reason == "lost_too_often":
            done.failed += 1
            log.error(
                "task %s lost with its agent %s times: FAILED, not re-run",
                task_id,
                self.max_lost_attempts,
            )
        elif reason != "gone":
            done.dropped += 1

    def _fence(self) -> int:
        return int(_s(self.client.get(keys.SCHEDULER_FENCE) or b"0"))


def _agent_list(agent_id: str, work_list: str, requeue_to: str) -> dict[str, str]:
    """The keys reap.lua reads for one of an agent's lists, other than the task's own."""
    return {
        "list": work_list,
        "target": requeue_to,
        "stats": keys.TRANSITION_STATS,
        "fence": keys.SCHEDULER_FENCE,
        "heartbeat": keys.heartbeat(agent_id),
        "incarnation": keys.incarnation(agent_id),
    }


def _keys(fixed: dict[str, str], task_id: str | None) -> list[str]:
    """KEYS in the order reap.lua and recover.lua name them (give_back_keys in prelude.lua,
    then reap.lua's archive:outbox).

    A raw entry (no taskId) touches no task: its task keys are placeholders never read.
    """
    tid = task_id if task_id is not None else "-"
    ordered = [
        fixed["list"],
        keys.task(tid),
        keys.history(tid),
        fixed["target"],
        fixed["stats"],
        fixed["fence"],
    ]
    if "heartbeat" in fixed:
        # reap.lua: also the archive's outbox, for a task it fails (lost too often).
        ordered += [fixed["heartbeat"], fixed["incarnation"], keys.ARCHIVE_OUTBOX]
        if "reaper" in fixed:
            ordered.append(fixed["reaper"])
    return ordered


def reap_dead_agents(client: Redis, reap, actor: str, reaper: str | None = None) -> int:
    """The stage 1 reaper: give back the work of every agent whose heartbeat key expired.

    `reap(agent_id, actor, reaper=...)` is the queue's heartbeat-fenced reap; `reaper` is the
    reaping agent, whose own key must be live at each move. Returns how many re-queued.
    """
    total = 0
    for member in client.smembers(keys.AGENTS_SEEN):
        agent_id = _s(member)
        if client.exists(keys.heartbeat(agent_id)):
            continue
        requeued, dropped = reap(agent_id, actor, reaper=reaper)
        total += requeued
        if requeued or dropped:
            log.warning(
                "agent %s stopped heartbeating: re-queued %d task(s), dropped %d",
                agent_id,
                requeued,
                dropped,
            )
        if not client.exists(keys.processing(agent_id)):
            client.srem(keys.AGENTS_SEEN, agent_id)
    return total
